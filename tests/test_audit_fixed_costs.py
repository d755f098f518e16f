"""The photo audit's fixed costs cut without changing what it finds: JPEGs decoded at the
smallest DCT scale that keeps the normalised size, properties equal (or close, where the
decode scale changed) to a full decode, the report's class and size plots drawn as inline
SVG without matplotlib."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
from PIL import Image

from smartset.audit.properties import (AUDIT_SIDE, _level_counts, _measure, _sharpness,
                                       draft_box, pixel_hash)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour texture with edges, like a photo at this size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.rectangle(image, (width // 5, height // 4), (width // 2, height // 2), (250, 250, 250), -1)
    cv2.circle(image, (2 * width // 3, 2 * height // 3), min(height, width) // 6, (10, 20, 30), -1)
    return image


@pytest.mark.parametrize("size, scale", [((1600, 1200), 4), ((339, 857), 2), ((447, 969), 2),
                                         ((3000, 2250), 8), ((200, 150), 1), ((300, 224), 1)])
def test_jpegs_decode_at_the_smallest_scale_that_keeps_the_normalised_side(tmp_path, size, scale):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_texture(size[1], size[0])).save(path, quality=90)
    with Image.open(path) as image, Image.open(path) as square:
        image.draft("RGB", draft_box(*image.size))
        assert image.size == (-(-size[0] // scale), -(-size[1] // scale))
        assert max(image.size) >= min(AUDIT_SIDE, max(size))
        # a square box (as before) kept the shorter side at 256: up to 4x the pixels
        square.draft("RGB", (AUDIT_SIDE, AUDIT_SIDE))
        assert square.size[0] * square.size[1] >= image.size[0] * image.size[1]


def test_properties_at_the_draft_scale_are_close_to_a_full_decode(tmp_path):
    """A large JPEG measured at its DCT draft, against the same pixels decoded in full and
    measured from a PNG: the checks' properties move little (blur, darkness, information)."""
    for seed, blur in ((0, 0.0), (1, 9.0), (2, 0.0)):
        image = _texture(768, 1024, seed)
        if blur:
            image = cv2.GaussianBlur(image, (0, 0), blur)
        if seed == 2:
            image = (image * 0.2).astype(np.uint8)  # dark
        jpeg, png = tmp_path / f"{seed}.jpg", tmp_path / f"{seed}.png"
        Image.fromarray(image).save(jpeg, quality=92)
        with Image.open(jpeg) as decoded:  # the JPEG's pixels, decoded in full
            Image.fromarray(np.asarray(decoded.convert("RGB"))).save(png, compress_level=1)
        drafted, full = _measure(str(jpeg)), _measure(str(png))
        for name, tolerance in (("brightness", 0.01), ("brightness_p01", 0.03),
                                ("brightness_p99", 0.03), ("contrast", 0.01),
                                ("sharpness", 0.3), ("entropy", 0.15),
                                ("colourfulness", 0.01)):
            assert abs(drafted[name] - full[name]) <= tolerance, (seed, name)
        assert (drafted["sharpness"] < 1.6) == (full["sharpness"] < 1.6) == (blur > 0)
        assert (drafted["brightness_p99"] < 0.3) == (seed == 2)


def test_level_counts_pixel_hash_and_sharpness_keep_their_definitions():
    rng = np.random.default_rng(3)
    for shape in ((97, 131), (28, 28), (300, 200)):  # OpenCV's counts and NumPy's
        gray = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(_level_counts(gray),
                                      np.bincount(gray.ravel(), minlength=256))
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()[:32]
    assert pixel_hash(rgb) == expected == pixel_hash(np.asfortranarray(rgb))
    changed = rgb.copy()
    changed[5, 5, 1] ^= 1
    assert pixel_hash(changed) != expected
    assert pixel_hash(rgb.reshape(30, 20, 3)) != expected  # the shape is hashed too
    # sharpness: the Laplacian in int16 gives the variance of the float32 one
    for image in (gray, cv2.GaussianBlur(gray, (0, 0), 2), np.full((40, 40), 7, np.uint8),
                  gray[:28, :28]):  # int16 (photos) and float32 (digits) Laplacians
        spread = float(image.std())
        if spread < 1.0:
            assert _sharpness(image) == 0.0
            continue
        laplacian = float(cv2.Laplacian(image, cv2.CV_32F).astype(np.float64).var())
        expected = np.log10(1.0 + laplacian * max(1.0, (50.0 / spread) ** 2))
        assert _sharpness(image) == pytest.approx(expected, rel=1e-9)


# -- the report's class and size charts: inline SVG, no matplotlib ---------------------------

def _samples(labels, splits, sizes):
    import pandas as pd

    return pd.DataFrame({"label": labels, "split": splits,
                         "width": [w for w, _ in sizes], "height": [h for _, h in sizes]})


