"""Saliency (issue #22): occlusion maps and Grad-CAM find the evidence a model uses.

A synthetic set where the class is decided by a bright patch in a known corner: the peak
of both maps must lie in that corner."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from smartset.learn import ImageClassifier  # noqa: E402
from smartset.learn.errors import LearnError  # noqa: E402
from smartset.learn.saliency import (grad_cam, last_conv_block, occlusion_map,  # noqa: E402
                                     saliency_montage, write_sample_maps)

SIDE = 24


def corner_set(n: int, seed: int):
    """Noise images around grey; class "patch" has a white 6x6 square near the top-left
    corner."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 200, size=(n, SIDE, SIDE), dtype=np.uint8)  # grey 128: background
    labels = np.array(["plain", "patch"] * (n // 2), dtype=object)
    for i in np.flatnonzero(labels == "patch"):
        y, x = rng.integers(1, 4, size=2)
        images[i, y:y + 6, x:x + 6] = 255
    return images, labels


@pytest.fixture(scope="module")
def fitted():
    images, labels = corner_set(160, seed=0)
    model = ImageClassifier("small_cnn", epochs=4, batch_size=32, lr=3e-3, seed=0,
                            progress=False).fit(images, labels)
    test_images, test_labels = corner_set(40, seed=1)
    assert model.score(test_images, test_labels) >= 0.95  # it learned the rule
    return model, test_images[test_labels == "patch"][:8]


def _peak(heat: np.ndarray) -> tuple[int, int]:
    return np.unravel_index(int(np.argmax(heat)), heat.shape)


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_peak_lies_in_the_corner_that_decides_the_class(fitted, method):
    model, images = fitted
    targets = ["patch"] * len(images)
    maps = (occlusion_map(model, images, targets, patch=8, stride=2) if method == "occlusion"
            else grad_cam(model, images, targets))
    assert maps.shape == images.shape and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    for heat in maps:
        y, x = _peak(heat)
        assert y < SIDE // 2 and x < SIDE // 2, (method, y, x)
        # the top-left quadrant holds more of the map than the other three together
        corner = heat[:SIDE // 2, :SIDE // 2].sum()
        assert corner > heat.sum() - corner, (method, corner, heat.sum())


def test_grad_cam_layer_and_class_indices(fitted):
    model, images = fitted
    network = model.network_
    inputs = model._normalise(model._inputs(images[:2]), model._device_of())
    assert last_conv_block(network, inputs) == 1  # small_cnn: the second conv block
    by_index = grad_cam(model, images[:2], [model.classes_.index("patch")] * 2)
    by_name = grad_cam(model, images[:2], ["patch", "patch"])
    np.testing.assert_allclose(by_index, by_name, atol=1e-6)
    assert all(p.grad is None for p in network.parameters())  # no gradients left behind
    with pytest.raises(LearnError, match="not classes of the model"):
        grad_cam(model, images[:1], ["nope"])


def test_montage_and_sample_maps_are_written(fitted, tmp_path):
    model, images = fitted
    maps = {"occlusion": occlusion_map(model, images[:2], ["patch"] * 2),
            "grad-cam": grad_cam(model, images[:2], ["patch"] * 2)}
    path = saliency_montage(images[:2], maps, ["(patch) patch", "(patch) plain"],
                            tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = write_sample_maps(images[:2], maps["grad-cam"], ["s1", "s2"], tmp_path / "sal",
                              info=[{"true": "patch"}, {"true": "patch"}])
    assert (tmp_path / "sal" / "s1.png").is_file() and index.name == "index.json"
