"""A corpus of bad input: every bad file is recorded under a named reason, every good one
is ingested, and nothing crashes."""

import os
import shutil
import unicodedata

import pytest

from smartset.errors import ColumnNotFoundError, SourceError

BAD = {  # fixture file -> the reason ingest must record
    "truncated.jpg": "truncated",
    "empty.jpg": "empty_file",
    "text.jpg": "not_an_image",
    "corrupt.png": "corrupt",
    "bomb.png": "too_large",
}
GOOD = ["good.jpg", "good.png", "gray16.png", "cmyk.jpg", "palette.png", "one_pixel.png"]


@pytest.fixture
def corpus(tmp_path, fixtures):
    """Class folders with good and bad files, odd names and broken links."""
    root = tmp_path / "corpus"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for name in GOOD:
            shutil.copy(fixtures / name, root / cls / name)
    for name in BAD:
        shutil.copy(fixtures / name, root / "cat" / name)
    shutil.copy(fixtures / "good.jpg", root / "dog" / "a name with spaces.jpg")
    shutil.copy(fixtures / "good.jpg", root / "dog" / "ünïcødé 猫 ☃.jpg")
    (root / "dog" / "notes.txt").write_text("not an image, and not pretending to be one")
    os.symlink(root / "nowhere.jpg", root / "dog" / "broken_link.jpg")
    os.symlink(root / "dog" / "loop_a.jpg", root / "dog" / "loop_b.jpg")
    os.symlink(root / "dog" / "loop_b.jpg", root / "dog" / "loop_a.jpg")
    os.symlink(root, root / "dog" / "back_to_top")  # a folder loop
    return root


def test_every_bad_file_named_every_good_file_ingested(ws, corpus):
    report = ws.ingest(corpus, engine="serial", show_progress=False)
    issues = ws.issues()
    by_file = dict(zip(issues["relpath"], issues["reason"]))
    for name, reason in BAD.items():
        assert by_file[f"cat/{name}"] == reason, issues
    assert by_file["dog/broken_link.jpg"] == "broken_symlink"
    assert by_file["dog/loop_a.jpg"] == by_file["dog/loop_b.jpg"] == "symlink_loop"
    assert by_file["dog/back_to_top"] == "symlink_loop"
    samples = ws.samples()
    expected = {f"{c}/{n}" for c in ("cat", "dog") for n in GOOD}
    expected |= {"dog/a name with spaces.jpg", "dog/ünïcødé 猫 ☃.jpg"}
    assert set(samples["relpath"]) == expected
    assert report.new == len(expected)
    assert report.ignored == {".txt": 1}
    assert all(issues["detail"].str.len() > 0)
    # The unicode name resolves back to the real file.
    path = samples.loc[samples["relpath"] == "dog/ünïcødé 猫 ☃.jpg", "path"].item()
    assert os.path.exists(path)


def test_bad_files_are_not_read_again_until_they_change(ws, corpus, fixtures):
    ws.ingest(corpus, engine="serial", show_progress=False)
    again = ws.ingest(corpus, engine="serial", show_progress=False)
    assert again.files_read == 0
    assert again.issues["truncated"] == 1
    shutil.copy(fixtures / "good.jpg", corpus / "cat" / "truncated.jpg")  # the user repairs it
    repaired = ws.ingest(corpus, engine="serial", show_progress=False)
    assert repaired.files_read == 1 and repaired.new == 1
    assert "truncated" not in repaired.issues
    assert "cat/truncated.jpg" in set(ws.samples()["relpath"])


def test_pixel_limit_is_configurable(ws, corpus):
    report = ws.ingest(corpus, engine="serial", max_pixels=1000, show_progress=False)
    too_large = ws.issues().query("reason == 'too_large'").set_index("relpath")["detail"]
    assert too_large["dog/good.jpg"] == "64x48 = 3,072 pixels > limit 1,000"
    assert "decompression bomb" in too_large["cat/bomb.png"]
    # Every 64x48 image (the truncated one's header says 64x48 too), and the bomb.
    assert len(too_large) == 2 * (len(GOOD) - 1) + 2 + 2
    assert sorted(ws.samples()["relpath"]) == ["cat/one_pixel.png", "dog/one_pixel.png"]
    assert report.new == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(ws, corpus):
    os.chmod(corpus / "cat" / "good.jpg", 0)
    ws.ingest(corpus, engine="serial", show_progress=False)
    assert "cat/good.jpg" in set(ws.issues().query("reason == 'unreadable'")["relpath"])


