"""Ingest of the real data sets in ../shared/data: counts, and incremental re-runs."""

from collections import Counter

import numpy as np
import PIL.Image
import pytest

import smartset


def test_photos_counts_per_class_and_messy_names(ws, shared_data):
    report = ws.ingest(shared_data / "guns-smartphones" / "train", show_progress=False)
    assert report.layout == "folders"
    assert report.new == 741 and report.issues == {}
    assert report.classes == {"pistol": 391, "smartphone": 350}
    samples = ws.samples()
    assert samples["label"].value_counts().to_dict() == {"pistol": 391, "smartphone": 350}
    assert samples["id"].is_unique and samples["sha256"].str.len().eq(64).all()
    assert (samples["width"] > 0).all() and set(samples["format"]) == {"JPEG"}
    # Names with capital extensions and odd characters are all there.
    assert samples["relpath"].str.endswith(".JPG").sum() == 5
    assert any("&" in p for p in samples["relpath"])


def test_rerun_reads_nothing_again(ws, shared_data, monkeypatch):
    source = shared_data / "guns-smartphones" / "train"
    ws.ingest(source, engine="serial", show_progress=False)
    opened = Counter()
    real_open = PIL.Image.open

    def counting_open(*args, **kwargs):
        opened["decodes"] += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    report = ws.ingest(source, engine="serial", show_progress=False)
    assert opened["decodes"] == 0
    assert report.files_read == 0 and report.unchanged == 741 and report.new == 0
    assert len(ws.samples()) == 741
    # The counter works: a run that must read does decode.
    ws2 = smartset.init(ws.path.parent / "other")
    ws2.ingest(source / "smartphone", layout="unlabeled", engine="serial", show_progress=False)
    assert opened["decodes"] == 350
    ws2.close()


def test_mnist_npz_counts_and_written_once(ws, shared_data):
    archive = shared_data / "mnist10k.npz"
    expected = np.bincount(np.load(archive)["labels"])
    report = ws.ingest(archive, show_progress=False)
    assert report.layout == "numpy" and report.new == 10_000 and not report.issues
    counts = ws.samples()["label"].value_counts()
    assert {int(k): v for k, v in counts.items()} == dict(enumerate(expected))
    pngs = sorted((ws.path / "data").glob("mnist10k-*/*.png"))
    assert len(pngs) == 10_000
    first = np.asarray(PIL.Image.open(pngs[0]))
    assert np.array_equal(first, np.load(archive)["images"][0])
    mtimes = [p.stat().st_mtime_ns for p in pngs[:50]]
    again = ws.ingest(archive, show_progress=False)
    assert again.files_read == 0 and again.unchanged == 10_000
    assert "already written" in again.detected
    assert [p.stat().st_mtime_ns for p in pngs[:50]] == mtimes


@pytest.mark.parametrize("engine", ["serial", "local"])
def test_engines_give_the_same_catalog(tmp_path, shared_data, engine):
    source = shared_data / "guns-smartphones" / "train" / "smartphone"
    ws = smartset.init(tmp_path / engine)
    ws.ingest(source, engine=engine, batch_size=16, show_progress=False)
    reference = smartset.init(tmp_path / "reference")
    reference.ingest(source, engine="serial", show_progress=False)
    columns = ["relpath", "sha256", "width", "height", "mode", "format"]
    assert ws.samples()[columns].equals(reference.samples()[columns])
    ws.close()
    reference.close()
