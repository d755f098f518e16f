"""The detection CLI on `smartset synth shapes` output: each command parses, calls a library
function and renders; evaluations are recorded runs (failed when they fail)."""

import json

import pytest
from typer.testing import CliRunner

from smartset.cli import app
from smartset.detection.evaluation import evaluate_masks, evaluate_predictions
from smartset.workspace import init

runner = CliRunner()


def cli(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    return result


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    made = json.loads(cli("synth", "shapes", root / "src", "--n", 4, "--size", 64, "--json").stdout)
    ws = init(root / "ws")
    cli("annotations", "import", ws.path, made["coco"], "--json")
    return ws, root


def test_detect_evaluate_is_a_recorded_run(shapes):
    ws, root = shapes
    cli("detect", "baseline", ws.path, "--out", root / "pred.json")
    first = json.loads(cli("detect", "evaluate", ws.path, root / "pred.json", "--json").stdout)
    second = json.loads(cli("detect", "evaluate", root / "pred.json", "-w", ws.path,
                            "--json").stdout)
    assert first["metrics"] == second["metrics"] and 0 <= first["metrics"]["f1"] <= 1
    runs = ws.runs().set_index("id")
    for result in (first, second):
        row = runs.loc[result["run_id"]]
        assert row["command"] == "detect evaluate" and row["status"] == "done"
        assert row["metrics"]["f1"] == result["metrics"]["f1"]
    # the library gives the same numbers, and the table the CLI prints
    direct = evaluate_predictions(ws, root / "pred.json", montage=False)
    assert direct["metrics"] == first["metrics"] and direct["knife_table"] == first["knife_table"]
    text = cli("detect", "evaluate", ws.path, root / "pred.json", "--conditions", "none").stdout
    assert "precision" in text and "nan" not in text
    bad = cli("detect", "evaluate", ws.path, root / "pred.json", "--conditions", "x", code=2)
    assert "'auto', 'meta', 'pixels', 'none'" in " ".join(bad.output.split())


def test_evaluate_masks_from_a_folder_and_the_baseline(shapes, tmp_path):
    ws, root = shapes
    baseline = json.loads(cli("detect", "evaluate-masks", ws.path, "--baseline",
                              "--json").stdout)
    assert 0 < baseline["mean_iou"] <= 1
    perfect = evaluate_masks(ws, root / "src" / "masks")  # synth's own masks: exact
    assert perfect["mean_iou"] == pytest.approx(1.0) and perfect["pixel_accuracy"] == 1.0
    runs = ws.runs().set_index("id")
    assert runs.loc[perfect["run_id"], "command"] == "detect evaluate-masks"
    empty = tmp_path / "none"
    empty.mkdir()
    result = cli("detect", "evaluate-masks", ws.path, empty, code=1)
    assert "No predicted mask for" in " ".join(result.output.split())
    assert ws.runs()["status"].iloc[-1] == "failed"
    cli("detect", "evaluate-masks", ws.path, code=2)  # neither a folder nor --baseline


def test_annotations_relabel_history_and_export(shapes, tmp_path):
    ws, _ = shapes
    listed = json.loads(cli("annotations", "list", ws.path, "--json").stdout)
    first = listed["annotations"][0]["id"]
    cli("annotations", "relabel", ws.path, first, "--to", "blob")
    old = cli("annotations", "relabel", first, "--category", "disc", "-w", ws.path)
    assert "is deprecated; use 'smartset annotations relabel --to C'" in old.stderr
    history = cli("annotations", "history", ws.path, "--annotation", first).stdout
    assert "blob" in history and "disc" in history
    assert "nan" not in history and "None" not in history
    out = json.loads(cli("export", ws.path, "--format", "yolo", "--out", tmp_path / "y",
                         "--json").stdout)
    assert out["format"] == "yolo" and (tmp_path / "y" / "data.yaml").is_file()
