"""The cleaning plan on a tiny workspace: detect -> plan -> apply -> new version -> undo,
through the API and the CLI."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from smartset.cli import app
from smartset.clean import (PLAN_FORMAT, InSampleWarning, PlanError, apply_plan, load_plan,
                            make_plan, undo_apply)
from smartset.predictions import write_predictions

CLASSES = ["cat", "dog", "hound"]


@pytest.fixture
def planted(ws, tmp_path, fixtures):
    """18 samples, 6 per class; cat/c0 looks like a dog; dog and hound are confused both
    ways. Out-of-fold predictions stored as a finished run."""
    root = tmp_path / "src"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(6):
            shutil.copy(fixtures / "good.png", root / cls / f"{cls[0]}{i}.png")
    ws.ingest(root, engine="serial", show_progress=False)
    samples = ws.samples()
    probs = []
    for relpath in samples["relpath"]:
        cls, name = relpath.split("/")
        if cls == "cat":
            probs.append([0.03, 0.95, 0.02] if name == "c0.png" else [0.96, 0.02, 0.02])
        elif cls == "dog":
            probs.append([0.02, 0.58, 0.40])
        else:
            probs.append([0.02, 0.36, 0.62])
    run = ws.catalog.start_run("predict", {"classes": CLASSES})
    write_predictions(ws.catalog, run, list(samples["id"]), kind="oof", classes=CLASSES,
                      probs=np.array(probs), labels=list(samples["label"]),
                      folds=np.arange(len(samples)) % 3)
    ws.catalog.finish_run(run, {})
    return ws


def _id(ws, relpath):
    samples = ws.samples(include_excluded=True)
    return samples.set_index("relpath").loc[relpath, "id"]


def test_plan_has_the_agreed_shape_and_is_registered(planted):
    ws = planted
    plan = make_plan(ws)
    on_disk = load_plan(plan["path"])
    assert on_disk["format"] == PLAN_FORMAT and on_disk["run_id"] == plan["run_id"]
    assert set(on_disk) == {"format", "run_id", "created_at", "version", "params", "trust",
                            "actions"}
    for action in on_disk["actions"]:
        assert list(action) == ["id", "action", "sample_id", "value", "detector", "score",
                                "reason", "evidence"]
    first = on_disk["actions"][0]
    assert first["action"] == "relabel" and first["sample_id"] == _id(ws, "cat/c0.png")
    assert first["value"] == "dog" and first["detector"] == "consensus"
    assert "labeled 'cat' but the model gives 'dog' 95%" in first["reason"]
    merges = [a for a in on_disk["actions"] if a["action"] == "merge_classes"]
    assert [m["value"] for m in merges] == [{"from": "hound", "into": "dog"}] or \
        [m["value"] for m in merges] == [{"from": "dog", "into": "hound"}]
    assert "confused both ways" in merges[0]["reason"]
    artifact = ws.catalog.query("SELECT path, kind FROM artifacts WHERE kind='clean_plan'")
    assert artifact and (ws.path / artifact[0]["path"]).is_file()
    issues = ws.catalog.query("SELECT * FROM label_issues WHERE run_id=? ORDER BY score DESC",
                              (plan["run_id"],))
    top = dict(issues[0])
    assert top["sample_id"] == _id(ws, "cat/c0.png") and top["kind"] == "wrong_label"
    assert top["label"] == "cat" and top["suggested"] == "dog"
    assert "consensus" in json.loads(top["detectors"])
    assert json.loads(top["evidence"])["model_p_suggested"] == pytest.approx(0.95)
    assert plan["path"].endswith(f"reports/clean/plan-{plan['run_id']}.json")


def test_apply_makes_a_new_version_and_undo_reverts_everything(planted):
    ws = planted
    ws.create_version("original")
    plan = make_plan(ws)
    relabel = next(a for a in plan["actions"] if a["action"] == "relabel")
    sid = relabel["sample_id"]
    extra = {"id": "a9999", "action": "exclude", "sample_id": _id(ws, "hound/h5.png"),
             "value": None, "detector": "manual", "score": 1.0, "reason": "blank",
             "evidence": {}}
    plan["actions"].append(extra)
    result = apply_plan(ws, plan, only=[relabel["id"], "a9999"], version="cleaned",
                        author="tester")
    assert set(result["applied"]) == {relabel["id"], "a9999"}
    assert result["version"] == "cleaned" and result["n_samples"] == 17
    cleaned = ws.samples("cleaned").set_index("id")
    assert cleaned.loc[sid, "label"] == "dog"
    assert ws.samples("original").set_index("id").loc[sid, "label"] == "cat"  # old stays
    history = ws.history(sid)
    assert list(history["origin"]) == ["ingest", "clean"] and history["author"].iloc[-1] == "tester"
    again = apply_plan(ws, plan, only=[relabel["id"]])
    assert again["skipped"] == {relabel["id"]: "already"}
    undo_apply(ws, result["run_id"])
    live = ws.samples().set_index("id")
    assert live.loc[sid, "label"] == "cat"
    assert _id(ws, "hound/h5.png") in set(live.index)
    assert len(ws.samples("cleaned")) == 17  # versions never change


def test_merge_and_multi_label_apply_through_events(planted):
    ws = planted
    plan = make_plan(ws)
    merge = next(a for a in plan["actions"] if a["action"] == "merge_classes")
    result = apply_plan(ws, plan, only=[merge["id"]])
    assert ws.classes() == ["cat", merge["value"]["into"]]
    undo_apply(ws, result["run_id"])
    assert ws.classes() == CLASSES
    plan["actions"].append({"id": "a9000", "action": "multi_label",
                            "sample_id": _id(ws, "dog/d1.png"), "value": ["dog", "hound"],
                            "detector": "ambiguity", "score": 0.8, "reason": "both",
                            "evidence": {"label": "dog"}})
    apply_plan(ws, plan, only=["a9000"])
    assert ws.marks("multi_label")["value"].tolist() == [["dog", "hound"]]
    assert apply_plan(ws, plan, only=["a9000"])["skipped"] == {"a9000": "already"}


def test_stale_relabel_is_skipped_and_bad_plans_are_refused(planted, tmp_path):
    ws = planted
    plan = make_plan(ws)
    relabel = next(a for a in plan["actions"] if a["action"] == "relabel")
    ws.relabel(relabel["sample_id"], "hound", reason="a person looked")
    result = apply_plan(ws, plan, only=[relabel["id"]])
    assert result["skipped"][relabel["id"]].startswith("stale")
    with pytest.raises(PlanError, match="no action"):
        apply_plan(ws, plan, only=["a7777"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other/9", "actions": []}')
    with pytest.raises(PlanError, match="not a cleaning plan"):
        load_plan(bad)
    with pytest.raises(PlanError, match="No plan file"):
        load_plan(tmp_path / "missing.json")


def test_in_sample_predictions_warn_loudly(planted):
    ws = planted
    samples = ws.samples()
    run = ws.catalog.start_run("train", {"classes": CLASSES, "in_sample": True})
    probs = np.tile([0.9, 0.05, 0.05], (len(samples), 1))
    write_predictions(ws.catalog, run, list(samples["id"]), kind="oof", classes=CLASSES,
                      probs=probs, labels=list(samples["label"]))
    ws.catalog.finish_run(run, {})
    with pytest.warns(InSampleWarning, match="IN-SAMPLE"):
        plan = make_plan(ws, run=run)
    assert plan["params"]["in_sample"] is True


def test_cli_plan_apply_undo(planted):
    ws = planted
    runner = CliRunner()
    result = runner.invoke(app, ["clean", "-w", str(ws.path), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["format"] == PLAN_FORMAT
    first = plan["actions"][0]["id"]
    result = runner.invoke(app, ["clean", "-w", str(ws.path), "--top", "5"])
    assert result.exit_code == 0, result.output
    assert "Most suspicious labels" in result.stdout and "smartset clean apply" in result.stdout
    assert "model 95% 'dog'" in result.stdout  # the short evidence of cat/c0
    result = runner.invoke(app, ["clean", "-w", str(ws.path), "--apply", plan["path"],
                                 "--only", first, "--version", "v-clean", "--json"])
    assert result.exit_code == 0, result.output
    applied = json.loads(result.stdout)
    assert list(applied["applied"]) == [first] and applied["version"] == "v-clean"
    result = runner.invoke(app, ["clean", "-w", str(ws.path), "--undo", str(applied["run_id"])])
    assert result.exit_code == 0, result.output
    assert "Reverted 1 label event" in result.stdout
    result = runner.invoke(app, ["clean", "-w", str(ws.path), "--apply", "nope.json"])
    assert result.exit_code == 1 and "No plan file" in " ".join(result.output.split())
    result = runner.invoke(app, ["clean", "imbalance", "-w", str(ws.path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"cat": 6, "dog": 6, "hound": 6}


def test_cli_without_predictions_says_what_to_run(ws):
    result = CliRunner().invoke(app, ["clean", "-w", str(ws.path)])
    assert result.exit_code == 1 and "smartset predict --oof" in " ".join(result.output.split())


def test_oversampling_the_minority_class_makes_a_new_version(ws, tmp_path, fixtures):
    from smartset.clean import oversample

    root = tmp_path / "src"
    for cls, count in {"cat": 6, "dog": 2}.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            shutil.copy(fixtures / "good.png", root / cls / f"{i}.png")
    ws.ingest(root, engine="serial", show_progress=False)
    result = oversample(ws, policy="rotation", name="balanced", seed=0)
    assert result["copies_per_sample"] == {"cat": 0, "dog": 2}
    assert result["n_augmented"] == 4 and result["n_samples"] == 12
    counts = ws.samples("balanced")["label"].value_counts().to_dict()
    assert counts == {"cat": 6, "dog": 6}
    assert set(ws.lineage()["stage"]) == {"oversample"}
    assert len(ws.samples(include_excluded=True)) == 12  # copies are new samples; none removed


def test_cli_reduce_without_an_audit_says_what_to_run(planted):
    result = CliRunner().invoke(app, ["clean", "reduce", "-w", str(planted.path)])
    assert result.exit_code == 1, result.output
    assert "smartset audit" in " ".join(result.output.split())


def test_label_actions_relabel_only_a_convincing_suggestion():
    """A flagged label is relabeled when its suggested class is likely enough, excluded
    when no class is, and marked multi-label when the image is split between its label and
    another; most suspicious first."""
    from smartset.clean import Ambiguity, CleanInputError, Consensus, label_actions

    posterior = np.array([[0.05, 0.90, 0.05],   # labeled 0, clearly 1: relabel
                          [0.20, 0.45, 0.35],   # labeled 0, not clearly anything: exclude
                          [0.48, 0.50, 0.02],   # labeled 0, split 0/1: multi-label
                          [0.90, 0.05, 0.05]])  # labeled 0 and right: not flagged
    labels = np.zeros(4, dtype=int)
    found = Consensus(is_issue=np.array([True, True, True, False]),
                      score=1 - posterior[:, 0], suggested=np.array([1, 1, 1, 1]),
                      posterior=posterior, model_probs=posterior, knn_probs=None, flags={},
                      disagreement=None, n_estimated=3)
    assert label_actions(labels, found) == [(0, "relabel", 1), (1, "exclude", None),
                                            (2, "exclude", None)]
    assert label_actions(labels, found, min_relabel_posterior=0.4) == [
        (0, "relabel", 1), (1, "relabel", 1), (2, "relabel", 1)]
    split = Ambiguity(is_ambiguous=np.array([False, False, True, False]), score=np.zeros(4),
                      classes=np.array([[1, 0]] * 4), margin=np.zeros(4), entropy=np.zeros(4),
                      knn_split=None, suggestion=np.array(["", "", "multi_label", ""]))
    assert label_actions(labels, found, split)[2] == (2, "multi_label", [0, 1])
    with pytest.raises(CleanInputError, match="min_relabel_posterior"):
        label_actions(labels, found, min_relabel_posterior=1.5)
