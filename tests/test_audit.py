"""The audit on generated images with known problems, on bad input, and on real photos."""

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

import smartset
from smartset.audit import audit, embeddings, bias_probe
from smartset.audit.bias import error_probe
from smartset import neighbours


def _texture(seed: int, size=(128, 96)) -> Image.Image:
    """A distinct colour image: smooth random fields plus a few hard-edged shapes."""
    rng = np.random.default_rng(seed)
    width, height = size
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(image).copy()
    for _ in range(4):
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        pixels[y:y + rng.integers(8, 20), x:x + rng.integers(8, 20)] = rng.integers(0, 256, 3)
    noise = rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _save(image: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    """40 distinct images per class, plus one known problem of each kind."""
    root = tmp_path_factory.mktemp("problems")
    for i in range(80):
        _save(_texture(i), root / "train" / ("cat" if i < 40 else "dog") / f"img{i:02d}.jpg", quality=92)
    base = _texture(1000)
    arrays = np.asarray(base).astype(np.float32)
    _save(Image.fromarray((arrays * 0.12).astype(np.uint8)), root / "train/cat/dark.jpg")
    _save(Image.fromarray(np.clip(arrays * 0.25 + 215, 0, 255).astype(np.uint8)), root / "train/cat/bright.jpg")
    _save(_texture(1001).filter(ImageFilter.GaussianBlur(6)), root / "train/cat/blurry.jpg")
    _save(Image.new("RGB", (128, 96), (120, 120, 120)), root / "train/dog/flat.png")
    _save(_texture(1002, size=(400, 60)), root / "train/dog/wide.jpg")
    original = _texture(2000)
    _save(original, root / "train/dog/original.png")
    buffer = io.BytesIO()
    original.crop((3, 2, 125, 94)).save(buffer, format="JPEG", quality=40)
    _save(Image.open(buffer), root / "train/dog/recompressed_crop.jpg")
    shutil.copy(root / "train/cat/img00.jpg", root / "train/dog/conflict.jpg")   # other class
    _save(_texture(3000), root / "train/cat/leak.jpg", quality=92)
    (root / "test").mkdir()
    shutil.copy(root / "train/cat/leak.jpg", root / "test/leak_copy.jpg")        # other split
    return root


@pytest.fixture(scope="module")
def audited(tmp_path_factory, problems):
    ws = smartset.init(tmp_path_factory.mktemp("ws") / "ws")
    ws.ingest(problems, show_progress=False, engine="serial")
    result = audit(ws, engine="serial", report=True)
    yield ws, result
    ws.close()


def _flagged(ws, result, kind):
    ids = set(result.findings.loc[result.findings["kind"] == kind, "sample_id"])
    relpaths = ws.samples().set_index("id")["relpath"]
    return {relpaths[i].rsplit("/", 1)[-1] for i in ids if i in relpaths.index}


@pytest.mark.parametrize("kind, name", [
    ("dark", "dark.jpg"), ("bright", "bright.jpg"), ("blurry", "blurry.jpg"),
    ("low_information", "flat.png"), ("odd_aspect_ratio", "wide.jpg"),
])
def test_each_problem_is_found_and_only_it(audited, kind, name):
    ws, result = audited
    assert _flagged(ws, result, kind) == {name}


def test_duplicates_with_their_scope(audited):
    ws, result = audited
    relpaths = ws.samples().set_index("id")["relpath"]
    groups = {frozenset(relpaths[m].rsplit("/", 1)[-1] for m in g["members"]): g
              for g in result.duplicate_groups}
    near = groups[frozenset({"original.png", "recompressed_crop.jpg"})]
    assert near["kind"] == "near_duplicate" and near["scopes"] == ["same class"]
    conflict = groups[frozenset({"img00.jpg", "conflict.jpg"})]
    assert conflict["kind"] == "exact_duplicate" and conflict["scopes"] == ["label conflict"]
    leak = groups[frozenset({"leak.jpg", "leak_copy.jpg"})]
    assert "split leakage" in leak["scopes"]
    assert len(result.duplicate_groups) == 3  # the 80 distinct textures are not duplicates
    assert result.summary["label_conflicts"] == 1 and result.summary["split_leakage"] == 1


def test_findings_are_stored_with_thresholds_and_report(audited):
    ws, result = audited
    stored = ws.catalog.query("SELECT kind, COUNT(*) FROM audit_findings WHERE run_id=? GROUP BY kind",
                              (result.run_id,))
    assert dict((r[0], r[1]) for r in stored) == result.counts()
    assert result.thresholds["dark"]["threshold"] == 0.3
    [artifact] = ws.catalog.query("SELECT path, kind FROM artifacts WHERE name LIKE 'audit.vectors.%'")
    assert artifact["kind"] == "records" and (ws.path / artifact["path"]).stat().st_size > 0
    assert result.thresholds["near_duplicate"]["set_by"] in ("absolute limit", "local density (median shown)")
    page = result.report_path.read_text()
    assert page.startswith("<!doctype html>") and "Near duplicates" in page
    assert "src=\"http" not in page and "src='http" not in page  # self-contained
    document = json.loads(result.json_path.read_text())
    assert len(document["findings"]) == len(result.findings)
    assert {f["relpath"] for f in document["findings"] if f["kind"] == "dark"} == {"train/cat/dark.jpg"}


def test_rerun_measures_only_what_changed(tmp_path, problems):
    source = tmp_path / "src"
    shutil.copytree(problems / "train", source)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(source, engine="serial", show_progress=False)
    first = audit(ws, engine="serial", report=False)
    assert first.computed == len(ws.samples())
    again = audit(ws, engine="serial", report=False)
    assert again.computed == 0
    assert again.counts() == first.counts()
    for i in range(3):
        _save(_texture(5000 + i), source / "cat" / f"new{i}.jpg", quality=92)
    ws.ingest(source, engine="serial", show_progress=False)
    third = audit(ws, engine="serial", report=False)
    assert third.computed == 3 and third.summary["cached"] == len(ws.samples()) - 3
    ws.close()


def test_bad_and_odd_images_do_not_stop_the_audit(tmp_path, fixtures):
    root = tmp_path / "odd"
    root.mkdir()
    for name in ("gray16.png", "cmyk.jpg", "palette.png", "one_pixel.png", "good.jpg", "good.png"):
        shutil.copy(fixtures / name, root / name)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)  # unlabeled, one folder
    shutil.copy(fixtures / "truncated.jpg", root / "good.jpg")  # breaks after ingest
    result = audit(ws, engine="serial", report=True)
    unreadable = result.findings[result.findings["kind"] == "unreadable"]
    assert len(unreadable) == 1 and "good.jpg" in ws.samples().set_index("id").loc[
        unreadable["sample_id"].item(), "relpath"]
    props = result.properties.set_index("relpath")
    assert props.loc["palette.png", "alpha"] == 1 and props.loc["gray16.png", "grayscale"] == 1
    assert props.loc["cmyk.jpg", "grayscale"] == 0
    assert "bias" in result.skipped and "class_imbalance" in result.skipped
    assert result.report_path.exists()
    ws.close()


