"""How far to trust a cleaning plan (#17): the plan's trust section, ``clean rounds``
refusing a weak class unless forced and applying only what clears the evidence bar, and one
ranking of every labeled sample, in the CLI (``clean --top N``) and the review queue.

Real digits: 400 of the 1,000 MNIST digits shipped in ``examples/data/digits.npz`` (the
0s, 1s, 3s and 5s), ingested from the archive. The out-of-fold predictions are written, not
trained, so each test knows what the model says: right and confident on every digit,
except that it calls 45% of the 3s "5" (the model is weak for "3"); 6 of the 1s are
labeled "0" (planted wrong labels that both views see through).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import smartset
from smartset.cli import app
from smartset.clean import (PlanError, assess_trust, automatic_actions, clean_rounds,
                            make_plan, ranking)
from smartset.clean.trust import THRESHOLDS, warning_lines
from smartset.predictions import write_predictions
from smartset.review.queues import list_queues, queue_entries

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"
KEEP = (0, 1, 3, 5)
PLANTED = 6       # 1s labeled "0"
WEAK_SHARE = 0.45  # of the 3s the model calls "5"


@pytest.fixture
def digits(tmp_path):
    """A workspace of 400 real digits; ``true`` by row of the archive it was ingested from."""
    with np.load(DIGITS) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    rows = np.flatnonzero(np.isin(labels, KEEP))
    true = labels[rows]
    given = true.copy()
    given[np.flatnonzero(true == 1)[:PLANTED]] = 0
    np.savez(tmp_path / "digits.npz", images=images[rows], labels=given)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "digits.npz", show_progress=False)
    yield ws, true
    ws.close()


def _row(relpath: str) -> int:
    return int(Path(relpath).stem)


def write_oof(ws, true, version=None, *, seed=0):
    """Out-of-fold predictions as a finished run: 0.92 on the true class, except for 45% of
    the 3s, where 0.92 goes to "5"."""
    samples = ws.samples(version)
    samples = samples[samples["label"].notna()]
    classes = [str(c) for c in KEEP]
    rng = np.random.default_rng(seed)
    threes = np.flatnonzero(true == 3)
    fooled = set(threes[:int(round(WEAK_SHARE * len(threes)))].tolist())
    probs = np.full((len(samples), len(classes)), 0.08 / (len(classes) - 1))
    for n, relpath in enumerate(samples["relpath"]):
        row = _row(relpath)
        said = 5 if row in fooled else int(true[row])
        probs[n, classes.index(str(said))] = 0.92
    run = ws.catalog.start_run("predict --oof", {"classes": classes, "oof": True})
    write_predictions(ws.catalog, run, list(samples["id"]), kind="oof", classes=classes,
                      probs=probs, labels=list(samples["label"]),
                      folds=rng.integers(0, 5, len(samples)))
    ws.catalog.finish_run(run, {"oof": {"accuracy": float(np.mean(
        probs.argmax(1) == [classes.index(str(v)) for v in samples["label"]]))}})
    return run


def test_trust_numbers_per_class_from_known_arrays():
    labels = np.array([0] * 20 + [1] * 20)
    model = np.zeros((40, 2))
    model[np.arange(40), labels] = 1.0
    model[:6] = [0.1, 0.9]                  # 6 of the 0s the model calls 1
    view = np.zeros((40, 2))
    view[np.arange(40), labels] = 1.0
    view[:2] = [0.2, 0.8]                   # the view agrees on 2 of those 6
    flagged = np.zeros(40, bool)
    flagged[:6] = True
    trust = assess_trust(labels, model, view, classes=["a", "b"], view={"description": "test"},
                         flagged=flagged, suggested=np.ones(40, int))
    a, b = trust["classes"]["a"], trust["classes"]["b"]
    assert (a["n"], a["correct"], a["recall"]) == (20, 14, 0.7)
    assert (a["agree"], a["agreement"]) == (16, 0.8)           # 14 both 0, 2 both 1
    assert (b["n_predicted"], b["precision"]) == (26, round(20 / 26, 4))
    assert a["verdict"] == "weak" and b["verdict"] == "trusted" and trust["weak"] == ["a"]
    assert any("agree on 80%" in why for why in a["why"])
    assert trust["flagged"] == {"n": 6, "views_agree_on_suggestion": 2, "rate": 0.3333,
                                "model_says_suggestion": 6, "view_says_suggestion": 2}
    assert trust["thresholds"] == THRESHOLDS
    assert len(warning_lines(trust)) == 1 and "class 'a'" in warning_lines(trust)[0]
    # without an independent view nothing checks the model: every class is weak
    blind = assess_trust(labels, model, None, classes=["a", "b"], view={})
    assert blind["weak"] == ["a", "b"]


def test_plan_carries_trust_and_the_cli_warns_per_weak_class(digits):
    ws, true = digits
    write_oof(ws, true)
    plan = make_plan(ws)
    trust = plan["trust"]
    threes = int((true == 3).sum())
    three = trust["classes"]["3"]
    assert three["n"] == threes
    assert three["correct"] == threes - int(round(WEAK_SHARE * threes))
    assert three["verdict"] == "weak"
    assert trust["second_view"]["source"] == "pixels"  # digits: the pixels, not the model
    assert trust["classes"]["1"]["verdict"] == "trusted"
    assert trust["classes"]["1"]["n"] == int((true == 1).sum()) - PLANTED
    assert json.loads(Path(plan["path"]).read_text())["trust"] == trust  # persisted
    # each label action says what the two views say
    relabels = [a for a in plan["actions"] if a["action"] == "relabel"]
    planted = [a for a in relabels if a["evidence"]["label"] == "0"
               and a["value"] == "1"]
    assert len(planted) == PLANTED
    both = [a for a in planted
            if a["evidence"]["model_says_suggested"] and a["evidence"]["view_says_suggested"]]
    assert len(both) >= PLANTED - 1  # the pixels see most planted 1s as 1s
    fooled = [a for a in relabels if a["evidence"]["label"] == "3"]
    assert len(fooled) >= 40
    assert sum(a["evidence"]["view_says_suggested"] for a in fooled) <= 2  # the 3s look like 3s
    result = CliRunner().invoke(app, ["clean", "-w", str(ws.path), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "WARNING: class '3' is weak" in " ".join(result.output.split())
    # the review app's plan queue says so in its header
    titles = {q["id"]: q["title"] for q in list_queues(ws)}
    assert "WEAK for '3'" in titles[f"plan:clean.plan.{plan['run_id']}"]


def test_rounds_refuse_a_weak_class_and_force_applies_only_the_bar(digits, monkeypatch):
    ws, true = digits
    import smartset.learn._workspace as learn_ws

    def fake_predict_oof(ws_, version=None, *, seed=0, **_):
        run = write_oof(ws_, true, version, seed=seed)
        return {"run_id": run, "oof": {"accuracy": 0.9}}

    monkeypatch.setattr(learn_ws, "predict_oof", fake_predict_oof)
    labels_before = dict(zip(ws.samples()["id"], ws.samples()["label"]))
    with pytest.raises(PlanError) as refused:
        clean_rounds(ws, rounds=1, name="auto", augment=None, progress=False)
    message = str(refused.value)
    assert "weak" in message and "'3'" in message and "--force" in message
    assert "agree on" in message  # the numbers
    assert dict(zip(ws.samples()["id"], ws.samples()["label"])) == labels_before
    assert "auto" not in set(ws.versions()["name"])
    # the CLI says the same in one line, exit 1
    result = CliRunner().invoke(app, ["clean", "rounds", "-w", str(ws.path), "--rounds", "1",
                                      "--name", "cli", "--augment", "none"])
    assert result.exit_code == 1 and "--force" in " ".join(result.output.split())
    # forced: only the actions that clear the bar, i.e. the planted 1s labeled "0"
    result = clean_rounds(ws, rounds=1, name="forced", augment=None, force=True,
                          progress=False)
    record = result["rounds"][0]
    assert record["forced"] and "3" in record["weak_classes"]
    assert set(record["applied"]) == {"relabel"}
    assert sum(record["held_back"].values()) >= 40  # the 3s the model calls 5 stay proposals
    after = ws.samples("forced")
    truth = {sid: str(true[_row(rel)]) for sid, rel in zip(after["id"], after["relpath"])}
    changed = [sid for sid, lab in zip(after["id"], after["label"]) if labels_before[sid] != lab]
    fixed = [sid for sid in changed if labels_before[sid] == "0" and truth[sid] == "1"]
    broken = [sid for sid in changed if truth[sid] != ws.samples("forced").set_index("id")
              .loc[sid, "label"]]
    assert len(fixed) >= PLANTED - 1 and len(broken) <= 1  # before #17: 45 3s made 5s


def test_bar_keeps_relabels_one_view_disputes():
    plan = {"trust": {"weak": [], "apply_posterior": 0.8},
            "actions": [
                {"id": "a1", "action": "relabel", "value": "b", "detector": "consensus",
                 "evidence": {"label": "a", "posterior_suggested": 0.95, "view_p_label": 0.1,
                              "model_says_suggested": True, "view_says_suggested": True}},
                {"id": "a2", "action": "relabel", "value": "b", "detector": "consensus",
                 "evidence": {"label": "a", "posterior_suggested": 0.95, "view_p_label": 0.9,
                              "model_says_suggested": True, "view_says_suggested": False}},
                {"id": "a3", "action": "relabel", "value": "b", "detector": "consensus",
                 "evidence": {"label": "a", "posterior_suggested": 0.7, "view_p_label": 0.1,
                              "model_says_suggested": True, "view_says_suggested": True}},
                {"id": "a4", "action": "exclude", "value": None, "detector": "consensus",
                 "evidence": {"label": "a", "posterior_suggested": 0.4, "view_p_label": 0.1,
                              "model_rejects_label": True, "view_rejects_label": False}},
                {"id": "a5", "action": "exclude", "value": None, "detector": "atypical",
                 "evidence": {"label": "a"}}]}
    chosen, held = automatic_actions(plan)
    assert [a["id"] for a in chosen] == ["a1"]
    assert set(held) == {"a2", "a3", "a4"}
    assert "0.70 < 0.80" in held["a3"]
    assert held["a4"].startswith("exclude")  # excludes are for a person
    # where the plan estimates few wrong labels, even a relabel both views back waits
    plan["trust"]["classes"] = {"a": {"noise_rate": 0.005}}
    chosen, held = automatic_actions(plan)
    assert chosen == [] and "few wrong labels" in held["a1"]
    plan["trust"]["classes"] = {"a": {"noise_rate": 0.05}}
    plan["trust"]["weak"] = ["b"]
    assert automatic_actions(plan)[0] == []
    assert [a["id"] for a in automatic_actions(plan, force=True)[0]] == ["a1"]


def test_top_n_lists_the_whole_ranking_with_files_and_rows_and_the_queue_follows_it(digits):
    ws, true = digits
    write_oof(ws, true)
    runner = CliRunner()
    result = runner.invoke(app, ["clean", "-w", str(ws.path), "--top", "60", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    listed = plan["ranking"]
    flagged = sum(1 for a in plan["actions"] if a["detector"] == "consensus")
    assert len(listed) == 60 > flagged                # beyond the flagged set
    scores = [r["score"] for r in listed]
    assert scores == sorted(scores, reverse=True)      # one scale, most suspicious first
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [r["rank"] for r in listed] == list(range(1, 61))
    assert any(not r["flagged"] and r["detector"] == "-" for r in listed)
    first = listed[0]
    assert first["relpath"].endswith(".png") and Path(first["path"]).is_file()
    assert first["array"].endswith("digits.npz") and first["row"] == _row(first["relpath"])
    assert {"score", "detector", "suggested", "label"} <= set(first)
    # the table shows the files with their array rows
    text = runner.invoke(app, ["clean", "-w", str(ws.path), "--top", "5"],
                         env={"COLUMNS": "200"}).output
    assert "digits.npz row" in " ".join(text.split())
    # the review queue: every labeled sample, in the order of the ranking
    whole = ranking(ws)
    assert len(whole) == len(ws.samples())
    entries = queue_entries(ws, "suspicious")
    assert [e["sample_id"] for e in entries] == [r["sample_id"] for r in whole]
    assert entries[-1]["suggested"] is None and entries[0]["score"] >= entries[-1]["score"]
