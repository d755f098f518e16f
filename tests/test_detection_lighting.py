"""DaCoLT's two halves as the detector uses them: the uneven ``lamp`` light of the
learning-time policy (``knife-light``) and the test-time CLAHE grid that follows the image
size. Tiny tensors only: the study's numbers are benchmarks/detect.py's."""

import numpy as np
import pytest
import torch

from smartset.augment import augment, get_transform, resolve_policy
from smartset.augment._lighting import lamp_light
from smartset.augment.targets import BoundingBoxes
from smartset.learn.errors import LearnError
from smartset.learn.robustness import clahe_tiles, dacolt_tensor


def _grey(n=2, side=32, level=120):
    return torch.full((n, 3, side, side), level, dtype=torch.uint8)


def test_lamp_with_neutral_settings_leaves_the_image_as_it_is():
    x = _grey()
    same = lamp_light(x, cx=0.5, cy=0.5, radius=0.3, ambient=1.0, glare=0.0, warmth=0.0,
                      gain=1.0)
    assert torch.equal(same, x)


def test_lamp_light_is_uneven_warm_and_falls_off_from_its_centre():
    x = _grey(n=1)
    lit = lamp_light(x, cx=0.0, cy=0.0, radius=0.3, ambient=0.3, glare=0.2, warmth=1.0,
                     gain=1.0).to(torch.float32)
    near, far = lit[0, :, 1, 1], lit[0, :, -2, -2]
    assert (near > far).all()                      # bright by the lamp, dim away from it
    assert far[0] == pytest.approx(0.3 * 120, abs=2)   # the ambient level far away
    assert near[0] > near[1] > near[2]             # a warm cast: red > green > blue


def test_lamp_draws_its_light_per_sample_from_the_seed_and_keeps_the_boxes():
    x = _grey(n=4)
    lamp = get_transform("lamp")
    a, b = lamp(x, seed=3), lamp(x, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, lamp(x, seed=4))
    assert len({tuple(i.flatten()[:64].tolist()) for i in a}) == 4   # each sample its own
    boxes = BoundingBoxes([torch.tensor([[2.0, 3.0, 10.0, 12.0]])] * 4, "xywh", (32, 32),
                          [torch.tensor([0])] * 4)
    _, moved = augment((x, boxes), resolve_policy({"op": "lamp"}), seed=0).output
    assert all(torch.allclose(m, torch.tensor([[2.0, 3.0, 12.0, 15.0]]))
               for m in moved.to_xyxy())


def test_knife_light_shows_darkening_uneven_light_and_contrast():
    ops = [leaf.name for leaf in resolve_policy("knife-light").leaves()]
    assert {"gamma", "gaussian_noise", "lamp", "clahe"} <= set(ops)


def test_knife_light_darkens_with_a_few_grey_levels_of_sensor_noise():
    leaves = resolve_policy("knife-light").leaves()
    names = [leaf.name for leaf in leaves]
    noise = leaves[names.index("gaussian_noise")]
    assert names.index("gaussian_noise") == names.index("gamma") + 1   # noise on the dark frame
    assert noise.spec()["std"] == pytest.approx([0.0, 8 / 255])
    dark = torch.full((16, 3, 48, 48), 20, dtype=torch.uint8)
    noisy = resolve_policy(noise.spec() | {"p": 1.0})(dark, seed=0).to(torch.float32)
    sigmas = noisy.reshape(16, -1).std(1)
    assert (sigmas < 8.5).all() and sigmas.max() > 4 and sigmas.std() > 1   # per sample, 0-8
    assert noisy.mean() == pytest.approx(20, abs=0.5)


def test_the_clahe_grid_follows_the_image_size():
    assert clahe_tiles(28, 28) == 1 and clahe_tiles(128, 128) == 1
    assert clahe_tiles(256, 320) == 2 and clahe_tiles(480, 640) == 4
    assert clahe_tiles(4000, 4000) == 8
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 90, (2, 3, 256, 256),
                                                           dtype=np.uint8))
    assert torch.equal(dacolt_tensor(x, tiles="auto"), dacolt_tensor(x, tiles=2))
    assert not torch.equal(dacolt_tensor(x, tiles="auto"), dacolt_tensor(x, tiles=8))
    with pytest.raises(LearnError, match="tiles"):
        dacolt_tensor(x, tiles="many")


def test_a_detector_preprocesses_with_the_grid_it_learned_with(monkeypatch):
    import smartset.learn.robustness as robustness
    from smartset.detection.train import Detector

    seen = []
    monkeypatch.setattr(robustness, "dacolt_tensor",
                        lambda batch, tiles: seen.append(tiles) or batch)
    base = {"mean": [0.5] * 3, "std": [0.25] * 3}
    batch = torch.zeros((1, 3, 16, 16), dtype=torch.uint8)
    Detector(None, {**base, "preprocess": "dacolt", "dacolt_tiles": "auto"})._normalise(
        batch, "dacolt")                                   # trained with DaCoLT now
    Detector(None, {**base, "preprocess": None})._normalise(batch, "dacolt")   # DaCoT
    Detector(None, {**base, "preprocess": "dacolt"})._normalise(batch, "dacolt")  # older
    Detector(None, {**base, "preprocess": None})._normalise(batch, "none")      # plain
    assert seen == ["auto", "auto", 4]
