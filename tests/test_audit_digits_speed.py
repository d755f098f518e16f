"""The digits audit's faster paths give the results of the plain ones: a plain gray image
measured on its one channel has every property it has measured as RGB; the alignment of
a chunk of thumbnails at once matches OpenCV's per-image moments; the kNN search runs
under a chosen thread count and gives it back."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from smartset.audit.near_copies import aligned_thumbs
from smartset.audit.properties import _measure


def _same(a: dict, b: dict) -> list[str]:
    """Names of the properties that differ (arrays compared exactly)."""
    return [key for key in a if not (np.array_equal(a[key], b[key])
                                     if isinstance(a[key], np.ndarray) else a[key] == b[key])]


def _gray_images(folder, seed: int = 0):
    rng = np.random.default_rng(seed)
    paths = []
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (600, 400)).astype(np.float32), (9, 9), 3)
    big = np.clip(smooth * 3 - 200, 0, 255).astype(np.uint8)
    for name, image, options in (
            ("shrink-area.png", big, {}),                      # longer side 600: area
            ("shrink-linear.png", big[:300, :200], {}),        # 300: bilinear
            ("digit-like.png", (rng.random((28, 28)) > 0.8).astype(np.uint8) * 255, {}),
            ("flat.png", np.full((30, 20), 9, np.uint8), {}),
            ("gray.jpg", big, {"quality": 70})):               # decoded by its DCT draft
        paths.append(folder / name)
        Image.fromarray(image, "L").save(paths[-1], **options)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the upright pixels are measured either way
    paths.append(folder / "rotated.jpg")
    Image.fromarray(big[:280, :120], "L").save(paths[-1], exif=exif.tobytes())
    return paths


def test_plain_gray_images_measure_the_same_on_one_channel(tmp_path):
    for path in _gray_images(tmp_path):
        one, three = _measure(str(path)), _measure(str(path), gray_shortcut=False)
        assert _same(one, three) == [], path.name
        assert one["grayscale"] == 1 and one["colourfulness"] == 0.0


def test_real_digits_measure_the_same_on_one_channel(shared_data, tmp_path):
    images = np.load(shared_data / "mnist10k.npz")["images"][:120]
    for i, image in enumerate(images):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        assert _same(_measure(str(path)), _measure(str(path), gray_shortcut=False)) == [], i


def test_a_gray_image_with_transparency_keeps_the_rgb_path(tmp_path):
    path = tmp_path / "transparent.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L").save(
        path, transparency=3)
    measured = _measure(str(path))
    assert measured["alpha"] == 1
    assert _same(measured, _measure(str(path), gray_shortcut=False)) == []


def _aligned_one_by_one(thumb: np.ndarray, side: int = 32) -> np.ndarray:
    """The alignment image by image with OpenCV's moments, as the audit did before."""
    image = thumb.astype(np.float32)
    background = float(np.sort(thumb.reshape(-1))[(thumb.size + 1) // 2 - 1])
    moments = cv2.moments(np.abs(image - background))
    height, width = image.shape
    if moments["m00"] > 1e-6:
        cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
        axis = 0.5 * np.degrees(np.arctan2(2 * moments["mu11"],
                                           moments["mu20"] - moments["mu02"]))
        tilt = axis - 90.0 if axis > 0 else axis + 90.0
        matrix = cv2.getRotationMatrix2D((cx, cy), tilt, 1.0)
        matrix[0, 2] += width / 2.0 - cx
        matrix[1, 2] += height / 2.0 - cy
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=background)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def test_chunk_alignment_matches_opencv_moments_image_by_image():
    rng = np.random.default_rng(3)
    thumbs = np.zeros((40, 48, 48), np.uint8)
    for i, thumb in enumerate(thumbs):  # strokes at random places and angles
        centre = tuple(int(v) for v in rng.integers(14, 34, 2))
        axes = (int(rng.integers(4, 14)), int(rng.integers(2, 6)))
        cv2.ellipse(thumb, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    thumbs[-1] = 7  # flat: left as it is
    expected = np.stack([_aligned_one_by_one(t) for t in thumbs])
    got = aligned_thumbs(thumbs)
    assert got.shape == (40, 32, 32) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 0.01  # float64 moments summed in another order
    np.testing.assert_allclose(got[-1], 7.0, atol=1e-5)  # resized, not moved
    with pytest.raises(ValueError, match="n x h x w"):
        aligned_thumbs(np.zeros((2, 48, 48, 3), np.uint8))


def test_the_search_runs_with_the_chosen_threads_and_gives_them_back(monkeypatch):
    faiss = pytest.importorskip("faiss")
    from smartset.neighbours import search_neighbours, search_threads

    monkeypatch.setenv("SMARTSET_THREADS", "1")
    before = faiss.omp_get_max_threads()
    seen = []
    with search_threads() as threads:
        seen.append((threads, faiss.omp_get_max_threads()))
    assert seen == [(1, 1)] and faiss.omp_get_max_threads() == before
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = search_neighbours(vectors, 3, method="flat")
    exact = np.argsort(-(vectors @ vectors.T) + 2 * np.eye(50), axis=1)[:, :3]
    assert (found.table.column(0) == exact[:, 0]).all()
    assert faiss.omp_get_max_threads() == before


def test_thumbnails_read_by_span_or_one_by_one_are_the_same(tmp_path):
    from smartset.audit.measure_phase import _RecordFile
    from smartset.audit.properties import RECORD, THUMB_SIDE

    rng = np.random.default_rng(5)
    records = np.zeros(300, dtype=RECORD)
    records["thumb"] = rng.integers(0, 256, (300, THUMB_SIDE, THUMB_SIDE))
    path = tmp_path / "records.bin"
    path.write_bytes(records.tobytes())
    reader = _RecordFile(path)
    for rows in (np.arange(40, 90), np.array([7, 5, 6, 5, 9]),   # dense: one read of the span
                 np.array([0, 299, 150]), np.array([], np.int64)):  # sparse: a read each
        np.testing.assert_array_equal(reader.thumbs(rows), records["thumb"][rows])


def test_pair_scores_pad_each_image_once_and_equal_opencv_pair_by_pair():
    from smartset.audit.near_copies import _aligned_scores, pair_scorer

    rng = np.random.default_rng(7)
    images = cv2.GaussianBlur(rng.integers(0, 256, (30, 32, 32)).astype(np.float32), (5, 5), 1.5)
    images = images.clip(0, 255).astype(np.uint8)
    first, second = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
    expected = np.array([cv2.matchTemplate(
        cv2.copyMakeBorder(images[b].astype(np.float32), 2, 2, 2, 2, cv2.BORDER_REPLICATE),
        images[a].astype(np.float32), cv2.TM_CCOEFF_NORMED).max() for a, b in zip(first, second)])
    np.testing.assert_array_equal(_aligned_scores(images[first], images[second]), expected)
    score = pair_scorer("aligned", lambda rows: None, lambda rows: images[rows])
    np.testing.assert_array_equal(score(first, second), expected)


def _stats_one_by_one(histogram: np.ndarray) -> dict:
    """The histogram statistics image by image, as the audit computed them before."""
    share = histogram / histogram.sum()
    cumulative = np.cumsum(share)
    level = np.arange(256) / 255.0
    mean = float(share @ level)
    low = float(np.searchsorted(cumulative, 0.01))
    span = max(float(np.searchsorted(cumulative, 0.99)) - low, 64.0)
    bins = np.clip(((np.arange(256) - low) * 32.0 / span).astype(np.int64), 0, 31)
    coarse = np.bincount(bins, weights=share, minlength=32)
    p = coarse[coarse > 0]
    return {"brightness": mean, "brightness_p01": low / 255.0,
            "brightness_p05": float(np.searchsorted(cumulative, 0.05)) / 255.0,
            "brightness_p99": float(np.searchsorted(cumulative, 0.99)) / 255.0,
            "contrast": float(np.sqrt(max(0.0, float(share @ (level - mean) ** 2)))),
            "dark_fraction": float(share[:26].sum()),
            "saturated_fraction": float(share[250:].sum()),
            "entropy": float(-(p * np.log2(p)).sum())}


def test_histogram_statistics_of_a_batch_equal_image_by_image(tmp_path):
    from smartset.audit.properties import compute_properties, histogram_stats

    rng = np.random.default_rng(11)
    histograms = np.concatenate([
        rng.integers(0, 50, (20, 256)),                                   # everywhere
        np.bincount(rng.integers(0, 3, 784), minlength=256)[None],        # three levels
        np.eye(256, dtype=np.int64)[[0, 255, 128]] * 784]).astype(np.float64)  # one level
    stats = histogram_stats(histograms)
    for i, histogram in enumerate(histograms):
        for name, value in _stats_one_by_one(histogram).items():
            assert stats[name][i] == pytest.approx(value, rel=1e-12, abs=1e-15), (i, name)
    paths = _gray_images(tmp_path)
    batch = compute_properties({"path": [str(p) for p in paths] + [str(tmp_path / "gone.png")]})
    assert batch["error"][-1] is not None and batch["brightness"][-1] is None
    for i, path in enumerate(paths):  # one image at a time gives the batch's numbers
        alone = _measure(str(path))
        assert {k: batch[k][i] for k in stats} == {k: alone[k] for k in stats}
