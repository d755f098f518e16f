"""The audit's property columns on disk: what the checks and probes read of them equals
the in-memory table."""

import numpy as np
import pandas as pd
import pytest

from smartset.audit import _columns
from smartset.audit._columns import ColumnStore
from smartset.audit.bias import bias_probe, error_probe
from smartset.audit.checks import run_checks


def test_columns_from_a_row_major_file_keep_the_rows_asked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(_columns, "_ROW_BLOCK", 7)  # several blocks, some without kept rows
    rows = np.arange(50 * 3, dtype=np.float64).reshape(50, 3)
    rows[4, 1] = np.nan
    (tmp_path / "rows.f8").write_bytes(rows.tobytes())
    keep = np.array([0, 4, 5, 20, 21, 22, 49])
    store = ColumnStore(tmp_path / "columns.f8", len(keep))
    store.add_rows(tmp_path / "rows.f8", 50, ["a", "b", "c"], keep)
    store.add("d", np.arange(len(keep)) * 10)
    assert store.columns == ["a", "b", "c", "d"] and len(store) == 7 and "b" in store
    np.testing.assert_array_equal(store.values("b"), rows[keep, 1])
    assert store["d"].tolist() == [0, 10, 20, 30, 40, 50, 60]
    store.add("d", np.ones(len(keep)))  # replaced in place
    assert store.columns == ["a", "b", "c", "d"] and store["d"].sum() == 7
    taken = store.take([1, 6])
    assert list(taken.index) == [1, 6] and taken.loc[6, "a"] == rows[49, 0]
    view = store.select(["c", "missing", "a"])
    assert view.columns == ["c", "a"] and view["a"].equals(store["a"])
    with pytest.raises(KeyError):
        view.values("b")
    with pytest.raises(ValueError, match="3 values"):
        store.add("e", [1, 2, 3])
    store.remove()
    assert not (tmp_path / "columns.f8").exists()


def test_checks_and_probes_read_the_store_as_they_read_a_frame(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"id": np.arange(n), "brightness": rng.uniform(0, 1, n),
                          "contrast": rng.uniform(0, 0.3, n),
                          "brightness_p99": rng.uniform(0.2, 1, n),
                          "brightness_p01": rng.uniform(0, 0.8, n),
                          "sharpness": rng.uniform(0, 4, n), "entropy": rng.uniform(0, 5, n),
                          "size_ratio": rng.uniform(0, 3, n), "larger": rng.random(n) > 0.5,
                          "aspect_skew": rng.uniform(0, 2, n), "grayscale": rng.random(n) > 0.9,
                          "width": rng.integers(10, 500, n), "height": rng.integers(10, 500, n)})
    frame.loc[3, "contrast"] = np.nan
    store = ColumnStore(tmp_path / "columns.f8", n)
    for name in frame.columns:
        store.add(name, frame[name].to_numpy(dtype=float))
    findings, used = run_checks(store)
    assert findings and (findings, used) == run_checks(frame)
    labels = pd.Series(np.where(frame["brightness"] > 0.5, "day", "night"))
    labels[7] = None
    probed = ["brightness", "contrast"]
    bias = bias_probe(store.select(probed), labels)
    assert bias.loc[bias["property"] == "brightness", "flagged"].item()
    pd.testing.assert_frame_equal(bias, bias_probe(frame[probed], labels))
    sampled = bias_probe(store.select(probed), labels, max_rows=150)  # large sets: a sample
    assert sampled["n"].max() <= 150
    assert sampled.loc[sampled["property"] == "brightness", "flagged"].item()
    correct = np.where(frame["contrast"] > 0.1, 1.0, 0.0)
    correct[:20] = np.nan
    pd.testing.assert_frame_equal(error_probe(store.select(probed), correct),
                                  error_probe(frame[probed], correct))
