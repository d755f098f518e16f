"""The trainable detector: box ops against references, targets that decode to their boxes,
a few seconds of training that beat the threshold baseline, predictions that round-trip
through COCO and YOLO, and a killed `detect train` that resumes to the same model."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from smartset import detection as det
from smartset.cli import app
from smartset.detection import detector as D
from smartset.detection.evaluation import box_iou as box_iou_xywh
from smartset.detection.evaluation import evaluate_detections, load_predictions
from smartset.detection.train import (DetectorError, data_from_coco, fit_detector, load_detector,
                                      predictions_frame, split_groups)

from detection_helpers import imported

runner = CliRunner()


def _boxes(rng, n):
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(1, 30, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def test_box_iou_matches_the_evaluation_iou():
    rng = np.random.default_rng(0)
    a, b = _boxes(rng, 30), _boxes(rng, 20)
    ours = D.box_iou(torch.tensor(a), torch.tensor(b)).numpy()
    xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], 1)  # noqa: E731
    np.testing.assert_allclose(ours, box_iou_xywh(xywh(a), xywh(b)), atol=1e-9)
    assert (ours > 0).any() and (ours == 0).any()


def _nms_loop(boxes, scores, threshold):
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(D.box_iou(torch.tensor(boxes[i:i + 1]), torch.tensor(boxes[j:j + 1]))[0, 0]
               <= threshold for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, 60)
    scores = rng.random(60).round(1)  # ties on purpose
    got = D.nms(torch.tensor(boxes), torch.tensor(scores), 0.4).tolist()
    assert got == _nms_loop(boxes, scores, 0.4)
    assert 0 < len(got) < 60


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert D.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert D.nms(boxes, scores, 0.5).tolist() == [0]


def test_targets_decode_back_to_their_boxes():
    boxes = [np.array([[8, 8, 40, 24], [50, 30, 58, 38.]]), np.zeros((0, 4))]
    labels = [np.array([0, 2]), np.zeros(0, int)]
    goal = D.centernet_targets(boxes, labels, num_classes=3, shape=(64, 64), stride=8)
    heat = goal["heatmap"].clamp(1e-6, 1 - 1e-6)
    out = {"heatmap": torch.log(heat / (1 - heat)), "size": goal["size"],
           "offset": goal["offset"]}
    found = D.decode(out, stride=8, score_threshold=0.99)
    order = found[0]["labels"].argsort()
    np.testing.assert_allclose(found[0]["boxes"][order].numpy(), boxes[0], atol=1e-4)
    assert sorted(found[0]["labels"].tolist()) == [0, 2] and len(found[1]["boxes"]) == 0


@pytest.fixture(scope="module")
def dark_shapes(tmp_path_factory):
    """Shapes at night (values x 0.3, sensor noise): where the threshold baseline finds few
    objects."""
    folder = tmp_path_factory.mktemp("dark")
    det.synth_shapes(folder, 40, seed=3, size=(64, 64), side=(12, 40), max_objects=3,
                     conditions=["low"])
    return data_from_coco(folder / "annotations.json")


def test_a_few_seconds_of_training_beat_the_threshold_baseline(dark_shapes):
    train_rows, test_rows = split_groups(dark_shapes, test_fraction=0.25, seed=0)
    train, test = dark_shapes.subset(train_rows), dark_shapes.subset(test_rows)
    model = fit_detector(train, epochs=12, batch_size=10, lr=3e-3, seed=0)
    pred = predictions_frame(test.keys, model.predict(test.images))
    ours = evaluate_detections(test.gt, pred, score_threshold=0.3, with_map=False)
    base = predictions_frame(test.keys, [det.baseline_detector(i) for i in test.images])
    theirs = evaluate_detections(test.gt, base, score_threshold=0.3, with_map=False)
    assert ours["f1"] > theirs["f1"] + 0.2, (ours["f1"], theirs["f1"])
    assert len(model.history_) == 12 and model.history_[-1]["loss"] < model.history_[0]["loss"]


def test_predictions_round_trip_through_coco_and_yolo(tmp_path):
    ws, _ = imported(tmp_path, n=6, size=64)
    trained = runner.invoke(app, ["detect", "train", "-w", str(ws.path), "--epochs", "1",
                                  "--json"])
    assert trained.exit_code == 0, trained.output
    run = json.loads(trained.output)["run_id"]
    out, yolo = tmp_path / "pred.json", tmp_path / "yolo"
    result = runner.invoke(app, ["detect", "predict", str(run), "-w", str(ws.path), "--out",
                                 str(out), "--yolo", str(yolo), "--score-threshold", "0.01",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["predictions"] > 0
    gt, images = det.ground_truth(ws)
    direct = predictions_frame(list(images["image"]), load_detector(
        ws.path / "models" / f"run-{run}" / "model.pt").predict(
        [_rgb(p) for p in images["path"]],
        score_threshold=0.01))
    cats = det.categories(ws)
    key = ["image", "category", "x", "y", "w", "h"]
    for path in (out, yolo):
        back = load_predictions(path, images, cats).sort_values(key).reset_index(drop=True)
        want = direct.sort_values(key).reset_index(drop=True)
        assert len(back) == len(want)
        assert (back["image"] == want["image"]).all() and (back["category"] == want["category"]).all()
        np.testing.assert_allclose(back[["x", "y", "w", "h"]], want[["x", "y", "w", "h"]],
                                   atol=1e-3 * 64)
        np.testing.assert_allclose(back["score"], want["score"], atol=1e-4)


def _rgb(path):
    from smartset.imageio import load_image

    return load_image(path, mode="RGB")


def test_unknown_preprocess_and_mixed_sizes_are_one_clear_error(dark_shapes):
    with pytest.raises(DetectorError, match="dacolt"):
        fit_detector(dark_shapes.subset([0, 1]), preprocess="sepia", epochs=1)
    odd = dark_shapes.subset([0, 1])
    odd.images[1] = odd.images[1][:40]
    with pytest.raises(DetectorError, match="--size"):
        fit_detector(odd, epochs=1)


def _train_command(ws_path, *extra):
    return [sys.executable, "-m", "smartset", "detect", "train", "-w", str(ws_path),
            "--epochs", "8", "--batch-size", "4", "--json", *extra]


def test_a_killed_detect_train_resumes_to_the_same_model(tmp_path):
    ws, _ = imported(tmp_path, n=6, size=64)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = tmp_path / "train.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(_train_command(ws.path), env=env, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    found = []
    while time.monotonic() < deadline and process.poll() is None and not found:
        found = list((ws.path / "models").glob("run-*/model.pt"))
        time.sleep(0.01)
    assert process.poll() is None, log.read_text()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    checkpoint = found[0]
    run = int(checkpoint.parent.name.split("-")[1])
    epoch = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= epoch < 8
    resumed = subprocess.run(_train_command(ws.path, "--resume", str(run)), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(_train_command(ws.path), env=env, capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr
    other = json.loads(straight.stdout)["run_id"]
    assert json.loads(resumed.stdout)["run_id"] == run != other
    a = torch.load(checkpoint, weights_only=False)
    b = torch.load(ws.path / "models" / f"run-{other}" / "model.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 8 and a["history"] == b["history"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    status = dict(ws.catalog.query("SELECT id, status FROM runs WHERE command = 'detect train'"))
    assert status == {run: "done", other: "done"}


def test_a_damaged_or_foreign_file_is_one_clear_error_naming_it(tmp_path):
    import torch

    missing = tmp_path / "nothing.pt"
    with pytest.raises(DetectorError, match="nothing.pt.*detect train"):
        load_detector(missing)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorError, match="damaged.pt.*cannot be read"):
        load_detector(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something else", "state_dict": {}}, foreign)
    with pytest.raises(DetectorError, match="foreign.pt"):
        load_detector(foreign)
