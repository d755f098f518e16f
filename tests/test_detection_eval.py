"""Evaluation: IoU, matching, precision/recall/F1, COCO mAP (against pycocotools when it is
installed), RLE (against pycocotools), the knife table, counting F1, segmentation metrics."""

import json

import numpy as np
import pandas as pd
import pytest

from smartset import detection as det
from detection_helpers import imported


def _frame(rows, score=False):
    cols = ["image", "category", "x", "y", "w", "h"] + (["score"] if score else [])
    return pd.DataFrame(rows, columns=cols)


def test_box_iou_by_hand():
    iou = det.box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]])
    assert iou.tolist() == [[pytest.approx(50 / 150), 0.0, 1.0]]
    crowd = det.box_iou([[0, 0, 10, 10]], [[0, 0, 100, 100]], crowd=[True])
    assert crowd.tolist() == [[1.0]]  # a crowd region: the union is the detection


def test_precision_recall_f1_by_hand():
    gt = _frame([("a", "knife", 0, 0, 10, 10), ("a", "knife", 50, 50, 10, 10),
                 ("b", "knife", 0, 0, 20, 20)])
    pred = _frame([("a", "knife", 1, 1, 10, 10, 0.9),     # TP (IoU 0.68)
                   ("a", "knife", 0, 0, 10, 10, 0.8),     # FP: the object is taken
                   ("b", "knife", 30, 30, 5, 5, 0.7),     # FP
                   ("b", "knife", 0, 0, 20, 20, 0.2)],    # TP below the score threshold
                  score=True)
    result = det.evaluate_detections(gt, pred, score_threshold=0.5, with_map=False)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 2, 2)
    assert result["precision"] == pytest.approx(1 / 3) and result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(1 / 3)
    everything = det.evaluate_detections(gt, pred, with_map=False)
    assert (everything["tp"], everything["fp"], everything["fn"]) == (2, 2, 1)


def test_map_is_one_for_perfect_and_drops_for_shifted_boxes():
    gt = _frame([("a", "c", 10, 10, 20, 20), ("b", "c", 5, 5, 40, 30), ("b", "d", 0, 0, 8, 8)])
    perfect = gt.assign(score=[0.9, 0.8, 0.7])
    assert det.coco_map(gt, perfect)["map"] == pytest.approx(1.0)
    shifted = perfect.assign(x=perfect["x"] + 2)
    result = det.coco_map(gt, shifted)
    assert result["map50"] == pytest.approx(1.0) and 0 < result["map"] < 1


