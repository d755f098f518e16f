"""`synth shapes --difficulty hard`: clutter, occlusion and harsher lighting make the
threshold baseline fail where it was perfect, while the annotations stay exact."""

import json

import numpy as np
import pytest
from PIL import Image

from smartset.detection import _rle
from smartset.detection.evaluation import evaluate_detections
from smartset.detection.synth import detect_images, shift_brightness, synth_shapes
from smartset.detection.train import data_from_coco


def _baseline_f1(info: dict, condition: str | None) -> float:
    data = data_from_coco(info["coco"])
    keys = [k for k in data.keys if data.conditions.get(k) == condition] if condition \
        else list(data.keys)
    folder = info["folder"]
    pred = detect_images([f"{folder}/images/{k.split('/')[-1]}" for k in keys], keys=keys)
    gt = data.gt[data.gt["image"].isin(set(keys))]
    return evaluate_detections(gt, pred, score_threshold=0.3, with_map=False)["f1"]


def test_hard_set_annotations_match_its_masks(tmp_path):
    info = synth_shapes(tmp_path / "h", 10, seed=4, size=(96, 96), side=(6, 80),
                        difficulty="hard")
    coco = json.loads((tmp_path / "h" / "annotations.json").read_text())
    assert info["difficulty"] == "hard" and info["objects"] > 0
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    occluded = 0
    for image in coco["images"]:
        semantic = np.array(Image.open(tmp_path / "h" / "masks" / image["file_name"]))
        anns = by_image.get(image["id"], [])
        # every labelled pixel belongs to exactly one annotation, and the areas add up
        assert sum(a["area"] for a in anns) == (semantic > 0).sum()
        for a in anns:
            seg = a["segmentation"]
            mask = _rle.decode(seg) if isinstance(seg, dict) else _rle.decode(
                _rle.polygons_to_rle(seg, image["height"], image["width"]))
            assert (semantic[mask.astype(bool)] == a["category_id"]).all()
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
            occluded += isinstance(seg, dict) and a["category_id"] != 1  # only circles are RLE unoccluded
    assert occluded >= 1  # some squares/triangles lost a part to an occluding bar


def test_hard_set_defeats_the_threshold_baseline_that_solves_the_easy_one(tmp_path):
    easy = synth_shapes(tmp_path / "e", 12, seed=7, size=(96, 96), side=(6, 80))
    hard = synth_shapes(tmp_path / "h", 12, seed=7, size=(96, 96), side=(6, 80),
                        difficulty="hard")
    f_easy, f_hard = _baseline_f1(easy, None), _baseline_f1(hard, None)
    assert f_easy > 0.9 and f_hard < f_easy - 0.2


def test_hard_conditions_are_dark_and_noisy_or_washed_out_by_glare():
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), 60, np.uint8)
    image[20:40, 20:40] = 200
    low = shift_brightness(image, "low", seed=1, difficulty="hard").astype(float)
    easy_low = shift_brightness(image, "low", seed=1).astype(float)
    glare = shift_brightness(image, "artificial", seed=rng, difficulty="hard").astype(float)
    # night in both sets: x 0.3 and sensor noise of about 6 grey levels
    np.testing.assert_array_equal(low, easy_low)
    assert low[:10, :10].mean() == pytest.approx(18, abs=1.5)
    assert low[30:40, 30:40].mean() == pytest.approx(60, abs=1.5)
    assert 4.5 < low[:10, :10].std() < 7.5
    assert not np.array_equal(low, shift_brightness(image, "low", seed=2).astype(float))
    contrast = lambda x: x[20:40, 20:40].mean() - x[:10, :10].mean()  # noqa: E731
    assert glare.mean() > image.mean() + 40 and contrast(glare) < contrast(image.astype(float))


def test_the_easy_night_leaves_the_other_easy_images_as_they_were(tmp_path):
    def images(folder, conditions):
        synth_shapes(folder, 3, seed=7, size=(32, 32), side=(8, 20), conditions=conditions)
        return {f.name: np.asarray(Image.open(f)) for f in (folder / "images").glob("*.png")}

    with_night = images(tmp_path / "a", True)
    without = images(tmp_path / "b", ["high", "medium", "artificial"])
    assert sorted(without) == sorted(k for k in with_night if "_low" not in k)
    assert all(np.array_equal(with_night[k], v) for k, v in without.items())
    night, day = with_night["shape_0000_low.png"], with_night["shape_0000.png"]
    assert night.mean() < 0.4 * day.mean()     # dark ...
    residual = night.astype(float) - 0.3 * day.astype(float)
    assert 4.5 < residual.std() < 7.5          # ... and noisy (N(0, 6), before rounding)


def test_unknown_difficulty_is_refused(tmp_path):
    with pytest.raises(ValueError, match="difficulty"):
        synth_shapes(tmp_path / "x", 1, difficulty="brutal")
