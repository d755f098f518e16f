"""Label events are append-only; versions freeze samples and labels."""

import shutil
import sqlite3

import pytest

import smartset

from smartset.errors import ConflictError, LabelError, VersionError


def _label(ws, relpath):
    return ws.samples().set_index("relpath").loc[relpath, "label"]


def test_relabel_undo_and_full_history(labeled):
    ws, _ = labeled
    sid = ws.samples().set_index("relpath").loc["cat/a.png", "id"]
    [first] = ws.relabel(sid, "dog", author="ana", reason="looks like a dog")
    [second] = ws.relabel(sid, "fox", author="ben", reason="no, a fox")
    assert _label(ws, "cat/a.png") == "fox"
    undo = ws.undo(second, author="ana")
    assert _label(ws, "cat/a.png") == "dog"
    with pytest.raises(ConflictError, match="not the newest"):
        ws.undo(first)
    ws.undo(undo)  # undoing the undo restores 'fox'
    assert _label(ws, "cat/a.png") == "fox"
    history = ws.history(sid)
    assert history["label"].tolist() == ["cat", "dog", "fox", "dog", "fox"]
    assert history["origin"].tolist() == ["ingest", "api", "api", "undo", "undo"]
    assert history["author"].tolist()[1:3] == ["ana", "ben"]
    assert history["reverts"].tolist()[3:] == [second, undo]
    untouched = ws.history(ws.samples().set_index("relpath").loc["dog/d.png", "id"])
    with pytest.raises(LabelError, match="first label"):
        ws.undo(int(untouched["id"].iloc[0]))


def test_events_cannot_be_rewritten(labeled):
    ws, _ = labeled
    con = sqlite3.connect(ws.catalog.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE label_events SET label = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM label_events")
    con.close()


def test_unknown_samples_and_labels(labeled):
    ws, _ = labeled
    with pytest.raises(LabelError, match="Unknown sample id.*nope"):
        ws.relabel(["nope"], "cat")
    with pytest.raises(LabelError, match="No sample is labeled 'cow'.*cat, dog"):
        ws.rename_label("cow", "cat")
    with pytest.raises(LabelError, match="No label event 999"):
        ws.undo(999)


def test_rename_merges_classes(labeled):
    ws, _ = labeled
    events = ws.rename_label("dog", "cat", reason="one class")
    assert len(events) == 2 and ws.classes() == ["cat"]


def test_versions_pin_labels_and_never_change(labeled):
    ws, _ = labeled
    original = ws.create_version("original", description="as ingested")
    assert original["n_samples"] == 5 and len(original["fingerprint"]) == 64
    ws.rename_label("dog", "cat")
    assert ws.samples("original")["label"].value_counts().to_dict() == {"cat": 3, "dog": 2}
    assert ws.classes() == ["cat"]
    merged = ws.create_version("merged", parent="original")
    assert merged["parent"] == "original"
    assert merged["fingerprint"] != original["fingerprint"]
    assert ws.samples("merged")["label"].unique().tolist() == ["cat"]
    subset = ws.samples().head(2)["id"].tolist()
    small = ws.create_version("small", sample_ids=subset)
    assert small["n_samples"] == 2
    assert ws.versions()["name"].tolist() == ["original", "merged", "small"]
    with pytest.raises(VersionError, match="exists already"):
        ws.create_version("original")
    with pytest.raises(VersionError, match="not valid"):
        ws.create_version("has space")
    with pytest.raises(VersionError, match="No version 'nope'.*original, merged, small"):
        ws.samples("nope")
    with pytest.raises(VersionError, match="not available"):
        ws.create_version("ghost", sample_ids=["0000"])
    con = sqlite3.connect(ws.catalog.path)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        con.execute("DELETE FROM version_members")
    con.close()


def test_source_label_change_appends_an_event(labeled):
    ws, root = labeled
    shutil.move(root / "cat" / "c.png", root / "dog" / "c.png")  # becomes a new file path
    (root / "dog" / "e.png").rename(root / "dog" / "e2.png")
    report = ws.ingest(root, engine="serial", show_progress=False)
    assert report.new == 2 and report.missing == 2
    assert ws.samples()["label"].value_counts().to_dict() == {"dog": 3, "cat": 2}


def test_csv_label_change_without_file_change(ws, tmp_path, fixtures):
    shutil.copy(fixtures / "good.png", tmp_path / "x.png")
    table = tmp_path / "t.csv"
    table.write_text("path,label\nx.png,cat\n")
    ws.ingest(table, engine="serial", show_progress=False)
    table.write_text("path,label\nx.png,dog\n")
    report = ws.ingest(table, engine="serial", show_progress=False)
    assert report.files_read == 0 and report.relabeled == 1
    assert ws.samples()["label"].tolist() == ["dog"]
    assert ws.history()["label"].tolist() == ["cat", "dog"]


def test_columns_and_runs(labeled):
    ws, _ = labeled
    ids = ws.samples()["id"].tolist()
    ws.write_column("brightness", ids, [0.5] * len(ids), stage="test")
    assert ws.samples(columns=["brightness"])["brightness"].tolist() == [0.5] * 5
    with pytest.raises(KeyError, match="No computed column 'nope'.*brightness"):
        ws.read_column("nope")
    runs = ws.runs()
    assert runs["command"].tolist() == ["ingest"]
    assert runs["status"].tolist() == ["done"]
    assert runs["software"][0]["numpy"] and runs["metrics"][0]["new"] == 5


def test_derived_samples_keep_lineage(labeled):
    from PIL import Image

    ws, _ = labeled
    origins = ws.samples()
    folder = ws.path / "data" / "augment-test"
    folder.mkdir(parents=True)
    relpaths = []
    for i, path in enumerate(origins["path"][:3]):
        Image.open(path).transpose(Image.Transpose.ROTATE_90).save(folder / f"{i}.png")
        relpaths.append(f"{i}.png")
    params = [{"rotation": 90.0, "seed": i} for i in range(3)]
    ids = ws.add_derived_samples(folder, relpaths, origin_ids=origins["id"][:3].tolist(),
                                 params=params, stage="augment")
    samples = ws.samples().set_index("id")
    assert samples.loc[ids, "origin_id"].tolist() == origins["id"][:3].tolist()
    assert samples.loc[ids, "label"].tolist() == origins["label"][:3].tolist()
    assert samples.loc[ids, "width"].tolist() == [48, 48, 48]  # rotated 64x48
    lineage = ws.lineage()
    assert lineage["params"].tolist() == params and set(lineage["stage"]) == {"augment"}
    assert ws.history(ids[0])["origin"].tolist() == ["augment"]
    with pytest.raises(smartset.SourceError, match="inside the workspace"):
        ws.add_derived_samples(ws.path.parent, ["x.png"], origin_ids=[ids[0]], params=[{}],
                               stage="augment")
    with pytest.raises(smartset.SourceError, match="Unknown origin"):
        ws.add_derived_samples(folder, ["0.png"], origin_ids=["nope"], params=[{}], stage="augment")
