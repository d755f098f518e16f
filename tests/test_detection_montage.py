"""The detector's error montage: the worst false positives and misses, boxes drawn."""

import json

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from smartset.cli import app
from smartset.detection.draw import category_colour
from smartset.detection.montage import detection_errors, error_montage


def _scene(tmp_path):
    """Two grey 100 x 100 images; ground truth: a square and a circle in image a, a
    triangle in image b. Predictions: the square found, the circle called a square, the
    triangle missed, a confident box on empty background and a weak one."""
    paths = {}
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(path)
        paths[name] = str(path)
    images = pd.DataFrame({"image": ["a", "b"], "path": [paths["a"], paths["b"]]})
    gt = pd.DataFrame([("a", "square", 10, 10, 30, 30), ("a", "circle", 60, 60, 30, 30),
                       ("b", "triangle", 20, 40, 50, 40)],
                      columns=["image", "category", "x", "y", "w", "h"])
    pred = pd.DataFrame([("a", "square", 10, 10, 30, 30, 0.99),
                         ("a", "square", 61, 60, 30, 30, 0.80),
                         ("b", "circle", 60, 5, 30, 20, 0.95),
                         ("b", "circle", 5, 80, 10, 10, 0.60),
                         ("b", "triangle", 0, 0, 10, 10, 0.10)],
                        columns=["image", "category", "x", "y", "w", "h", "score"])
    return gt, pred, images


def test_errors_ranked_and_captioned(tmp_path):
    gt, pred, _ = _scene(tmp_path)
    false_positives, misses = detection_errors(gt, pred, score_threshold=0.5)
    assert [(e["image"], e["true"], e["predicted"]) for e in false_positives] == [
        ("b", "background", "circle 0.95"), ("a", "circle", "square 0.80"),
        ("b", "background", "circle 0.60")]
    # the weak triangle (score 0.10) is below the threshold: not a false positive
    assert [(e["image"], e["true"], e["predicted"]) for e in misses] == [
        ("b", "triangle", "nothing"), ("a", "circle", "square 0.80")]


def test_montage_draws_the_boxes(tmp_path):
    gt, pred, images = _scene(tmp_path)
    cell, gap, header, caption = 100, 4, 20, 18  # the montage's layout, 1 pixel per pixel
    result = error_montage(gt, pred, images, tmp_path / "errors.png", cell=cell, columns=3)
    assert result["false_positives"] == 3 and result["misses"] == 2
    with Image.open(result["path"]) as opened:
        picture = np.asarray(opened.convert("RGB"))
    assert picture.shape[1] == 3 * (cell + gap) + gap
    # first tile: the most confident false positive, a circle box at x 60-89, y 5-24
    top, left = gap + header, gap
    circle = np.array(category_colour("circle"))
    assert (picture[top + 5, left + 60:left + 90] == circle).all()      # top edge
    assert (picture[top + 15, left + 60] == circle).all()               # left edge
    assert (picture[top + 50, left + 50] == 90).all()                   # inside: the image
    # the misses start below the false positives' row: the largest, the triangle's box
    top = gap + header + (cell + caption + gap) + header
    triangle = np.array(category_colour("triangle"))
    assert (picture[top + 40, left + 20:left + 70] == triangle).all()
    assert (picture[top + 79, left + 20:left + 70] == triangle).all()
    assert not (picture[top + 40, left + 20:left + 70] == circle).all()
    # the caption strip holds dark text
    strip = picture[gap + header + cell:gap + header + cell + caption, left:left + cell]
    assert strip.min() < 60


def test_no_errors_no_montage(tmp_path):
    gt, _, images = _scene(tmp_path)
    perfect = gt.assign(score=1.0)
    assert error_montage(gt, perfect, images, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_detect_evaluate_writes_the_montage(tmp_path):
    from smartset import detection as det

    import smartset

    info = det.synth_shapes(tmp_path / "shapes", 4, seed=3, size=(64, 64), side=(10, 30),
                            conditions=["low"])
    ws = smartset.init(tmp_path / "ws")
    det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    runner = CliRunner()
    out = tmp_path / "pred.json"
    result = runner.invoke(app, ["detect", "baseline", "-w", str(ws.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["detect", "evaluate", str(out), "-w", str(ws.path), "--json"])
    assert result.exit_code == 0, result.output
    montage = json.loads(result.output)["montage"]
    # the baseline misses objects in the dark: there is something to show
    assert montage["misses"] > 0
    with Image.open(montage["path"]) as opened:
        assert opened.size[0] > 0


def test_a_box_under_a_pixel_is_drawn_not_refused():
    import numpy as np

    from smartset.detection.draw import draw_targets

    image = np.zeros((20, 20, 3), np.uint8)
    drawn = draw_targets(image, [{"category": "a", "bbox": [5.0, 5.0, 0.3, 0.2],
                                  "score": 0.9}], labels=False, width=2)
    assert drawn.shape == image.shape and drawn[5:8, 5:8].any()
