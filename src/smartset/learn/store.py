"""What the learning stage stores beyond runs and predictions, and its typed readers: the
out-of-fold feature files of ``predict --oof`` (catalog ``artifacts`` of kind
``features``), which the cleaning stage reads (:func:`oof_features_of`). Runs are the
catalog's (:meth:`smartset.catalog.Catalog.run`), predictions :mod:`smartset.predictions`'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smartset.catalog import now

__all__ = ["register_oof_features", "read_oof_features", "oof_features_of"]


def register_oof_features(ws, run_id: int, path: Path, meta: dict) -> None:
    """Register the feature file ``path`` (inside the workspace) of out-of-fold run
    ``run_id`` (replacing an earlier one of the same run)."""
    with ws.catalog.write() as con:
        con.execute("INSERT OR REPLACE INTO artifacts(name, path, kind, fingerprint, meta,"
                    " created_at) VALUES (?, ?, 'features', ?, ?, ?)",
                    (f"oof_features.run{run_id}", Path(path).relative_to(ws.path).as_posix(),
                     str(run_id), json.dumps(meta), now()))


def _artifacts(ws, run: int | None):
    """``(path, meta)`` of the stored out-of-fold feature files, newest first (artifact kind
    ``features``; ``oof_features`` as older workspaces wrote it), of ``run`` when given."""
    rows = ws.catalog.query("SELECT path, fingerprint, meta FROM artifacts WHERE kind IN "
                            "('features', 'oof_features') ORDER BY created_at DESC, rowid DESC")
    for row in rows:
        meta = json.loads(row["meta"] or "{}")
        owner = meta.get("run_id", row["fingerprint"])
        if run is None or owner is None or str(owner) == str(run):
            yield ws.path / row["path"], meta


def read_oof_features(ws, run: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sample_ids, features)`` stored by :func:`predict_oof` (default: its newest run)."""
    for path, _ in _artifacts(ws, run):
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                ids = stored["ids"] if "ids" in stored else stored["sample_ids"]
                return ids.astype(object), stored["features"]
    from smartset.predictions import PredictionsNotFoundError

    raise PredictionsNotFoundError("No out-of-fold features stored: run 'smartset predict --oof'.")


def oof_features_of(ws, run: int, sample_ids) -> tuple[np.ndarray, dict] | None:
    """The out-of-fold features ``run`` stored, as float32 rows in ``sample_ids`` order, with
    the artifact's meta (``backbone`` when they are frozen embeddings); None when the run
    stored none that cover every sample."""
    for path, meta in _artifacts(ws, run):
        if not path.is_file():
            continue
        with np.load(path, allow_pickle=False) as stored:
            ids = (stored["ids"] if "ids" in stored else
                   stored["sample_ids"] if "sample_ids" in stored else None)
            if ids is None or "features" not in stored:
                continue
            position = {str(s): i for i, s in enumerate(ids)}
            if all(str(s) in position for s in sample_ids):
                rows = [position[str(s)] for s in sample_ids]
                return stored["features"][rows].astype(np.float32), meta
    return None


