"""Sample marks (exclude, multi-label, duplicate-of) are append-only events; predictions
round-trip through the catalog."""

import sqlite3

import numpy as np
import pytest

from smartset.errors import LabelError
from smartset.predictions import PredictionsNotFoundError, write_predictions


def _ids(ws):
    return ws.samples(include_excluded=True).set_index("relpath")["id"]


def test_exclude_hides_from_live_catalog_and_new_versions_and_undo_restores(labeled):
    ws, _ = labeled
    ids = _ids(ws)
    before = ws.create_version("before")
    [event] = ws.mark(ids["cat/a.png"], "exclude", reason="not a cat")
    assert "cat/a.png" not in set(ws.samples()["relpath"])
    assert len(ws.samples(include_excluded=True)) == 5
    after = ws.create_version("after")
    assert (before["n_samples"], after["n_samples"]) == (5, 4)
    assert len(ws.samples("before")) == 5  # the old version is untouched
    ws.undo_mark(event)
    assert "cat/a.png" in set(ws.samples()["relpath"])
    assert ws.marks().empty
    assert list(ws.mark_history(ids["cat/a.png"])["active"]) == [1, 0]


def test_multi_label_and_duplicate_marks_are_validated_and_listed(labeled):
    ws, _ = labeled
    ids = _ids(ws)
    ws.mark(ids["cat/b.png"], "multi_label", ["dog", "cat"], author="ana")
    ws.mark(ids["dog/e.png"], "duplicate_of", ids["dog/d.png"])
    marks = ws.marks().set_index("kind")
    assert marks.loc["multi_label", "value"] == ["cat", "dog"]
    assert marks.loc["multi_label", "author"] == "ana"
    assert marks.loc["duplicate_of", "value"] == ids["dog/d.png"]
    with pytest.raises(LabelError, match="two or more"):
        ws.mark(ids["cat/c.png"], "multi_label", ["cat"])
    with pytest.raises(LabelError, match="not a sample id"):
        ws.mark(ids["cat/c.png"], "duplicate_of", "nope")
    with pytest.raises(LabelError, match="itself"):
        ws.mark(ids["cat/c.png"], "duplicate_of", ids["cat/c.png"])
    with pytest.raises(LabelError, match="Unknown mark 'delete'"):
        ws.mark(ids["cat/c.png"], "delete")
    ws.unmark(ids["cat/b.png"], "multi_label")
    assert list(ws.marks()["kind"]) == ["duplicate_of"]
    with sqlite3.connect(ws.catalog.path) as con, pytest.raises(sqlite3.DatabaseError,
                                                                 match="append-only"):
        con.execute("DELETE FROM sample_marks")


def test_predictions_round_trip_and_newest_finished_run(labeled):
    ws, _ = labeled
    with pytest.raises(PredictionsNotFoundError, match="predict --oof"):
        ws.predictions()
    samples = ws.samples()
    classes = ["cat", "dog"]
    probs = np.random.default_rng(0).dirichlet([1, 1], size=len(samples)).astype(np.float32)
    run = ws.catalog.start_run("predict", {"classes": classes})
    write_predictions(ws.catalog, run, list(samples["id"]), kind="oof", classes=classes,
                      probs=probs, labels=list(samples["label"]), folds=[0, 1, 0, 1, 0])
    with pytest.raises(PredictionsNotFoundError):  # the run has not finished
        ws.predictions()
    ws.catalog.finish_run(run, {})
    got = ws.predictions()
    order = np.argsort(samples["id"].to_numpy())
    np.testing.assert_array_equal(got.probs, probs[order])
    assert list(got.labels) == list(samples["label"].to_numpy()[order])
    assert list(got.predicted) == [classes[i] for i in probs[order].argmax(1)]
    assert not got.in_sample and got.classes == classes and len(got) == 5
    with pytest.raises(ValueError, match="shape"):
        write_predictions(ws.catalog, run, ["x"], kind="oof", classes=classes,
                          probs=np.ones((1, 3)))
