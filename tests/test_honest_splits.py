"""Honest numbers (#17): augmented copies never inflate a score, resumed runs keep their own
settings, and the leakage guard helps instead of blocking.

Each test reproduces, small, a path that gave a wrong number without saying so: copies of
held-out samples scored (or trained on) as if they were new samples, a copy of a training
image in the hold-out, a resumed run on other data, an overlap counted silently by
``train`` and then refused by ``evaluate`` without a way to score the rest.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.augment.offline import augment_version  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn import LeakageError, LearnError, evaluate, predict_oof, train  # noqa: E402
from smartset.learn._workspace import duplicate_groups, run_dir  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"
runner = CliRunner()
FAST = dict(model="small_cnn", epochs=1, batch_size=32, progress=False)


def cli(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def cli_json(*args):
    output = cli(*args, "--json").output
    return json.loads(output[output.index("{"):])


def digits_ws(root: Path, n: int, *, n_test: int = 0, leak: int = 0, seed: int = 0):
    """``n`` shipped digits as a workspace; the last ``n_test`` form a test split, the first
    ``leak`` of which are exact copies (same pixels, same label) of training digits."""
    with np.load(DIGITS) as data:
        order = np.random.default_rng(seed).permutation(len(data["labels"]))[:n]
        images, labels = data["images"][order].copy(), data["labels"][order].copy()
    arrays = {"images": images, "labels": labels}
    if n_test:
        first_test = n - n_test
        images[first_test:first_test + leak] = images[:leak]
        labels[first_test:first_test + leak] = labels[:leak]
        arrays["split"] = np.array(["train"] * first_test + ["test"] * n_test)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "digits.npz", **arrays)
    ws = smartset.init(root / "ws")
    ws.ingest(root / "digits.npz", show_progress=False)
    return ws


def held_out_ids(ws, run_id) -> set:
    return set(ws.predictions(kind="eval", run=run_id).sample_ids)


# -- augmented copies ----------------------------------------------------------------------
def test_held_out_accuracy_is_the_same_with_and_without_augmented_copies(tmp_path):
    ws = digits_ws(tmp_path, 240)
    ws.create_version("original")
    before = train(ws, "original", seed=0, **FAST)
    augment_version(ws, policy="rotation", factor=3, engine="serial", show_progress=False)
    assert len(ws.samples()) == 3 * 240  # the copies joined the live catalog

    # The same model, evaluated on its held-out samples of the live catalog: the copies of
    # its own training images and of its test images are not scored again.
    scored = cli_json("evaluate", before["run_id"], "-w", ws.path, "--held-out")
    assert scored["n"] == before["test"]["n"]
    assert scored["accuracy"] == pytest.approx(before["test"]["accuracy"])
    assert scored["left_out"]["derived"] == 2 * 240
    assert scored["leakage"]["n"] == 0

    # A new run on the live catalog holds out the very same originals: a copy never lands
    # on the other side of its original.
    after = train(ws, seed=0, **FAST)
    assert held_out_ids(ws, after["run_id"]) == held_out_ids(ws, before["run_id"])
    trained = set(json.loads((run_dir(ws, after["run_id"]) / "train_ids.json").read_text()))
    assert len(trained) == 3 * len(trained - set(ws.lineage()["sample_id"]))
    ws.close()


def test_augment_run_on_a_version_with_a_test_split_augments_only_train(tmp_path):
    ws = digits_ws(tmp_path, 150, n_test=50)
    made = cli_json("augment", "run", "-w", ws.path, "--policy", "rotation", "--factor", "3",
                    "--engine", "serial", "--name", "x3")
    assert made["n_augmented"] == 2 * 100 and made["n_kept_as_is"] == 50
    assert made["augmented_splits"] == ["train"] and made["n_samples"] == 150 + 200
    origins = ws.samples("x3").set_index("id")
    copies = origins[origins["origin_id"].notna()]
    assert set(origins.loc[copies["origin_id"], "split"]) == {"train"}

    # Asked for, the test split is augmented too; such a version (what 'augment run' wrote
    # before) still scores only the 50 real test digits, the number evaluate gives.
    every = augment_version(ws, policy="rotation", factor=3, splits="all", name="all-x3",
                            engine="serial", show_progress=False)
    assert every["n_augmented"] == 2 * 150
    run = train(ws, "all-x3", seed=0, **FAST)
    assert run["config"]["n_test"] == 50 and run["test"]["n"] == 50
    real = evaluate(ws, run["run_id"], "x3", split="test")
    assert real["n"] == 50 and real["accuracy"] == pytest.approx(run["test"]["accuracy"])
    every_frame = ws.samples("all-x3")
    test_copies = every_frame[every_frame["origin_id"].notna() & (every_frame["split"] == "test")]
    with pytest.raises(LearnError, match="--include-derived"):
        evaluate(ws, run["run_id"], "all-x3", sample_ids=list(test_copies["id"]))
    assert evaluate(ws, run["run_id"], "all-x3", split="test", include_derived=True)["n"] == 150

    # stats and samples say which samples are copies
    stats = cli_json("stats", "-w", ws.path, "--no-plots")
    assert stats["n_samples"] == 150 + 200 + 300 and stats["n_original"] == 150
    assert stats["derived"]["n"] == 500 and stats["derived"]["splits"] == {"test": 100,
                                                                           "train": 400}
    listing = cli("samples", "-w", ws.path, "--limit", "0").output
    assert "derived from" in listing and "500 derived" in listing
    ws.close()


def test_oversampling_copies_only_training_samples(tmp_path):
    from smartset.clean.imbalance import oversample

    ws = digits_ws(tmp_path, 120, n_test=40)
    result = oversample(ws, policy="rotation", name="over", engine="serial")
    frame = ws.samples("over").set_index("id")
    copies = frame[frame["origin_id"].notna()]
    assert len(copies) == result["n_augmented"] > 0
    assert set(frame.loc[copies["origin_id"], "split"]) == {"train"}
    assert result["n_kept_as_is"] == 40
    train_counts = frame[frame["split"] == "train"]["label"].value_counts()
    assert train_counts.nunique() == 1  # every class of the training split at the target
    ws.close()


def test_folds_keep_a_lineage_group_together(tmp_path):
    ws = digits_ws(tmp_path, 60)
    augment_version(ws, policy="rotation", factor=3, engine="serial", show_progress=False)
    lineage = ws.lineage()
    groups = dict(zip(ws.samples()["id"], duplicate_groups(ws, ws.samples()["id"])))
    assert all(groups[c] == groups[o] for c, o in zip(lineage["sample_id"], lineage["origin_id"]))

    result = predict_oof(ws, model="small_cnn", folds=3, epochs=1, progress=False)
    oof = ws.predictions(run=result["run_id"])
    fold = dict(zip(oof.sample_ids, oof.folds))
    assert len(fold) == 180
    assert result["oof"]["n_scored"] == 60 and result["oof"]["derived_not_scored"] == 120
    assert all(fold[c] == fold[o] for c, o in zip(lineage["sample_id"], lineage["origin_id"]))
    ws.close()


# -- resumed runs --------------------------------------------------------------------------
def test_resume_restores_the_run_config_and_refuses_a_conflicting_flag(tmp_path):
    ws = digits_ws(tmp_path, 200)
    ws.create_version("small", sample_ids=list(ws.samples()["id"][:120]))
    first = train(ws, "small", model="small_cnn", epochs=2, batch_size=16, seed=3,
                  test_fraction=0.25, progress=False)

    resumed = cli_json("train", "-w", ws.path, "--resume", first["run_id"])
    assert resumed["run_id"] == first["run_id"]
    for key in ("version", "model", "size", "mode", "n_train", "n_test", "test_fraction"):
        assert resumed["config"][key] == first["config"][key], key
    assert resumed["config"]["options"]["epochs"] == 2
    assert resumed["test"]["accuracy"] == pytest.approx(first["test"]["accuracy"])
    assert held_out_ids(ws, first["run_id"]) == held_out_ids(ws, resumed["run_id"])

    refused = cli("train", "-w", ws.path, "--resume", first["run_id"], "--epochs", "5",
                  "--version", "small", code=1).output
    assert "--epochs 5" in refused and "(run" in refused and "2)" in refused
    with pytest.raises(LearnError, match="--model lenet"):
        train(ws, resume_run=first["run_id"], model="lenet", progress=False)

    # A run on the live catalog is not resumed on other data: copies added since change it.
    live = train(ws, seed=0, **FAST)
    augment_version(ws, policy="rotation", factor=2, engine="serial", show_progress=False)
    with pytest.raises(LearnError, match=r"trained on \d+ samples of the live catalog"):
        train(ws, resume_run=live["run_id"], progress=False)
    ws.close()


# -- the leakage guard ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """A version whose test split (40 digits) holds 6 exact copies of training digits, and
    a model trained on it."""
    ws = digits_ws(tmp_path_factory.mktemp("leaky"), 160, n_test=40, leak=6)
    run = train(ws, seed=0, **FAST)
    yield ws, run
    ws.close()


def test_train_reports_the_overlap_it_will_later_refuse(leaky):
    ws, run = leaky
    assert run["leakage"]["n"] == 6 and run["leakage"]["duplicates"] == 6
    assert run["test"]["n"] == 34 and run["test_with_leaked"]["n"] == 40
    assert run["config"]["n_test_leaked"] == 6
    with pytest.raises(LeakageError, match="6 of the 40 evaluated samples"):
        evaluate(ws, run["run_id"], split="test")
    shown = cli("train", "-w", ws.path, "--model", "small_cnn", "--epochs", "1").output
    assert "overlap: 6 held-out samples copy training samples" in " ".join(shown.split())


def test_evaluate_exclude_leaked_scores_the_rest_and_says_how_many(leaky):
    ws, run = leaky
    refused = cli("evaluate", run["run_id"], "-w", ws.path, "--split", "test", code=1).output
    assert "--exclude-leaked" in refused and "--split test" not in refused
    result = cli_json("evaluate", run["run_id"], "-w", ws.path, "--split", "test",
                      "--exclude-leaked")
    assert result["n"] == 34 and result["left_out"]["copies_of_trained"] == 6
    assert result["leakage"]["excluded"] == 6 and result["leakage"]["n"] == 0
    assert result["accuracy"] == pytest.approx(run["test"]["accuracy"])
    shown = cli("evaluate", run["run_id"], "-w", ws.path, "--split", "test",
                "--exclude-leaked").output
    assert "left out: 6 copies or duplicates" in " ".join(shown.split())


# -- transfer at another size --------------------------------------------------------------
def test_init_from_a_checkpoint_at_another_size_where_the_architecture_allows(tmp_path):
    import cv2

    from smartset.learn import ImageClassifier
    from smartset.learn.estimator import load_checkpoint

    with np.load(DIGITS) as data:
        images, labels = data["images"][:120], data["labels"][:120]
    big = np.stack([cv2.resize(i, (36, 36), interpolation=cv2.INTER_AREA) for i in images])
    options = dict(epochs=1, batch_size=32, seed=0, progress=False)
    for model in ("resnet", "small_cnn"):
        ImageClassifier(model, **options).fit(images, labels).save(tmp_path / f"{model}.pt")

    # resnet ends in global pooling: its backbone serves 36x36 digits as well as 28x28
    moved = ImageClassifier("resnet", init_from=tmp_path / "resnet.pt", **options).fit(big, labels)
    assert moved.input_shape_ == (1, 36, 36)
    moved.save(tmp_path / "moved.pt")
    again = load_checkpoint(tmp_path / "moved.pt")
    np.testing.assert_allclose(again.predict_proba(big), moved.predict_proba(big), atol=1e-5)

    # small_cnn at 28 px flattens a 7x7 grid: one line says which size to use
    with pytest.raises(LearnError, match=r"flatten layer.*--size 28"):
        ImageClassifier("small_cnn", init_from=tmp_path / "small_cnn.pt",
                        **options).fit(big, labels)


def test_annotations_augment_copies_only_the_training_split(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from detection_helpers import imported

    from smartset import detection as det

    ws, _ = imported(tmp_path, n=6)
    test_ids = list(ws.samples()["id"][:2])
    with ws.catalog.write() as con:  # two images form the test split
        con.executemany("UPDATE samples SET split = 'test' WHERE id = ?", [(i,) for i in test_ids])
    result = det.expand_version(ws, policy="detection-basic", factor=3, name="x3", seed=0)
    assert result["n_augmented"] == 2 * 4 and result["n_kept_as_is"] == 2
    frame = ws.samples("x3").set_index("id")
    copies = frame[frame["origin_id"].notna()]
    assert not set(copies["origin_id"]) & set(test_ids) and len(frame) == 6 + 8
    pinned, live = det.annotations(ws, "x3"), det.annotations(ws)
    assert (pinned["sample_id"].isin(test_ids).sum() == live["sample_id"].isin(test_ids).sum())
