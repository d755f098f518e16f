"""`smartset study dacolt` and `study scale`: the tables, their files and their runs, on a
tiny simulated set trained for one epoch (the numbers themselves: benchmarks/detect.py)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smartset.cli import app
from smartset.detection.studies import study_scale, summarise
from smartset.detection.train import DetectorError, condition_group, data_from_coco, split_groups

from detection_helpers import imported, make_shapes

runner = CliRunner()


def test_condition_copies_of_a_scene_share_a_group_and_a_side_of_the_split(tmp_path):
    assert condition_group("a/shape_0003_low.png") == condition_group("a/shape_0003.png") \
        == "a/shape_0003"
    assert condition_group("x_lowlight.png") == "x_lowlight"
    info = make_shapes(tmp_path / "s", 8, size=64, conditions=True)
    data = data_from_coco(info["coco"])
    train, test = split_groups(data, test_fraction=0.25, seed=1)
    groups = np.array(data.groups)
    assert set(groups[train]).isdisjoint(groups[test]) and len(test) == 2 * 4
    assert split_groups(data, test_fraction=0.25, seed=1)[1].tolist() == test.tolist()


def test_summarise_gives_mean_and_sample_std_over_seeds():
    frame = pd.DataFrame({"arm": ["a", "a", "b"], "f1": [0.5, 0.7, 0.9]})
    s = summarise(frame, ["arm"], ["f1"]).set_index("arm")
    assert s.loc["a", "f1_mean"] == pytest.approx(0.6)
    assert s.loc["a", "f1_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s.loc["b", "f1_std"] == 0 and s.loc["a", "seeds"] == 2


def test_study_dacolt_writes_the_knife_table_over_seeds(tmp_path):
    ws, _ = imported(tmp_path, n=4, size=64, conditions=True)
    # --jobs 2: the models of the study train in two worker processes
    result = runner.invoke(app, ["study", "dacolt", "-w", str(ws.path), "--epochs", "1",
                                 "--seeds", "2", "--jobs", "2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    table = pd.DataFrame(out["table"])
    assert set(table["arm"]) == {"plain", "DaCoT", "DaCoLT"}
    assert set(table["condition"]) >= {"high", "medium", "low", "artificial", "average"}
    assert (table["seeds"] == 2).all()
    for column in ("frames", "gt", "tp", "fp", "precision_mean", "recall_std", "f1_mean",
                   "f1_std"):
        assert any(c.startswith(column) for c in table.columns), column
    runs = pd.read_csv(out["runs_csv"])
    assert sorted(runs["seed"].unique()) == [0, 1]
    # DaCoT is the plain model: same training time, other test-time preprocessing
    timing = runs.drop_duplicates(["seed", "arm"]).set_index(["seed", "arm"])["train_seconds"]
    assert timing[(0, "plain")] == timing[(0, "DaCoT")]
    assert Path(out["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| condition | size | arm |" in (ws.path / "reports" / "study-dacolt"
                                           / "table.md").read_text()
    recorded = ws.catalog.query("SELECT status FROM runs WHERE command = 'study dacolt'")
    assert [r[0] for r in recorded] == ["done"]


def test_study_dacolt_without_conditions_is_one_clear_error(tmp_path):
    ws, _ = imported(tmp_path, n=4, size=64)
    from smartset.detection.studies import study_dacolt
    from smartset.detection.train import data_from_workspace

    data = data_from_workspace(ws)
    data.conditions = {k: None for k in data.keys}
    with pytest.raises(DetectorError, match="conditions"):
        study_dacolt(data, seeds=[0], epochs=1)


def test_study_scale_reports_presence_and_counting_per_arm_and_scale(tmp_path):
    info = make_shapes(tmp_path / "s", 8, size=64, side=(10, 40))
    data = data_from_coco(info["coco"])
    frame = study_scale(data, seeds=[0], epochs=1, scales=[1.0, 0.5])
    assert len(frame) == 4
    assert set(frame["arm"]) == {"plain", "scale-aug"} and set(frame["scale"]) == {1.0, 0.5}
    assert frame[["presence_f1", "counting_f1"]].apply(
        lambda c: c.between(0, 1) | c.isna()).all().all()