def _random_case(seed, images=25):
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows = [], []
    for image in range(1, images + 1):
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(4, 120, 2)
            cat = int(rng.integers(1, 4))
            gt_rows.append((image, cat, x, y, w, h, w * h, int(rng.random() < 0.05)))
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.1, 4) * np.array([w, h, w, h])
                pred_rows.append((image, cat if rng.random() < 0.9 else int(rng.integers(1, 4)),
                                  x + jitter[0], y + jitter[1], max(1, w + jitter[2]),
                                  max(1, h + jitter[3]), round(float(rng.random()), 2)))
        for _ in range(rng.integers(0, 3)):
            pred_rows.append((image, int(rng.integers(1, 4)), *rng.uniform(0, 200, 2),
                              *rng.uniform(4, 80, 2), round(float(rng.random()), 2)))
    gt = pd.DataFrame(gt_rows, columns=["image", "category", "x", "y", "w", "h", "area",
                                        "iscrowd"])
    pred = pd.DataFrame(pred_rows, columns=["image", "category", "x", "y", "w", "h", "score"])
    return gt, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_pycocotools(seed, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io

    gt, pred = _random_case(seed)
    data = {"images": [{"id": i, "width": 400, "height": 400, "file_name": f"{i}.png"}
                       for i in range(1, 26)],
            "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
            "annotations": [{"id": i + 1, "image_id": int(r.image), "category_id": int(r.category),
                             "bbox": [r.x, r.y, r.w, r.h], "area": r.area,
                             "iscrowd": int(r.iscrowd)} for i, r in enumerate(gt.itertuples())]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        dets = coco.loadRes([{"image_id": int(r.image), "category_id": int(r.category),
                              "bbox": [r.x, r.y, r.w, r.h], "score": r.score}
                             for r in pred.itertuples()])
        evaluator = COCOeval(coco, dets, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = det.coco_map(gt, pred)
    assert ours["map"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert ours["map50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    assert ours["map75"] == pytest.approx(evaluator.stats[2], abs=1e-9)
    assert ours["map_small"] == pytest.approx(evaluator.stats[3], abs=1e-9)
    assert ours["map_large"] == pytest.approx(evaluator.stats[5], abs=1e-9)


def test_rle_round_trips_and_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [(rng.random((int(h), int(w))) < p).astype(np.uint8)
             for h, w, p in zip(rng.integers(1, 40, 30), rng.integers(1, 40, 30), rng.random(30))]
    masks.append(np.zeros((5, 7), np.uint8))
    masks.append(np.ones((5, 7), np.uint8))
    for mask in masks:
        rle = det.rle.encode(mask)
        assert np.array_equal(det.rle.decode(rle), mask)
        assert det.rle.rle_area(rle) == mask.sum()
    try:
        from pycocotools import mask as reference
    except ImportError:
        return
    for mask in masks:
        expected = reference.encode(np.asfortranarray(mask))
        assert det.rle.encode(mask)["counts"] == expected["counts"].decode()
        assert list(det.rle.rle_bbox(det.rle.encode(mask))) == reference.toBbox(expected).tolist()
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        k = int(rng.integers(3, 8))
        polygon = list(rng.uniform(-3, max(h, w) + 3, 2 * k).round(2))
        expected = reference.merge(reference.frPyObjects([polygon], h, w))
        assert det.rle.polygons_to_rle([polygon], h, w)["counts"] == expected["counts"].decode()


def test_knife_table_on_shapes_with_brightness_copies(tmp_path):
    ws, info = imported(tmp_path, n=6, seed=4, conditions=True)
    gt, images = det.ground_truth(ws)
    assert set(images["condition"]) == {"high", "medium", "low", "artificial"}
    pred = det.detect_images(list(images["path"]), keys=list(images["image"]))
    table = det.knife_table(gt, pred, det.image_conditions(images, source="meta"))
    assert list(table.columns) == ["condition", "size", "frames", "gt", "tp", "fp",
                                   "precision", "recall", "f1"]
    assert table["condition"].tolist()[:16:4] == ["high", "medium", "low", "artificial"]
    assert table["size"].tolist()[:4] == ["large", "medium", "small", "all"]
    by = table.set_index(["condition", "size"])
    # each condition holds the same objects; the dark copies lose them
    assert len({by.loc[(c, "all"), "gt"] for c in ("high", "medium", "low", "artificial")}) == 1
    assert by.loc[("medium", "all"), "recall"] > by.loc[("low", "all"), "recall"]
    assert by.loc[("all", "all"), "tp"] == sum(by.loc[(c, "all"), "tp"] for c in
                                               ("high", "medium", "low", "artificial"))
    assert table["condition"].iloc[-1] == "average"
    # measured brightness agrees with the simulated condition for most copies
    measured = det.image_conditions(images, source="pixels")
    given = det.image_conditions(images, source="meta")
    agree = np.mean([measured[k] == given[k] for k in given if given[k] in ("low", "artificial")])
    assert agree >= 0.75


def test_brightness_condition_buckets():
    grey = np.full((10, 10, 3), 200, np.uint8)
    assert det.brightness_condition(grey) == "high"
    assert det.brightness_condition(grey // 2) == "medium"
    assert det.brightness_condition(grey // 8) == "low"
    warm = np.zeros((10, 10, 3), np.uint8)
    warm[..., 0], warm[..., 1], warm[..., 2] = 90, 60, 30
    assert det.brightness_condition(warm) == "artificial"


def test_counting_f1_by_hand():
    gt = _frame([("a", "whale", 0, 0, 1, 1)] * 3 + [("b", "whale", 0, 0, 1, 1)])
    pred = _frame([("a", "whale", 0, 0, 1, 1, 0.9)] * 2 + [("c", "whale", 0, 0, 1, 1, 0.9)],
                  score=True)
    result = det.counting_f1(gt, pred, images=["a", "b", "c", "d"])
    assert result["per_image"]["error"].tolist() == [-1, -1, 1, 0]
    assert (result["precision"], result["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 4))
    assert result["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert result["presence"]["tp"] == 1 and result["presence"]["fp"] == 1
    assert result["mae"] == pytest.approx(0.75)


def test_segmentation_metrics_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 0, 0, 0]])
    result = det.segmentation_metrics([gt], [pred], classes={1: "whale", 2: "boat"})
    assert result["per_class"]["whale"]["iou"] == pytest.approx(4 / 5)
    assert result["per_class"]["whale"]["dice"] == pytest.approx(8 / 9)
    assert result["per_class"]["boat"]["iou"] == pytest.approx(1 / 2)
    assert result["per_class"]["background"]["iou"] == pytest.approx(3 / 5)
    assert result["pixel_accuracy"] == pytest.approx(8 / 10)
    with pytest.raises(ValueError, match="shape|prediction"):
        det.segmentation_metrics([gt], [pred[:2]])


def test_predictions_from_coco_results_and_yolo_txt(tmp_path):
    ws, _ = imported(tmp_path, n=4, seed=6)
    gt, images = det.ground_truth(ws)
    cats = det.categories(ws)
    first = images.iloc[0]
    results = [{"image_id": int(first["coco_id"]), "category_id": 2, "bbox": [1, 2, 3, 4],
                "score": 0.5},
               {"file_name": first["relpath"], "category_id": 1, "bbox": [5, 5, 5, 5],
                "score": 0.9}]
    (tmp_path / "res.json").write_text(json.dumps(results))
    pred = det.load_predictions(tmp_path / "res.json", images, cats)
    assert pred["image"].tolist() == [first["image"]] * 2
    assert pred["category"].tolist() == ["square", "circle"]
    folder = tmp_path / "yolo"
    folder.mkdir()
    stem = first["relpath"].rsplit(".", 1)[0]
    (folder / f"{stem}.txt").write_text("2 0.5 0.5 0.25 0.25 0.8\n")
    pred = det.load_predictions(folder, images, cats)
    w = float(first["width"])
    assert pred.iloc[0][["category", "x", "w", "score"]].tolist() == ["triangle", 0.375 * w,
                                                                        0.25 * w, 0.8]