def test_one_image_and_single_class(tmp_path, fixtures):
    root = tmp_path / "one" / "cat"
    root.mkdir(parents=True)
    shutil.copy(fixtures / "good.jpg", root / "a.jpg")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root.parent, engine="serial", show_progress=False)
    result = audit(ws, engine="serial", report=True)
    assert result.summary["n_audited"] == 1
    assert result.skipped["duplicates"] == "fewer than 2 images"
    assert "needs" in result.skipped["bias"]
    ws.close()


def test_bias_probe_against_the_majority_baseline():
    rng = np.random.default_rng(0)
    n = 600
    labels = np.where(rng.random(n) < 0.7, "bar", "cafe")  # majority 70%
    brightness = np.where(labels == "bar", rng.normal(0.3, 0.05, n), rng.normal(0.6, 0.05, n))
    values = pd.DataFrame({"brightness": brightness, "noise": rng.random(n)})
    probe = bias_probe(values, labels, seed=1).set_index("property")
    assert probe.loc["brightness", "baseline"] == pytest.approx((labels == "bar").mean())
    assert probe.loc["brightness", "accuracy"] > 0.95 and probe.loc["brightness", "flagged"]
    assert probe.loc["brightness", "lift_by_class"]["cafe"] > 3
    assert not probe.loc["noise", "flagged"]
    assert abs(probe.loc["noise", "accuracy"] - probe.loc["noise", "baseline"]) < 0.06