def test_class_histogram_svg_stacks_splits_and_escapes_names():
    import xml.etree.ElementTree as ET

    from smartset.stats import class_histogram_svg

    odd = "ça/va <b> & 'x'"
    frame = _samples([odd] * 5 + ["b"] * 2 + [None], ["train"] * 4 + ["test", "train", "train",
                                                                        "train"],
                     [(10, 10)] * 8)
    svg = class_histogram_svg(frame)
    root = ET.fromstring(svg)  # well-formed XML: every name escaped
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert titles == [f"{odd} · test: 1", f"{odd} · train: 4", "b · train: 2"]  # largest first
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "7 labeled images in 2 classes" in texts and odd in texts
    assert class_histogram_svg(frame.assign(label=None)) is None
    # a bar's height is its count: the larger class's bar is 5/2 the other's
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find(
        "{http://www.w3.org/2000/svg}title") is not None]
    heights = [float(r.get("height")) for r in bars]
    assert heights[0] + heights[1] == pytest.approx(2.5 * heights[2], rel=0.02)


def test_size_scatter_svg_draws_each_spot_once():
    import xml.etree.ElementTree as ET

    from smartset.stats import size_scatter_svg

    ns = "{http://www.w3.org/2000/svg}"
    digits = _samples([str(i % 10) for i in range(5000)], ["train"] * 5000, [(28, 28)] * 5000)
    root = ET.fromstring(size_scatter_svg(digits))
    dots = [c for c in root.iter(ns + "circle") if c.find(ns + "title") is not None]
    assert len(dots) == 10  # one spot per class, not 5,000 circles
    assert dots[0].find(ns + "title").text == "0: 28x28 (500 images)"
    assert "28" in [t.text for t in root.iter(ns + "text")]  # the one size is labelled
    rng = np.random.default_rng(0)
    sizes = list(zip(rng.integers(30, 3000, 200).tolist(), rng.integers(30, 3000, 200).tolist()))
    root = ET.fromstring(size_scatter_svg(_samples([None] * 200, ["train"] * 200, sizes)))
    texts = [t.text for t in root.iter(ns + "text")]
    assert {"100", "1,000"} <= set(texts)  # decade ticks on log axes
    dots = [c for c in root.iter(ns + "circle") if c.find(ns + "title") is not None]
    assert 150 < len(dots) <= 200 and all(c.find(ns + "title").text.startswith("all: ")
                                          for c in dots)
    # wider images lie further right, taller ones higher up
    (w0, h0), (w1, h1) = sizes[0], sizes[1]
    first = next(c for c in dots if c.find(ns + "title").text.startswith(f"all: {w0}x{h0}"))
    second = next(c for c in dots if c.find(ns + "title").text.startswith(f"all: {w1}x{h1}"))
    assert (float(first.get("cx")) < float(second.get("cx"))) == (w0 < w1)
    assert (float(first.get("cy")) > float(second.get("cy"))) == (h0 < h1)
    assert size_scatter_svg(_samples(["a"], ["train"], [(None, None)])) is None


def test_the_audit_report_draws_its_charts_without_matplotlib(tmp_path):
    """The report holds the class and size charts as inline SVG and the montages inline,
    writes nothing beside report.html and issues.json, and never imports matplotlib."""
    import subprocess
    import sys

    source = tmp_path / "source"
    for k, cls in enumerate(("cat", "dog")):
        (source / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_texture(60 + 8 * i, 80, seed=10 * k + i)).save(
                source / cls / f"{i}.jpg", quality=90)
    code = (
        "import sys, smartset\n"
        "from smartset.audit import audit\n"
        f"ws = smartset.init({str(tmp_path / 'ws')!r})\n"
        f"ws.ingest({str(source)!r}, engine='serial', show_progress=False)\n"
        "result = audit(ws, engine='serial', features='pixels', show_progress=False)\n"
        "print(result.report_path)\n"
        "print('matplotlib' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report_path, imported = done.stdout.split()[-2:]
    assert imported == "False"
    from pathlib import Path

    report = Path(report_path)
    assert sorted(p.name for p in report.parent.iterdir()) == ["issues.json", "report.html"]
    page = report.read_text()
    classes = page[page.index("<h2>Classes</h2>"):]
    assert "12 labeled images in 2 classes" in classes and "image sizes" in classes
    assert classes.count("<svg") == 2
    assert classes.count("src='data:image/png;base64,") == 2  # a montage per class


def test_the_grayscale_shortcut_decides_as_the_exact_channel_spread():
    from smartset.audit.properties import _channel_spread

    rng = np.random.default_rng(7)
    cases = []
    for seed in range(60):
        base = np.repeat(_texture(90 + seed, 120, seed)[:, :, :1], 3, axis=2).astype(np.int16)
        kind = seed % 4
        if kind == 1:    # faint chroma noise on red: 0 to 4 levels from the others
            base[:, :, 0] += rng.integers(0, seed % 5 + 1, base.shape[:2])
        elif kind == 2:  # one tinted pixel: averaged away in the small copy
            base[seed % 90, seed % 120] = (120 + seed % 9, 120, 120)
        elif kind == 3:  # a colour photo
            base = _texture(90 + seed, 120, seed).astype(np.int16)
        cases.append(np.clip(base, 0, 255).astype(np.uint8))
    for rgb in cases:
        small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        red, green, blue = small[:, :, 0], small[:, :, 1], small[:, :, 2]
        exact = int((rgb.max(axis=2).astype(int) - rgb.min(axis=2)).max())
        found = _channel_spread(rgb, red - green, 0.5 * (red + green) - blue)
        assert (found <= 2) == (exact <= 2)
        if found <= 2 or exact <= 4:
            assert found == exact  # near the limit it is measured, not guessed
