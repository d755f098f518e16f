"""Cleaning in rounds on real digits with planted wrong labels: predict --oof -> plan ->
apply the label actions -> a new version, twice; every round undoable; bad arguments
refused before any training."""

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.clean import PlanError, clean_rounds, undo_apply  # noqa: E402
from smartset.augment.errors import UnknownNameError  # noqa: E402

runner = CliRunner()
DIGITS = (1, 4, 7)


@pytest.fixture
def noisy_digits(tmp_path, shared_data):
    """450 real 1s, 4s and 7s; 10% of the 4s labeled 7 and of the 7s labeled 1."""
    with np.load(shared_data / "mnist10k.npz") as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.flatnonzero(labels == d), 150, replace=False)
                           for d in DIGITS])
    rows = rng.permutation(rows)
    true = labels[rows]
    noisy = true.copy()
    for source, wrong in ((4, 7), (7, 1)):
        chosen = np.flatnonzero(true == source)[:15]
        noisy[chosen] = wrong
    np.savez(tmp_path / "digits.npz", images=images[rows], labels=noisy)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "digits.npz", show_progress=False)
    yield ws, true
    ws.close()


def _wrong(ws, version, true) -> int:
    samples = ws.samples(version)
    index = samples["relpath"].str.removesuffix(".png").astype(int).to_numpy()
    return int((samples["label"].astype(int).to_numpy() != true[index]).sum())


def test_two_rounds_leave_fewer_wrong_labels_and_undo_restores_them(noisy_digits):
    ws, true = noisy_digits
    before = _wrong(ws, None, true)
    assert before == 30
    seen = []
    # 3 epochs on 450 digits: the model is weak for a class, so the round is forced (#17:
    # without --force it is refused, tests/test_clean_trust.py); the evidence bar still holds
    result = clean_rounds(ws, rounds=2, name="clean", epochs=3, folds=3, seed=0,
                          force=True, progress=False, on_round=seen.append)
    assert seen == result["rounds"] and 1 <= len(seen) <= 2
    assert result["version"] == "clean"
    first = seen[0]
    assert first["version_in"] is None and first["applied"]
    assert set(first["applied"]) == {"relabel"}  # only relabels clear the bar (#17)
    runs = ws.runs().set_index("id")
    assert runs.loc[first["predict_run"], "config"]["options"]["augment"] == "translation-rotation"
    if len(seen) == 2:
        assert seen[1]["version_in"] == "clean-round1" == first["version"]
    after = _wrong(ws, "clean", true)
    # only relabels that clear the evidence bar (both views, posterior >= 0.9) are applied:
    # fewer than before #17 (it applied every label action), and (nearly) all of them right
    relabeled = sum(record["applied"].get("relabel", 0) for record in seen)
    assert after < before and after <= before - relabeled + 1, (before, after, relabeled)
    assert ws.samples("clean")["id"].isin(ws.samples(None, include_excluded=True)["id"]).all()
    # the plans stay, and nothing outside the label actions was applied
    for record in seen:
        plan = smartset.clean.load_plan(record["plan"])
        assert plan["run_id"] == record["plan_run"]
    for record in reversed(seen):
        undo_apply(ws, record["apply_run"])
    assert _wrong(ws, None, true) == before
    assert ws.marks("exclude").empty


def test_bad_arguments_are_refused_before_training(noisy_digits):
    ws, _ = noisy_digits
    ws.create_version("clean")
    with pytest.raises(PlanError, match="'clean' exist already"):
        clean_rounds(ws, name="clean", rounds=1)
    with pytest.raises(PlanError, match="rounds must be a positive integer"):
        clean_rounds(ws, rounds=0)
    with pytest.raises(PlanError, match="No version 'nope'"):
        clean_rounds(ws, "nope", name="other")
    with pytest.raises(UnknownNameError, match="Unknown policy 'sideways'"):
        clean_rounds(ws, name="other", augment="sideways")
    assert not (ws.runs()["command"] == "predict --oof").any()


def test_cli_runs_one_round(noisy_digits):
    ws, true = noisy_digits
    result = runner.invoke(app, ["clean", "rounds", "-w", str(ws.path), "--rounds", "1",
                                 "--name", "once", "--epochs", "2", "--folds", "3",
                                 "--augment", "none", "--force"])
    assert result.exit_code == 0, result.output
    assert "round 1: out-of-fold accuracy" in result.output
    assert "FORCED past weak class" in " ".join(result.output.split())  # 2 epochs: weak
    assert "Final version 'once' after 1 round(s)" in result.output
    assert _wrong(ws, "once", true) < 30


def test_a_label_a_person_reviewed_is_never_changed(noisy_digits):
    from smartset.review.actions import decide

    ws, true = noisy_digits
    samples = ws.samples()
    index = samples["relpath"].str.removesuffix(".png").astype(int).to_numpy()
    planted = samples["id"][samples["label"].astype(int).to_numpy() != true[index]]
    for sample_id in planted:  # a person looked and kept the (wrong) label
        decide(ws, "accept", sample_id, queue="suspicious")
    result = clean_rounds(ws, rounds=1, name="policy", epochs=3, folds=3, force=True,
                          progress=False)
    record = result["rounds"][0]
    proposed = {a["sample_id"] for a in smartset.clean.load_plan(record["plan"])["actions"]}
    assert proposed & set(planted)  # the plan proposed changing reviewed labels ...
    after = ws.samples("policy", include_excluded=True).set_index("id")["label"]
    before = samples.set_index("id")["label"]
    assert (after.loc[planted] == before.loc[planted]).all()  # ... and none was changed
    assert set(planted) <= set(ws.samples("policy")["id"])  # none excluded either


def test_clean_rounds_refuses_a_traversal_name_before_any_training(tmp_path):
    import smartset
    from smartset._names import InvalidNameError
    from smartset.clean import clean_rounds

    ws = smartset.init(tmp_path / "ws")
    with pytest.raises(InvalidNameError, match="not valid"):
        clean_rounds(ws, name="../../victim")
    assert ws.runs().empty  # refused before any out-of-fold training run was started