def test_knn_numpy_matches_faiss(monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 16)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    with_faiss = neighbours.knn(data, 5)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss -> ImportError
    without = neighbours.knn(data, 5)
    assert np.array_equal(with_faiss[0], without[0])
    assert np.allclose(with_faiss[1], without[1], atol=1e-5)
    assert neighbours.knn(data[:1], 3)[0].tolist() == [[-1, -1, -1]]


def test_photos_audit_finds_real_duplicates_and_size_bias(tmp_path, shared_data):
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(shared_data / "guns-smartphones" / "train", show_progress=False)
    result = audit(ws, report=False)
    relpaths = ws.samples().set_index("id")["relpath"]
    groups = [{relpaths[m] for m in g["members"]} for g in result.duplicate_groups]
    assert {"pistol/image_0036.jpg", "pistol/image_0060.jpg"} in groups
    bias = result.bias.set_index("property")
    assert bias.loc["megapixels", "flagged"] and bias.loc["megapixels", "accuracy"] > 0.9
    assert not bias.loc["brightness", "flagged"] or bias.loc["brightness", "skill"] < bias.loc["megapixels", "skill"]
    assert result.counts()["grayscale"] >= 7  # the 7 files stored as gray, and gray RGB ones
    ws.close()


def test_cli_audit(tmp_path, problems):
    from smartset.cli import app

    runner = CliRunner()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    assert runner.invoke(app, ["ingest", str(ws), str(problems), "--engine", "serial"]).exit_code == 0
    result = runner.invoke(app, ["audit", str(ws), "--json", "--threshold", "dark=0.5",
                                 "--engine", "serial"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["thresholds"]["dark"]["set_by"] == "given"
    assert summary["findings"]["dark"] >= 1
    bad = runner.invoke(app, ["audit", str(ws), "--threshold", "darkness=1"])
    assert bad.exit_code == 2 and "unknown check" in bad.output


def test_a_failed_audit_is_recorded_as_failed(tmp_path, fixtures):
    root = tmp_path / "src" / "cat"
    root.mkdir(parents=True)
    shutil.copy(fixtures / "good.jpg", root / "a.jpg")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root.parent, engine="serial", show_progress=False)
    with pytest.raises(ValueError, match="unknown check.*darkness"):
        audit(ws, thresholds={"darkness": 0.1}, engine="serial", report=False)
    last = ws.runs().iloc[-1]
    assert last["command"] == "audit" and last["status"] == "failed"
    assert "darkness" in last["metrics"]["error"]
    ws.close()


def test_an_empty_workspace_gets_a_clear_error(tmp_path):
    from smartset.cli import app

    ws = smartset.init(tmp_path / "ws")
    with pytest.raises(smartset.EmptyDataError, match="Nothing to audit.*smartset ingest"):
        audit(ws, report=False)
    result = CliRunner().invoke(app, ["audit", str(ws.path)])
    assert result.exit_code == 1 and "Nothing to audit" in result.output
    ws.close()


def test_embeddings_are_served_by_sample_id(audited):
    ws, _ = audited
    ids = list(ws.samples()["id"])
    every_id, every = embeddings(ws)
    assert len(every_id) == len(ids) and every.shape == (len(ids), 112)
    picked = [ids[5], ids[0], "not-a-sample"]
    got_ids, got = embeddings(ws, picked)
    assert list(got_ids) == picked[:2]
    position = {sid: i for i, sid in enumerate(every_id)}
    np.testing.assert_array_equal(got, every[[position[ids[5]], position[ids[0]]]])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-2)


def test_error_probe_finds_the_range_where_the_model_fails():
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0, 1, 2000)
    wrong = rng.uniform(size=2000) < np.where(brightness < 0.2, 0.30, 0.03)  # dark: 10x errors
    table = error_probe(pd.DataFrame({"brightness": brightness, "noise": rng.normal(size=2000)}),
                        ~wrong).set_index("property")
    assert table.loc["brightness", "flagged"] and table.loc["brightness", "high"] < 0.25
    assert table.loc["brightness", "ratio"] > 2.5
    assert not table.loc["noise", "flagged"]


