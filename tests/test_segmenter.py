"""The trainable segmenter: it learns, beats the threshold baseline in the dark, resumes to
the same model, and its predictions round-trip through 'detect evaluate-masks'."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import smartset
from smartset import detection as det
from smartset.cli import app
from smartset.detection import segmenter as seg
from smartset.detection.evaluation import segmentation_metrics
from smartset.detection.synth import baseline_segmenter
from smartset.learn.errors import CheckpointError, LearnError, NotFittedError

torch = pytest.importorskip("torch")
CLASSES = {1: "circle", 2: "square", 3: "triangle"}


def _shapes(folder: Path, n: int, seed: int):
    """Small dark scenes (night and a warm lamp): where the threshold baseline fails."""
    det.synth_shapes(folder, n, seed=seed, size=(64, 64), side=(10, 40),
                     conditions=["low", "artificial"])
    files = sorted((folder / "images").glob("*.png"))
    images, masks = [], []
    for f in files:
        with Image.open(f) as image, Image.open(folder / "masks" / f.name) as mask:
            images.append(np.asarray(image.convert("RGB")))
            masks.append(np.asarray(mask))
    return images, masks


@pytest.fixture(scope="module")
def dark(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    return _shapes(root / "train", 16, 1), _shapes(root / "test", 8, 2)


def test_trains_and_beats_the_baseline(dark):
    (train_x, train_y), (test_x, test_y) = dark
    # the backbone frozen whole (freeze_stages=5): the decoder alone learns, in seconds
    model = seg.Segmenter(epochs=10, batch_size=4, lr=1e-2, freeze_stages=5, seed=0,
                          progress=False)
    model.fit(train_x, train_y, CLASSES)
    assert model.history_[-1]["loss"] < model.history_[0]["loss"]
    predicted = model.predict(test_x)
    assert all(p.shape == t.shape and p.dtype == np.uint8 for p, t in zip(predicted, test_y))
    assert set(np.unique(np.concatenate([p.ravel() for p in predicted]))) <= {0, 1, 2, 3}
    mine = segmentation_metrics(test_y, predicted, classes=CLASSES)["mean_iou"]
    baseline = segmentation_metrics(test_y, [baseline_segmenter(x, {v: k for k, v in
                                                                     CLASSES.items()})
                                             for x in test_x], classes=CLASSES)["mean_iou"]
    assert mine > baseline + 0.05, (mine, baseline)


def test_killed_run_resumes_to_the_same_model(dark, tmp_path, monkeypatch):
    (train_x, train_y), _ = dark
    x, y = train_x[:6], train_y[:6]
    options = {"epochs": 2, "batch_size": 3, "seed": 4, "progress": False,
               "augment": "detection-basic", "width": 16}
    whole = seg.Segmenter(**options, checkpoint=tmp_path / "whole.pt").fit(x, y, CLASSES)

    calls = {"n": 0}
    real = seg.segmentation_loss

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # two batches per epoch: the second epoch's first batch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "segmentation_loss", dies_in_epoch_two)
    killed = tmp_path / "killed.pt"
    with pytest.raises(KeyboardInterrupt):
        seg.Segmenter(**options, checkpoint=killed).fit(x, y, CLASSES)
    monkeypatch.setattr(seg, "segmentation_loss", real)
    with pytest.raises(CheckpointError, match="unfinished"):
        seg.load_segmenter(killed)
    resumed = seg.Segmenter(**options, checkpoint=killed, resume=True).fit(x, y, CLASSES)
    assert [h["loss"] for h in resumed.history_] == [h["loss"] for h in whole.history_]
    a, b = whole.network_.state_dict(), resumed.network_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded = seg.load_segmenter(killed)
    assert loaded.get_params()["augment"] is None  # the policy is recorded, not rebuilt
    assert all(np.array_equal(p, q) for p, q in zip(loaded.predict(x), whole.predict(x)))


def test_bad_input_is_one_clear_error(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(LearnError, match=r"value\(s\) \[7\]"):
        seg.Segmenter(epochs=1).fit([image], [np.full((32, 32), 7, np.uint8)], CLASSES)
    with pytest.raises(LearnError, match="mask 0 is"):
        seg.Segmenter(epochs=1).fit([image], [np.zeros((16, 16), np.uint8)], CLASSES)
    with pytest.raises(LearnError, match="multiple of 16"):
        seg.Segmenter(size=50).fit([image], [np.zeros((32, 32), np.uint8)], CLASSES)
    with pytest.raises(NotFittedError):
        seg.Segmenter().predict([image])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        seg.load_segmenter(bad)


def test_cli_train_predict_evaluate_masks_round_trip(tmp_path):
    info = det.synth_shapes(tmp_path / "shapes", 5, seed=5, size=(64, 64), side=(10, 40),
                            conditions=["medium", "low"])
    ws = smartset.init(tmp_path / "ws")
    det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    trained = run("segment", "train", "-w", ws.path, "--epochs", "2", "--batch-size", "4",
                  "--augment", "detection-basic", "--json")
    # both lighting copies of a scene stay on one side of the split
    assert trained["n_train"] + trained["n_test"] == 10 and trained["n_test"] % 2 == 0
    assert {"mean_iou", "per_class"} <= set(trained["test"]) and trained["baseline"]
    row = ws.runs().set_index("id").loc[trained["run_id"]]
    assert row["command"] == "segment train" and row["seed"] == 0
    assert row["config"]["options"]["augment"] == "detection-basic"
    assert "torch" in row["software"] and len(row["metrics"]["history"]) == 2
    out = tmp_path / "masks"
    predicted = run("segment", "predict", str(trained["run_id"]), "-w", ws.path,
                    "--out", out, "--json")
    assert predicted["images"] == 10
    scored = run("detect", "evaluate-masks", out, "-w", ws.path, "--json")
    # the same numbers from the model in memory and the workspace's ground truth
    data = seg.workspace_masks(ws)
    model = seg.load_segmenter(ws.path / trained["checkpoint"])
    images = [np.asarray(Image.open(p).convert("RGB")) for p in data["paths"]]
    direct = segmentation_metrics(data["masks"], model.predict(images), classes=CLASSES)
    assert scored["mean_iou"] == pytest.approx(direct["mean_iou"])
    assert scored["per_class"].keys() == direct["per_class"].keys()
    # the COCO RLEs are the PNGs
    results = json.loads((out / "masks.json").read_text())
    for rel in data["relpaths"]:
        with Image.open((out / rel).with_suffix(".png")) as png:
            mask = np.asarray(png)
        painted = np.zeros_like(mask)
        for r in results:
            if r["file_name"] == rel:
                painted[det.rle.decode(r["segmentation"]).astype(bool)] = r["category_id"]
                assert 0 < r["score"] <= 1
        assert np.array_equal(painted, mask)
    # a folder of images predicts without a workspace
    folder = run("segment", "predict", ws.path / trained["checkpoint"], "--folder",
                 tmp_path / "shapes" / "images", "--out", tmp_path / "folder-masks", "--json")
    assert folder["images"] == 10 and folder["run_id"] is None


def test_workspace_without_masks_says_what_to_do(tmp_path):
    info = det.synth_shapes(tmp_path / "shapes", 2, seed=0, size=(64, 64), side=(10, 40))
    coco = json.loads(Path(info["coco"]).read_text())
    for a in coco["annotations"]:
        a.pop("segmentation")
    Path(info["coco"]).write_text(json.dumps(coco))
    ws = smartset.init(tmp_path / "ws")
    det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    with pytest.raises(LearnError, match="no masks to learn from.*annotations import"):
        seg.train_segmenter(ws, epochs=1)


def test_killed_workspace_run_resumes_with_its_own_settings(tmp_path, monkeypatch):
    info = det.synth_shapes(tmp_path / "shapes", 6, seed=6, size=(64, 64), side=(10, 40))
    ws = smartset.init(tmp_path / "ws")
    det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    real, calls = seg.segmentation_loss, {"n": 0}

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # 4 training images, batches of 2: epoch two's first batch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "segmentation_loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        seg.train_segmenter(ws, epochs=2, batch_size=2, width=16, seed=1, test_fraction=0.3)
    run_id = int(ws.runs()["id"].iloc[-1])
    assert ws.runs().set_index("id").loc[run_id, "status"] == "failed"
    monkeypatch.setattr(seg, "segmentation_loss", real)
    with pytest.raises(LearnError, match="No run .* to resume"):
        seg.train_segmenter(ws, resume_run=run_id + 100)
    resumed = seg.train_segmenter(ws, resume_run=run_id)
    assert resumed["run_id"] == run_id and len(resumed["history"]) == 2
    assert resumed["config"]["options"]["width"] == 16 and resumed["config"]["seed"] == 1
    assert ws.runs().set_index("id").loc[run_id, "status"] == "done"
    assert seg.load_segmenter(ws.path / resumed["checkpoint"]).width == 16


def test_write_masks_refuses_collisions_and_escapes(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 2
    result = seg.write_masks(tmp_path / "out", ["sub/a.jpg"], [mask], CLASSES)
    assert result["regions"] == 1
    with Image.open(tmp_path / "out" / "sub" / "a.png") as png:
        assert np.array_equal(np.asarray(png), mask)
    with pytest.raises(LearnError, match="would both be written"):
        seg.write_masks(tmp_path / "out", ["a.jpg", "a.png"], [mask, mask], CLASSES)
    with pytest.raises(LearnError, match="outside"):
        seg.write_masks(tmp_path / "out", ["../a.jpg"], [mask], CLASSES)
