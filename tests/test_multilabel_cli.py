"""Multi-label through the CLI (#22): ingest a table of tags, train --multi-label, evaluate,
predict a folder to a CSV of tags and probabilities."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from smartset.cli import app

pytest.importorskip("torch")


def _bar_images(folder, n, seed):
    """PNGs of 28x28 noise with faint bars; a bar in band k means tag 'bar{k}'."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = [k for k in range(3) if rng.random() < 0.45] or [int(rng.integers(3))]
        image = rng.integers(0, 90, (28, 28)).astype(np.uint8)
        for k in tags:
            image[4 + 8 * k:8 + 8 * k, 4:24] += 70
        (folder / f"{i:03d}.png").parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        rows.append((f"{folder.name}/{i:03d}.png", "|".join(f"bar{k}" for k in tags)))
    return rows


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_evaluate_predict_multi_label(tmp_path):
    rows = _bar_images(tmp_path / "img", 150, 0)
    (tmp_path / "tags.csv").write_text(
        "path,tags\n" + "".join(f"{p},{t}\n" for p, t in rows))
    ws = tmp_path / "ws"
    _run("init", ws)
    _run("ingest", ws, tmp_path / "tags.csv", "--tags-column", "tags", "--tag-sep", "|")
    trained = json.loads(_run("train", "-w", ws, "--multi-label", "--epochs", "3",
                              "--batch-size", "16", "--lr", "0.003", "--json"))
    assert trained["config"]["task"] == "multilabel"
    assert trained["config"]["classes"] == ["bar0", "bar1", "bar2"]
    assert set(trained["thresholds"]) == {"bar0", "bar1", "bar2"}
    test = trained["test"]
    assert test["n"] == trained["config"]["n_test"] > 20
    assert test["mAP"] > 0.75, test  # chance: about the share of each tag, 0.45-0.55
    assert {"macro_f1", "micro_f1", "subset_accuracy", "hamming_loss"} <= set(test)
    run = trained["run_id"]

    shown = _run("evaluate", run, "-w", ws)
    assert "mAP" in shown and "bar2" in shown and "left out" in shown
    evaluated = json.loads(_run("evaluate", run, "-w", ws, "--json"))
    assert evaluated["left_out_trained"] == trained["config"]["n_train"]
    assert evaluated["n"] == test["n"]
    assert evaluated["mAP"] == pytest.approx(test["mAP"], abs=1e-6)

    new = _bar_images(tmp_path / "new", 6, 1)
    out_csv = tmp_path / "predicted.csv"
    _run("predict", run, "-w", ws, "--folder", tmp_path / "new", "--out", out_csv)
    with open(out_csv, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["file"] for r in table] == [p.split("/", 1)[1] for p, _ in new]
    assert list(table[0]) == ["file", "predicted", "bar0", "bar1", "bar2"]
    for row in table:  # the predicted tags are the probabilities at or above the thresholds
        expected = [c for c in ("bar0", "bar1", "bar2")
                    if float(row[c]) >= trained["thresholds"][c] - 1e-6]
        assert (row["predicted"].split("|") if row["predicted"] else []) == expected


def test_find_tag_issues_over_a_workspace(tmp_path):
    import smartset
    from smartset.clean import find_tag_issues

    rows = _bar_images(tmp_path / "img", 60, 2)
    (tmp_path / "tags.csv").write_text(
        "path,tags\n" + "".join(f"{p},{t}\n" for p, t in rows))
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "tags.csv", show_progress=False)
    found = find_tag_issues(ws, folds=3, epochs=1, batch_size=16, progress=False)
    assert found["n"] == 60 and found["classes"] == ["bar0", "bar1", "bar2"]
    assert set(found["thresholds"]) == {"bar0", "bar1", "bar2"}
    ids = set(ws.samples()["id"])
    for issue in found["issues"]:
        assert issue["sample_id"] in ids and issue["kind"] in ("missing", "extra")
        assert (issue["class"] in issue["tags"]) == (issue["kind"] == "extra")
    scores = [issue["score"] for issue in found["issues"]]
    assert scores == sorted(scores, reverse=True)