def test_audit_reports_error_bias_from_out_of_fold_predictions(tmp_path, problems):
    from smartset.predictions import write_predictions

    ws = smartset.init(tmp_path / "ws")
    ws.ingest(problems, show_progress=False, engine="serial")
    result = audit(ws, engine="serial")
    props = ws.samples()
    measured = set(result.properties["id"])
    ids = [i for i, label in zip(props["id"], props["label"]) if i in measured and label]
    values = result.properties.set_index("id").loc[ids, "brightness"].to_numpy()
    darkest = values <= np.quantile(values, 0.2)
    labels = props.set_index("id").loc[ids, "label"].tolist()
    classes = sorted(set(labels))
    probs = np.zeros((len(ids), len(classes)), np.float32)
    for row, (label, dark) in enumerate(zip(labels, darkest)):
        right = classes.index(label)
        probs[row, (right + 1) % len(classes) if dark else right] = 1.0  # wrong on dark ones
    run = ws.catalog.start_run("predict", {"classes": classes})
    write_predictions(ws.catalog, run, ids, kind="oof", classes=classes, probs=probs,
                      labels=labels)
    ws.catalog.finish_run(run, {})
    again = audit(ws, engine="serial")
    found = again.findings[again.findings["kind"] == "error_bias"]
    assert "brightness" in set(found["group"]) and "out-of-fold" in found["reason"].iloc[0]


def test_embeddings_before_any_audit_say_to_run_it(ws):
    from smartset.errors import EmptyDataError

    with pytest.raises(EmptyDataError, match="run 'smartset audit' first"):
        embeddings(ws)


def test_an_experimental_audit_does_not_replace_what_later_stages_read(tmp_path, problems):
    """An audit with an experimental threshold (or a report written elsewhere) is recorded,
    but learn's splits, clean's duplicate actions and the review queues keep reading the
    reference audit; before, the experiment's findings replaced it."""
    from smartset.audit import duplicate_sets, findings, reference_run
    from smartset.learn._workspace import duplicate_groups

    source = tmp_path / "src"
    for name in ["img00.jpg", "img01.jpg", "img02.jpg", "img03.jpg", "dark.jpg"]:
        (source / "cat").mkdir(parents=True, exist_ok=True)
        shutil.copy(problems / "train" / "cat" / name, source / "cat" / name)
    for name in ["img40.jpg", "img41.jpg", "img42.jpg", "original.png",
                 "recompressed_crop.jpg"]:
        (source / "dog").mkdir(parents=True, exist_ok=True)
        shutil.copy(problems / "train" / "dog" / name, source / "dog" / name)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(source, show_progress=False, engine="serial")
    first = audit(ws, engine="serial", report=False, features="pixels")
    assert first.summary["reference"] and reference_run(ws) == first.run_id
    reference_sets = duplicate_sets(ws)
    assert len(reference_sets) == 1  # the original and its recompressed crop
    dark_before = set(findings(ws, kinds="dark")["sample_id"])
    experiment = audit(ws, engine="serial", report=True, features="pixels",
                       out_dir=tmp_path / "elsewhere", thresholds={"dark": 0.95})
    assert not experiment.summary["reference"]
    assert experiment.summary["reference_run"] == first.run_id
    dark_experiment = set(findings(ws, kinds="dark", run=experiment.run_id)["sample_id"])
    assert len(dark_experiment) > len(dark_before)  # the experiment flags more
    assert reference_run(ws) == first.run_id
    assert set(findings(ws, kinds="dark")["sample_id"]) == dark_before
    assert duplicate_sets(ws) == reference_sets  # what learn, clean and review read
    groups = duplicate_groups(ws, ws.samples()["id"])
    assert len(set(groups.tolist())) == len(groups) - 1  # only the real pair is joined
    assert set(findings(ws, run=experiment.run_id)["run_id"]) == {experiment.run_id}
    again = audit(ws, engine="serial", report=False, features="pixels", reference=True)
    assert reference_run(ws) == again.run_id  # a person may promote a setting