def test_unreadable_file_as_root(ws, corpus, monkeypatch):
    """Root ignores permissions, so simulate the failing open() the way the OS reports it."""
    import builtins

    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if str(file).endswith("cat/good.jpg"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    ws.ingest(corpus, engine="serial", show_progress=False)
    issue = ws.issues().query("relpath == 'cat/good.jpg'")
    assert issue["reason"].item() == "unreadable" and "Permission denied" in issue["detail"].item()


def test_files_that_vanish_are_marked_missing_and_come_back(ws, corpus):
    ws.ingest(corpus, engine="serial", show_progress=False)
    moved = corpus.parent / "moved.jpg"
    shutil.move(corpus / "dog" / "good.jpg", moved)
    report = ws.ingest(corpus, engine="serial", show_progress=False)
    assert report.missing == 1
    assert "dog/good.jpg" not in set(ws.samples()["relpath"])
    everything = ws.samples(include_unavailable=True)
    assert everything.set_index("relpath").loc["dog/good.jpg", "status"] == "missing"
    shutil.move(moved, corpus / "dog" / "good.jpg")
    ws.ingest(corpus, engine="serial", show_progress=False)
    assert "dog/good.jpg" in set(ws.samples()["relpath"])


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def table_dir(tmp_path, fixtures):
    root = tmp_path / "table"
    (root / "img").mkdir(parents=True)
    for name in ("good.jpg", "good.png", "one_pixel.png", "truncated.jpg"):
        shutil.copy(fixtures / name, root / "img" / name)
    nfd = unicodedata.normalize("NFD", "café.jpg")
    shutil.copy(fixtures / "good.jpg", root / "img" / nfd)
    return root


def test_csv_rows_missing_duplicate_outside_and_unicode(ws, table_dir):
    table = _write(table_dir / "labels.csv", "\n".join([
        "path,label,split",
        "img/good.jpg,cat,train",
        "img/good.png,dog,test",
        "img/good.jpg,dog,train",             # duplicate path, conflicting label
        "img/does_not_exist.jpg,cat,train",   # missing file
        "../../etc/passwd,cat,train",         # escapes the root
        "img/truncated.jpg,cat,train",        # bad image
        f"img/{unicodedata.normalize('NFC', 'café.jpg')},Cat ,train",  # NFC vs NFD, spaced label
        "img/one_pixel.png,dog,holdout",      # unknown split
        "img/good.png",                       # short row
    ]) + "\n")
    report = ws.ingest(table, engine="serial", show_progress=False)
    reasons = ws.issues().groupby("reason")["relpath"].apply(list).to_dict()
    assert reasons["csv_duplicate_path"] == ["img/good.jpg"]
    assert reasons["missing_file"] == ["img/does_not_exist.jpg"]
    assert reasons["outside_root"] == ["../../etc/passwd"]
    assert reasons["truncated"] == ["img/truncated.jpg"]
    assert reasons["unknown_split"] == ["img/one_pixel.png"]
    assert reasons["csv_bad_row"] == ["line 10"]
    assert reasons["label_variants"] == ["label:cat"]  # 'cat' and 'Cat ' differ by case/space
    samples = ws.samples().set_index("relpath")
    assert samples.loc["img/good.jpg", "label"] == "cat"  # the first row wins
    assert samples.loc["img/good.png", "split"] == "test"
    assert len(samples) == 4 and report.new == 4


def test_csv_missing_column_names_column_line_and_found(ws, table_dir):
    table = _write(table_dir / "t.csv", "path,lable\nimg/good.jpg,cat\n")
    with pytest.raises(ColumnNotFoundError) as caught:
        ws.ingest(table, label_column="label", show_progress=False)
    message = str(caught.value)
    assert "'label'" in message and "line 1" in message and "path, lable" in message
    assert "Did you mean 'lable'" in message and "--label-column" in message
    assert caught.value.found == ["path", "lable"]
    no_path = _write(table_dir / "u.csv", "image_name;label\nimg/good.jpg;cat\n")
    with pytest.raises(ColumnNotFoundError, match="No column of image paths.*image_name"):
        ws.ingest(no_path, show_progress=False)
    assert ws.samples().empty  # nothing half-written


def test_csv_regression_targets(ws, table_dir):
    table = _write(table_dir / "ages.tsv",
                   "file\tage\tweight\nimg/good.jpg\t31.5\t70\nimg/good.png\tabc\t60\n")
    ws.ingest(table, target_columns=["age", "weight"], engine="serial", show_progress=False)
    samples = ws.samples().set_index("relpath")
    assert samples.loc["img/good.jpg", "targets"] == [31.5, 70.0]
    assert samples.loc["img/good.png", "targets"] is None
    assert ws.issues()["reason"].tolist() == ["bad_target"]


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("path,label\n", None),
])
def test_csv_empty(ws, table_dir, text, match):
    table = _write(table_dir / "e.csv", text)
    if match:
        with pytest.raises(SourceError, match=match):
            ws.ingest(table, show_progress=False)
    else:
        assert ws.ingest(table, show_progress=False).ok == 0


def test_bad_sources_get_clear_errors(ws, tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        ws.ingest(tmp_path / "nope", show_progress=False)
    odd = _write(tmp_path / "data.json", "{}")
    with pytest.raises(SourceError, match="--layout"):
        ws.ingest(odd, show_progress=False)
    with pytest.raises(SourceError, match="Unknown layout 'imagenet'.*folders"):
        ws.ingest(tmp_path, layout="imagenet", show_progress=False)
    not_npz = _write(tmp_path / "x.npz", "garbage")
    with pytest.raises(SourceError, match="NumPy .npz"):
        ws.ingest(not_npz, show_progress=False)
