"""The learning stage over a workspace and through the CLI: runs, checkpoints, out-of-fold
predictions in the catalog, the leakage guard, and bad versions."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn import LeakageError, LearnError, evaluate, predict_oof, train  # noqa: E402
from smartset.learn._workspace import duplicate_groups, read_oof_features  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"
runner = CliRunner()


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory):
    """400 of the shipped digits as a workspace, with one exact duplicate of a digit."""
    root = tmp_path_factory.mktemp("digits")
    with np.load(DIGITS) as data:
        order = np.random.default_rng(0).permutation(len(data["labels"]))[:400]
        np.savez(root / "digits.npz", images=data["images"][order], labels=data["labels"][order])
    ws = smartset.init(root / "ws")
    ws.ingest(root / "digits.npz", show_progress=False)
    yield ws
    ws.close()


def test_train_records_the_run_checkpoint_and_held_out_predictions(digits_ws):
    ws = digits_ws
    result = train(ws, model="small_cnn", epochs=2, seed=1, progress=False)
    runs = ws.runs().set_index("id")
    record = runs.loc[result["run_id"]]
    assert record["status"] == "done" and record["seed"] == 1
    n_test = record["config"]["n_test"]
    assert record["config"]["model"] == "small_cnn" and 75 <= n_test <= 85
    assert "torch" in record["software"]
    assert [h["epoch"] for h in record["metrics"]["history"]] == [1, 2]
    assert (ws.path / result["checkpoint"]).is_file()
    assert result["test"]["accuracy"] > 0.5
    assert Path(result["test"]["confusion_png"]).is_file()
    held = ws.predictions(kind="eval", run=result["run_id"])
    assert len(held) == n_test and held.probs.shape == (n_test, 10)
    trained = set(json.loads((ws.path / "models" / f"run-{result['run_id']}" /
                              "train_ids.json").read_text()))
    assert not trained & set(held.sample_ids)  # held out means held out

    with pytest.raises(LeakageError, match=f"{400 - n_test} of the 400 evaluated samples were seen"):
        evaluate(ws, result["run_id"])
    forced = evaluate(ws, result["run_id"], force=True, shifts=["darker"])
    assert forced["leakage"]["n"] == forced["leakage"]["same_sample"] == 400 - n_test
    assert [r["condition"] for r in forced["robustness"]] == ["original", "darker"]
    clean = evaluate(ws, result["run_id"], sample_ids=list(held.sample_ids))
    assert clean["leakage"]["n"] == 0
    assert clean["accuracy"] == pytest.approx(result["test"]["accuracy"])


def test_out_of_fold_predictions_and_features_are_stored_for_every_sample(digits_ws):
    ws = digits_ws
    result = predict_oof(ws, model="small_cnn", folds=3, epochs=2, progress=False)
    oof = ws.predictions()
    assert oof.run_id == result["run_id"] and not oof.in_sample
    assert len(oof) == 400 and set(oof.folds) == {0, 1, 2}
    np.testing.assert_allclose(oof.probs.sum(1), 1.0, atol=1e-5)
    assert oof.classes == [str(d) for d in range(10)]
    ids, features = read_oof_features(ws)
    assert sorted(ids) == sorted(oof.sample_ids) and features.shape == (400, 128)
    assert result["oof"]["accuracy"] > 0.5


def test_duplicates_share_a_group_and_a_side_of_the_split(tmp_path, fixtures):
    root = tmp_path / "src"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 20 * i + (100 if cls == "b" else 0), np.uint8)).save(
                root / cls / f"{i}.png")
    shutil.copy(root / "a" / "0.png", root / "b" / "copy_of_a0.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, show_progress=False)
    samples = ws.samples().set_index("relpath")
    groups = dict(zip(samples["id"], duplicate_groups(ws, samples["id"])))
    assert groups[samples.loc["a/0.png", "id"]] == groups[samples.loc["b/copy_of_a0.png", "id"]]
    assert groups[samples.loc["a/1.png", "id"]] != groups[samples.loc["a/0.png", "id"]]


def test_splits_and_folds_do_not_depend_on_where_the_data_lies(tmp_path, fixtures):
    # A sample id hashes its root's absolute path (data outside the workspace): the same
    # files at two locations must still give the same seeded hold-out and folds.
    from smartset.learn._splits import _group_folds, split_holdout
    from smartset.learn.data import load_version
    from smartset.learn.multilabel import group_folds

    answers = []
    for where in ("a", "somewhere/much/deeper"):
        root = tmp_path / where / "data"
        for cls in ("x", "y"):
            (root / cls).mkdir(parents=True)
            for i in range(10):
                Image.fromarray(np.full((8, 8), 10 * i + (120 if cls == "y" else 0),
                                        np.uint8)).save(root / cls / f"{i}.png")
        ws = smartset.init(tmp_path / where / "ws")
        ws.ingest(root, show_progress=False)
        data = load_version(ws, cache=False, progress=False)
        groups = duplicate_groups(ws, data.ids)
        train_rows, test_rows, _ = split_holdout(data, groups, test_fraction=0.3, seed=3)
        relpaths = ws.samples().set_index("id")["relpath"]
        names = [relpaths[i] for i in data.ids]
        codes = np.unique(data.labels, return_inverse=True)[1]
        answers.append((sorted(names[r] for r in test_rows),
                        dict(zip(names, _group_folds(codes, groups, 3, 3).tolist())),
                        dict(zip(names, group_folds(len(names), 3, groups=groups,
                                                    seed=3).tolist()))))
    assert len(set(answers[0][0]) & set(answers[1][0])) == len(answers[0][0]) > 0
    assert answers[0][1] == answers[1][1] and answers[0][2] == answers[1][2]


def test_bad_versions_get_clear_errors(tmp_path, fixtures):
    root = tmp_path / "one-class" / "cat"
    root.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / f"{i}.png")
    Image.fromarray(np.zeros((20, 12), np.uint8)).save(root / "odd.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root.parent, show_progress=False)
    # images of two sizes: a size is chosen and said (photos without flags), then the
    # single class is the error
    with pytest.raises(LearnError, match="at least two classes"):
        train(ws, progress=False)
    with pytest.raises(LearnError, match="at least two classes"):
        train(ws, size=16, progress=False)
    unlabeled = smartset.init(tmp_path / "ws2")
    unlabeled.ingest(root, layout="unlabeled", show_progress=False)
    with pytest.raises(LearnError, match="No labeled samples"):
        train(unlabeled, progress=False)
    runs = ws.runs()
    assert runs.loc[runs["command"] == "train", "status"].tolist() == ["failed", "failed"]  # recorded


def test_cli_train_predict_evaluate_baseline_and_models(digits_ws, tmp_path):
    w = digits_ws.path
    models = json.loads(run("models", "--json").stdout)
    assert set(models) >= {"lenet", "network3", "small_cnn", "resnet"}
    baseline = json.loads(run("baseline", "-w", w, "--json").stdout)
    names = [b["baseline"] for b in baseline["baselines"]]
    assert names[0] == "most_frequent" and any(n.startswith("knn_pixels") for n in names)
    trained = json.loads(run("train", "-w", w, "--model", "lenet", "--epochs", "1",
                             "--json").stdout)
    run_id = trained["run_id"]
    leaked = run("evaluate", run_id, "-w", w, code=1)
    assert "seen in training" in leaked.output and "--force" in leaked.output
    held = json.loads(run("evaluate", "last", "-w", w, "--held-out", "--json").stdout)
    assert held["n"] == trained["config"]["n_test"] and held["leakage"]["n"] == 0
    shown = run("evaluate", run_id, "-w", w, "--force", "--shift", "blurred")
    assert "LEAKAGE" in shown.output and "blurred" in shown.output
    oof = run("predict", "-w", w, "--oof", "--folds", "2", "--epochs", "1")
    assert "out-of-fold probabilities for 400 samples" in oof.output
    unknown = run("train", "-w", w, "--model", "alexnet", code=1)
    assert "Unknown model 'alexnet'" in unknown.output and "lenet" in unknown.output
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"garbage")
    damaged = run("evaluate", broken, "-w", w, code=1)
    assert "damaged or not a smartset checkpoint" in damaged.output


def test_a_checkpoint_for_other_classes_says_how_to_rehead_it(digits_ws, tmp_path):
    ws = digits_ws
    result = train(ws, model="small_cnn", epochs=1, progress=False)
    other = tmp_path / "letters"
    for cls in ("x", "y"):
        (other / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 50 * i, np.uint8)).save(other / cls / f"{i}.png")
    letters = smartset.init(tmp_path / "letters-ws")
    letters.ingest(other, show_progress=False)
    with pytest.raises(LearnError, match="--init-from"):
        evaluate(letters, ws.path / result["checkpoint"])


def test_audit_with_a_trained_model_as_the_embedding(digits_ws):
    from smartset.audit import audit

    from smartset.learn import load_model

    result = train(digits_ws, model="small_cnn", epochs=1, progress=False)
    # the audit is below learn: it takes the loaded model, and says how to load one
    with pytest.raises(ValueError, match="smartset.learn.load_model"):
        audit(digits_ws, embedding_model=result["run_id"], report=False)
    model = load_model(digits_ws, result["run_id"])
    audited = audit(digits_ws, embedding_model=model, report=False)
    assert audited.summary["n_audited"] == 400
    runs = digits_ws.runs()
    assert runs.iloc[-1]["config"]["embedding_model"] == str(result["run_id"])
    assert str(result["run_id"]) in audited.summary["features"]["outlier"]


def test_ensembles_conditions_and_test_time_preprocessing(digits_ws):
    ws = digits_ws
    runs = [train(ws, model="small_cnn", epochs=1, seed=s, progress=False)["run_id"]
            for s in (0, 1)]
    trained = set().union(*(json.loads((ws.path / "models" / f"run-{r}" / "train_ids.json")
                                       .read_text()) for r in runs))
    held = [s for s in ws.samples()["id"] if s not in trained]
    report = evaluate(ws, f"{runs[0]},{runs[1]}", sample_ids=held, positive="7",
                      shifts=["brighter"])
    assert report["leakage"]["n"] == 0 and report["n"] == len(held)
    assert [b["bucket"] for b in report["by_condition"]["brightness"]] == ["low", "medium", "high"]
    assert sum(b["n"] for b in report["by_condition"]["contrast"]) == len(held)
    names = [row["condition"] for row in report["condition_table"]]
    assert names == ["original", "brighter", "low brightness", "medium brightness",
                     "high brightness", "average"]
    # shifted copies and terciles of the same images: counts are not summed (they were
    # 4 x the images before)
    average = report["condition_table"][-1]
    assert average["n"] is None and average["TP"] is None
    assert 0 <= average["recall"] <= 1
    with pytest.raises(LeakageError):
        evaluate(ws, f"{runs[0]},{runs[1]}")  # each member's training samples count
    tuned = evaluate(ws, runs[0], sample_ids=held, preprocess="dacolt")
    assert tuned["accuracy"] != report["accuracy"] or tuned["log_loss"] != report["log_loss"]
    with pytest.raises(LearnError, match="Unknown preprocessing"):
        evaluate(ws, runs[0], sample_ids=held, preprocess="sepia")


def test_a_model_trained_with_dacolt_keeps_its_preprocessing(digits_ws):
    from smartset.learn import load_checkpoint

    result = train(digits_ws, model="small_cnn", epochs=1, preprocess="dacolt", progress=False)
    model = load_checkpoint(digits_ws.path / result["checkpoint"])
    assert model.preprocess_ == "dacolt"
    images = np.zeros((2, 28, 28, 1), np.uint8)
    with_own = model.predict_proba(images)
    model.preprocess_ = None
    assert not np.allclose(with_own, model.predict_proba(images))


def test_cli_study_augment_writes_the_table(digits_ws):
    result = json.loads(run("study", "augment", "-w", digits_ws.path, "--combinations",
                            "original,rotation", "--runs", "1", "--epochs", "1",
                            "--train-size", "100", "--test-size", "50", "--model", "small_cnn",
                            "--json").stdout)
    assert [row["combination"] for row in result["table"]] == ["original", "rotation"]
    assert result["table"][0]["instances"] == 100
    assert Path(result["csv"]).is_file() and Path(result["plot"]).is_file()
    assert "| rotation |" in Path(result["markdown_file"]).read_text()
