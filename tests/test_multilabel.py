"""Multi-label (#22): tags from tables, folders and review marks; the sigmoid model, its
per-class thresholds and metrics; missing and extra tags found by the cleaning stage."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

import smartset
from smartset.clean import CleanInputError, find_multilabel_issues
from smartset.errors import LabelError, SourceError
from smartset.learn.multilabel_metrics import (average_precision, choose_thresholds,
                                               multilabel_report)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _by_relpath(ws, version=None):
    frame = ws.samples(version)
    tags = ws.tags(version)
    return {rel: set(tags[sid]) for sid, rel in zip(frame["id"], frame["relpath"])}


# -- where tags come from ---------------------------------------------------------------------
def test_tags_from_a_table_column_and_versions_freeze_them(tmp_path):
    cells = ["cat|dog", "dog", "bird|cat|dog", ""]
    lines = ["path,tags"]
    for i, cell in enumerate(cells):
        _png(tmp_path / "img" / f"{i}.png", i)
        lines.append(f"img/{i}.png,{cell}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    ws = smartset.init(tmp_path / "ws")
    report = ws.ingest(tmp_path / "t.csv", show_progress=False)
    assert "tags from 'tags'" in report.detected
    assert _by_relpath(ws) == {"img/0.png": {"cat", "dog"}, "img/1.png": {"dog"},
                               "img/2.png": {"bird", "cat", "dog"}, "img/3.png": set()}
    frame = ws.samples().set_index("relpath")
    assert frame.loc["img/1.png", "label"] == "dog"  # one tag is also the label
    assert frame.loc["img/0.png", "label"] is None and frame.loc["img/0.png", "split"] == "train"
    events = len(ws.catalog.query("SELECT id FROM tag_events"))
    ws.ingest(tmp_path / "t.csv", show_progress=False)  # unchanged table: no new events
    assert len(ws.catalog.query("SELECT id FROM tag_events")) == events

    ws.create_version("v1")
    ws.set_tags(frame.loc["img/1.png", "id"], ["dog", "fox"], reason="looked again")
    assert _by_relpath(ws)["img/1.png"] == {"dog", "fox"}
    assert _by_relpath(ws, "v1")["img/1.png"] == {"dog"}  # frozen
    with pytest.raises(LabelError, match="list of class names"):
        ws.set_tags(frame.loc["img/1.png", "id"], "dog")


def test_a_separator_of_the_users_choice(tmp_path):
    _png(tmp_path / "a.png", 0)
    (tmp_path / "t.csv").write_text("image_name,labels\na.png,clear primary water\n")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "t.csv", path_column="image_name", tags_column="labels", tag_sep=" ",
              show_progress=False)
    assert _by_relpath(ws) == {"a.png": {"clear", "primary", "water"}}


def test_tags_from_several_class_folders(tmp_path):
    src = tmp_path / "src"
    _png(src / "cat" / "c0.png", 0)
    _png(src / "dog" / "d0.png", 1)
    shutil.copy(src / "cat" / "c0.png", src / "dog" / "both.png")  # same content, two folders
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(src, show_progress=False)
    assert _by_relpath(ws) == {"cat/c0.png": {"cat", "dog"}, "dog/both.png": {"cat", "dog"},
                               "dog/d0.png": {"dog"}}
    assert _by_relpath(ws)["dog/d0.png"] == {"dog"}
    kept_apart = ws.tags(merge_copies=False)
    assert sorted(map(sorted, kept_apart.values())) == [["cat"], ["dog"], ["dog"]]
    with pytest.raises(SourceError, match="tags column"):
        ws.ingest(src, tags_column="tags", show_progress=False)


def test_tags_from_a_reviewers_multi_label_mark(tmp_path):
    src = tmp_path / "src"
    _png(src / "bar" / "a.png", 0)
    _png(src / "cafe" / "b.png", 1)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(src, show_progress=False)
    sid = ws.samples().set_index("relpath").loc["bar/a.png", "id"]
    from smartset.review.actions import decide

    decide(ws, "multi_label", sid, classes=["bar", "restaurant"], queue="class")
    assert _by_relpath(ws)["bar/a.png"] == {"bar", "restaurant"}
    ws.unmark(sid, "multi_label")
    assert _by_relpath(ws)["bar/a.png"] == {"bar"}


# -- metrics and thresholds against scikit-learn -------------------------------------------------
def _scores(seed=0, n=300, k=5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(int)
    probs = np.round(np.clip(0.35 * y + 0.65 * rng.random((n, k)), 0, 1), 2)  # with ties
    return y, probs


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_sklearn(seed):
    y, probs = _scores(seed)
    thresholds = np.array([0.3, 0.4, 0.5, 0.6, 0.7])
    report = multilabel_report(y, probs, list("abcde"), thresholds=thresholds)
    predicted = (probs >= thresholds).astype(int)
    m = sklearn_metrics
    assert report["mAP"] == pytest.approx(m.average_precision_score(y, probs, average="macro"))
    assert report["macro_f1"] == pytest.approx(m.f1_score(y, predicted, average="macro",
                                                           zero_division=0))
    assert report["micro_f1"] == pytest.approx(m.f1_score(y, predicted, average="micro"))
    assert report["subset_accuracy"] == pytest.approx(m.accuracy_score(y, predicted))
    assert report["hamming_loss"] == pytest.approx(m.hamming_loss(y, predicted))
    for k, row in enumerate(report["per_class"]):
        assert row["precision"] == pytest.approx(m.precision_score(y[:, k], predicted[:, k],
                                                                   zero_division=0))
        assert row["recall"] == pytest.approx(m.recall_score(y[:, k], predicted[:, k]))
        assert row["ap"] == pytest.approx(m.average_precision_score(y[:, k], probs[:, k]))
    assert np.isnan(average_precision(np.zeros(4), np.arange(4)))


def test_thresholds_maximise_f1_per_class():
    y, probs = _scores(2)
    chosen = choose_thresholds(y, probs)
    for k in range(y.shape[1]):
        cuts = np.unique(probs[:, k])
        predicted = probs[:, k][None, :] >= cuts[:, None]  # every cut at once
        tp = (predicted & (y[:, k] == 1)).sum(1)
        best = (2 * tp / (predicted.sum(1) + y[:, k].sum())).max()
        assert sklearn_metrics.f1_score(y[:, k], probs[:, k] >= chosen[k]) == pytest.approx(best)
    no_positive = choose_thresholds(np.zeros((5, 1), int), np.linspace(0, 1, 5)[:, None])
    assert no_positive.tolist() == [0.5]


# -- training -------------------------------------------------------------------------------
def _bars(n, rng):
    """28x28 noisy images; class k is a faint horizontal bar in band k (about 40% each)."""
    y = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    x = rng.integers(0, 90, (n, 28, 28)).astype(np.uint8)
    for k in range(4):
        rows = slice(3 + 6 * k, 6 + 6 * k)
        x[y[:, k] == 1, rows, 4:24] = np.clip(
            x[y[:, k] == 1, rows, 4:24].astype(int) + 70, 0, 255).astype(np.uint8)
    return x, y


def test_a_tiny_model_beats_chance_and_keeps_its_thresholds(tmp_path):
    from smartset.learn import load_checkpoint
    from smartset.learn.multilabel import MultiLabelClassifier

    rng = np.random.default_rng(0)
    x, y = _bars(200, rng)
    xt, yt = _bars(100, rng)
    tags = [{f"bar{k}" for k in np.flatnonzero(row)} for row in y]
    model = MultiLabelClassifier("lenet", epochs=2, batch_size=32, lr=3e-3, seed=0,
                                 checkpoint=tmp_path / "m.pt", progress=False).fit(x, tags)
    assert model.classes_ == ["bar0", "bar1", "bar2", "bar3"]
    report = model.report(xt, [{f"bar{k}" for k in np.flatnonzero(r)} for r in yt])
    chance = multilabel_report(yt, np.random.default_rng(1).random(yt.shape),
                               model.classes_)["mAP"]
    assert report["mAP"] > max(0.8, chance + 0.3), report
    assert model.validation_report_["n"] == 40  # the held-out share (1 of 5 folds)

    loaded = load_checkpoint(tmp_path / "m.pt")
    assert type(loaded).__name__ == "MultiLabelClassifier"
    np.testing.assert_allclose(loaded.thresholds_, model.thresholds_)
    probs = loaded.predict_proba(xt)
    np.testing.assert_allclose(probs, model.predict_proba(xt), atol=1e-6)
    expected = [tuple(c for c, p, t in zip(loaded.classes_, row, loaded.thresholds_) if p >= t)
                for row in probs]
    assert loaded.predict(xt) == expected
    loaded.thresholds_ = np.array([0.0, 1.01, 1.01, 1.01])  # predict reads the thresholds
    assert set(loaded.predict(xt[:5])) == {("bar0",)}


def test_group_folds_keep_groups_together():
    from smartset.learn.multilabel import group_folds

    groups = np.repeat(np.arange(30), 3)
    fold = group_folds(90, 5, groups=groups, seed=0)
    assert all(len(set(fold[groups == g])) == 1 for g in range(30))
    assert np.bincount(fold).min() >= 15


# -- cleaning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_missing_and_extra_tags_are_found_and_single_label_detectors_refuse(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random((400, 5)) < 0.3).astype(int)
    # out-of-fold-like probabilities: mostly confident, some doubt
    probs = np.where(truth == 1, rng.beta(8, 1.5, truth.shape), rng.beta(1.5, 8, truth.shape))
    given = truth.copy()
    positives, negatives = np.argwhere(truth == 1), np.argwhere(truth == 0)
    dropped = positives[rng.choice(len(positives), 30, replace=False)]
    added = negatives[rng.choice(len(negatives), 30, replace=False)]
    given[dropped[:, 0], dropped[:, 1]] = 0
    given[added[:, 0], added[:, 1]] = 1
    planted = {"missing": {tuple(map(int, d)) for d in dropped},
               "extra": {tuple(map(int, a)) for a in added}}
    # measured on seeds 0-9: recall 0.57-1.00 and precision 0.69-1.00 (prune_by_noise_rate),
    # recall 0.40-0.93 and precision 1.00 (confident_joint)
    for filter_by, recall, precision in (("prune_by_noise_rate", 0.5, 0.6),
                                         ("confident_joint", 0.3, 0.9)):
        table = find_multilabel_issues(given, probs, filter_by=filter_by).table()
        for kind in ("missing", "extra"):
            found = {(r["row"], r["class"]) for r in table if r["kind"] == kind}
            hits = len(found & planted[kind])
            assert hits >= recall * len(planted[kind]), (filter_by, kind, hits, len(found))
            assert hits >= precision * len(found), (filter_by, kind, hits, len(found))
    assert find_multilabel_issues(truth, probs).is_issue.mean() < 0.05  # clean tags: few
    with pytest.raises(CleanInputError, match="no one true class"):
        find_multilabel_issues(given, probs, method="consensus")
    with pytest.raises(CleanInputError, match=r"\(N, K\)"):
        find_multilabel_issues(given[:, 0], probs)


def test_the_frozen_features_path_trains_only_the_head(tmp_path):
    from smartset.learn.multilabel import MultiLabelClassifier

    rng = np.random.default_rng(3)
    x, y = _bars(120, rng)
    MultiLabelClassifier("lenet", epochs=1, seed=0, progress=False,
                         checkpoint=tmp_path / "source.pt").fit(x, y)
    head = MultiLabelClassifier("lenet", init_from=tmp_path / "source.pt", trainable_blocks=0,
                                epochs=2, seed=0, progress=False).fit(x, y)
    assert hasattr(head, "features_seconds_")  # features computed once, the head trained
    assert {r["trainable_blocks"] for r in head.history_} == {0}
    assert head.thresholds_.shape == (4,)


# -- tag edits: who reviewed, and concurrent writers ------------------------------------------
def _tagged_workspace(tmp_path):
    lines = ["path,tags"]
    for i, cell in enumerate(["cat|dog", "dog", "cat"]):
        _png(tmp_path / "img" / f"{i}.png", i)
        lines.append(f"img/{i}.png,{cell}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "t.csv", show_progress=False)
    return ws, ws.samples().set_index("relpath")["id"]


def test_a_tag_review_counts_as_reviewed_until_undone(tmp_path):
    from smartset.events import reviewed_samples
    from smartset.tags import edit_tags, undo_tags

    ws, ids = _tagged_workspace(tmp_path)
    assert reviewed_samples(ws.catalog) == set()
    written = edit_tags(ws, {ids["img/0.png"]: (["bird"], [])}, origin="review", author="ann")
    kept = edit_tags(ws, {}, keep=[ids["img/1.png"]], origin="review", author="ann")
    edit_tags(ws, {ids["img/2.png"]: (["fox"], [])}, origin="api")  # not a person's review
    assert reviewed_samples(ws.catalog) == {ids["img/0.png"], ids["img/1.png"]}
    assert reviewed_samples(ws.catalog, [ids["img/1.png"], ids["img/2.png"]]) == {ids["img/1.png"]}
    undo_tags(ws, [written[ids["img/0.png"]]])
    assert reviewed_samples(ws.catalog) == {ids["img/1.png"]}
    assert isinstance(kept[ids["img/1.png"]], int)


def test_a_tag_edit_based_on_an_older_event_writes_nothing(tmp_path):
    from smartset.errors import ConflictError
    from smartset.tags import edit_tags, tag_history

    ws, ids = _tagged_workspace(tmp_path)
    a, b = ids["img/0.png"], ids["img/1.png"]
    seen = {sid: max(e["id"] for e in tag_history(ws, sid)) for sid in (a, b)}
    edit_tags(ws, {a: (["fox"], [])}, author="bob")  # another person, in between
    before = len(tag_history(ws))
    with pytest.raises(ConflictError, match=f"tags of sample {a} changed") as raised:
        edit_tags(ws, {b: (["bird"], []), a: (["bird"], [])}, author="ann", based_on=seen)
    assert raised.value.current["tags"] == ["cat", "dog", "fox"]
    assert raised.value.current["author"] == "bob" and raised.value.expected == seen[a]
    assert len(tag_history(ws)) == before  # neither sample written: the call is atomic
    assert set(ws.tags()[b]) == {"dog"}
    written = edit_tags(ws, {a: (["bird"], [])}, author="ann")  # read again: goes through
    assert set(ws.tags()[a]) == {"bird", "cat", "dog", "fox"} and isinstance(written[a], int)


def test_a_tag_event_between_reading_and_writing_is_a_conflict(tmp_path, monkeypatch):
    """Without ``based_on`` the edit is based on the tags it reads: a writer that comes in
    between (here: during the read) makes it refuse rather than overwrite."""
    import smartset.tags as tags_module
    from smartset.errors import ConflictError

    ws, ids = _tagged_workspace(tmp_path)
    a = ids["img/0.png"]
    read = tags_module.read_tags

    def read_then_someone_writes(*args, **kwargs):
        found = read(*args, **kwargs)
        monkeypatch.setattr(tags_module, "read_tags", read)
        tags_module.edit_tags(ws, {a: (["fox"], [])}, author="bob")
        return found

    monkeypatch.setattr(tags_module, "read_tags", read_then_someone_writes)
    with pytest.raises(ConflictError, match="tag event"):
        tags_module.edit_tags(ws, {a: ([], ["dog"])}, author="ann")
    assert set(ws.tags()[a]) == {"cat", "dog", "fox"}  # bob's change stands


@pytest.mark.parametrize("bad", ["12", 1.5, True])
def test_a_malformed_based_on_is_a_clear_error_and_writes_nothing(tmp_path, bad):
    from smartset.tags import edit_tags, tag_history

    ws, ids = _tagged_workspace(tmp_path)
    before = len(tag_history(ws))
    with pytest.raises(LabelError, match="must be the id .* of the tag event"):
        edit_tags(ws, {ids["img/0.png"]: (["fox"], [])}, based_on={ids["img/0.png"]: bad})
    assert len(tag_history(ws)) == before
