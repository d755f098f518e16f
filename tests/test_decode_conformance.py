"""Issue #18, class 2: one decoder for every image. Every stage that looks at pixels (the
audit's measurements, thumbnails, ``ws.dataset()``, learn's ``load_version`` and the
embedding decode) runs over the same odd images and must see the same ``uint8`` pixels in
the same orientation, as :func:`smartset.imageio.decode` defines them; the catalog's width
and height are the upright ones.

Before: a 16-bit gradient had mean 127.5 in the audit and 254.5 elsewhere, float TIFFs in
[0, 1] came out black, and the audit and catalog ignored EXIF orientation.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

import smartset
from smartset.imageio import decode, load_image, thumbnail

_ORIENTATION = 0x0112


def _with_orientation(image: Image.Image, value: int):
    exif = image.getexif()
    exif[_ORIENTATION] = value
    return exif.tobytes()


def _asymmetric_rgb(height: int, width: int) -> np.ndarray:
    """Colour bands that tell every rotation and flip apart."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                     ((x < width // 3) * 200 + 20)], axis=-1).astype(np.uint8)


def _make_images(folder) -> dict[str, dict]:
    """The odd images, each with what its decode must look like (upright size, mode, mean)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}

    gradient = (np.arange(64 * 256, dtype=np.uint32).reshape(64, 256) * 65535
                // (64 * 256 - 1)).astype(np.uint16)
    Image.fromarray(gradient).save(folder / "gradient16.png")
    cases["gradient16.png"] = {"size": (256, 64), "mean": 127.5}

    ramp = np.linspace(0.0, 1.0, 48 * 40, dtype=np.float32).reshape(40, 48)
    Image.fromarray(ramp, "F").save(folder / "float01.tif")
    cases["float01.tif"] = {"size": (48, 40), "mean": 127.5}

    wide = (np.arange(32 * 32, dtype=np.int64).reshape(32, 32) * 4_000_000 - 2_000_000_000)
    Image.fromarray(wide.astype(np.int32), "I").save(folder / "int32.tif")
    cases["int32.tif"] = {"size": (32, 32), "mean": 127.5}

    palette = Image.fromarray(_asymmetric_rgb(20, 30)).convert("P", palette=Image.Palette.ADAPTIVE,
                                                                colors=16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_alpha.png", transparency=0)
    cases["palette_alpha.png"] = {"size": (30, 20), "own_mode": "RGBA"}

    cmyk = Image.fromarray(_asymmetric_rgb(24, 36)).convert("CMYK")
    cmyk.save(folder / "cmyk.tif")
    cases["cmyk.tif"] = {"size": (36, 24), "own_mode": "RGB"}

    stored = Image.fromarray(_asymmetric_rgb(20, 40))  # stored 40 wide, 20 high
    stored.save(folder / "rotated6.png", exif=_with_orientation(stored, 6))
    cases["rotated6.png"] = {"size": (20, 40), "upright": np.rot90(np.asarray(stored), -1)}
    stored.save(folder / "rotated8.jpg", exif=_with_orientation(stored, 8), quality=95)
    cases["rotated8.jpg"] = {"size": (20, 40)}

    frames = [Image.fromarray(np.full((16, 16, 3), value, np.uint8)) for value in (30, 220)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    cases["animated.gif"] = {"size": (16, 16), "first_frame": True}

    Image.fromarray(np.array([[77]], np.uint8)).save(folder / "one.png")
    cases["one.png"] = {"size": (1, 1), "mean": 77.0}

    Image.fromarray(_asymmetric_rgb(1, 250)).save(folder / "long.png")
    cases["long.png"] = {"size": (250, 1)}

    gray_alpha = Image.fromarray(_asymmetric_rgb(12, 10)[..., :2], "LA")
    gray_alpha.save(folder / "gray_alpha.png")
    cases["gray_alpha.png"] = {"size": (10, 12), "own_mode": "RGBA"}
    return cases


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    cases = _make_images(root / "src" / "odd")
    ws = smartset.init(root / "ws")
    ws.ingest(root / "src", engine="serial", show_progress=False)
    frame = ws.samples()
    paths = dict(zip(frame["relpath"].str.split("/").str[-1], frame["path"]))
    assert sorted(paths) == sorted(cases), ws.issues()
    yield ws, cases, paths, frame
    ws.close()


def _rgb(path) -> np.ndarray:
    return load_image(path, mode="RGB")


def test_the_decoder_reads_each_odd_image_as_it_is_meant(odd):
    _, cases, paths, _ = odd
    for name, case in cases.items():
        image = decode(paths[name])
        assert image.size == case["size"], name
        assert image.mode == case.get("own_mode", image.mode), name
        assert image.mode in ("L", "RGB", "RGBA"), name
        pixels = np.asarray(image)
        assert pixels.dtype == np.uint8, name
        if "mean" in case:
            assert abs(pixels.mean() - case["mean"]) < 1.0, (name, pixels.mean())
        if "upright" in case:
            np.testing.assert_array_equal(_rgb(paths[name]), case["upright"])
        if case.get("first_frame"):
            assert pixels.mean() == 30
    gradient = np.asarray(decode(paths["gradient16.png"]))
    assert (gradient == 255).mean() < 0.01  # before: 99.6% of the pixels were 255
    assert np.asarray(decode(paths["float01.tif"])).max() == 255  # before: black


def test_the_catalog_sizes_are_upright(odd):
    _, cases, _, frame = odd
    sizes = {relpath.split("/")[-1]: (int(w), int(h))
             for relpath, w, h in zip(frame["relpath"], frame["width"], frame["height"])}
    assert sizes == {name: case["size"] for name, case in cases.items()}


def test_the_audit_sees_the_same_pixels(odd):
    from smartset.audit.properties import _measure

    _, cases, paths, _ = odd
    for name in cases:
        rgb = _rgb(paths[name])
        measured = _measure(paths[name])
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        assert abs(measured["brightness"] - gray.mean() / 255.0) < 1e-6, name
        if name.endswith(".jpg"):
            continue  # the audit decodes JPEGs in draft mode (its own, documented speed-up)
        import hashlib

        expected = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()[:32]
        assert measured["pixel_hash"] == expected, name


def test_thumbnails_see_the_same_pixels(odd):
    _, cases, paths, _ = odd
    for name, case in cases.items():
        side = max(case["size"])  # no shrinking: the thumbnail is the decoded image itself
        np.testing.assert_array_equal(np.asarray(thumbnail(paths[name], side)),
                                      _rgb(paths[name]), err_msg=name)


def test_ws_dataset_sees_the_same_pixels(odd):
    ws, cases, paths, frame = odd
    dataset = ws.dataset(mode="RGB")
    by_path = {path: i for i, path in enumerate(dataset.paths)}
    for name in cases:
        image, _ = dataset[by_path[paths[name]]]
        np.testing.assert_array_equal(image.numpy().transpose(1, 2, 0), _rgb(paths[name]),
                                      err_msg=name)


def test_learn_load_version_sees_the_same_pixels(odd):
    from smartset.learn.data import load_version

    ws, cases, paths, _ = odd
    side = 16
    loaded = load_version(ws, size=side, mode="RGB", labeled_only=False, cache=False,
                          progress=False)
    assert not loaded.skipped
    for row, path in enumerate(loaded.paths):
        expected = decode(path, mode="RGB").resize((side, side), Image.Resampling.BILINEAR,
                                                   reducing_gap=2.0)
        np.testing.assert_array_equal(loaded.images[row], np.asarray(expected), err_msg=path)


def test_the_embedding_decode_sees_the_same_pixels(odd):
    from smartset.embeddings import _resize, decode_for_backbone

    _, cases, paths, _ = odd
    for name in cases:
        np.testing.assert_array_equal(decode_for_backbone(paths[name], 32),
                                      _resize(_rgb(paths[name]), 32), err_msg=name)


def test_train_without_a_size_does_not_squash_rotated_photos(tmp_path):
    """An upright photo and a rotated one of the same upright size need no --size."""
    from smartset.learn.data import load_version

    folder = tmp_path / "src"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    stored = Image.fromarray(_asymmetric_rgb(20, 40))
    stored.save(folder / "a" / "rotated.png", exif=_with_orientation(stored, 6))
    Image.fromarray(np.rot90(np.asarray(stored), -1).copy()).save(folder / "b" / "upright.png")
    ws = smartset.init(tmp_path / "ws")
    try:
        ws.ingest(folder, engine="serial", show_progress=False)
        loaded = load_version(ws, mode="RGB", cache=False, progress=False)
        assert loaded.size == (40, 20)
        np.testing.assert_array_equal(loaded.images[0], loaded.images[1])
    finally:
        ws.close()
