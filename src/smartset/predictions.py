"""Model predictions stored in the catalog: out-of-fold, held-out and in-sample.

The learning stage writes them (:func:`write_predictions`), the cleaning stage and the
review app read them (:func:`read_predictions`, or ``Workspace.predictions``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smartset.errors import SmartsetError

__all__ = ["Predictions", "PredictionsNotFoundError", "write_predictions", "read_predictions",
           "PREDICTION_KINDS"]

PREDICTION_KINDS = ("oof", "eval", "train")


class PredictionsNotFoundError(SmartsetError, LookupError):
    """No stored predictions match the request."""


@dataclass(frozen=True)
class Predictions:
    """Predictions of one run.

    ``probs`` is ``(n, k)`` float32 in the order of ``classes`` (``None`` for regression,
    where ``targets`` holds the predicted values). ``folds`` gives, for out-of-fold
    predictions, the fold that held each sample out. ``in_sample`` is true when the model
    saw the samples it predicted (kind ``train``): such probabilities are overconfident and
    must not feed label-noise detection.
    """

    run_id: int
    kind: str
    sample_ids: np.ndarray
    classes: list[str]
    probs: np.ndarray | None
    labels: np.ndarray
    predicted: np.ndarray
    folds: np.ndarray
    targets: np.ndarray | None

    @property
    def in_sample(self) -> bool:
        return self.kind == "train"

    def __len__(self) -> int:
        return len(self.sample_ids)


def write_predictions(catalog, run_id: int, sample_ids: Sequence[str], *, kind: str,
                      classes: Sequence[str] = (), probs: np.ndarray | None = None,
                      labels: Sequence[str | None] | None = None,
                      folds: Sequence[int] | None = None,
                      targets: np.ndarray | None = None) -> None:
    """Store one run's predictions; the run's config must name its ``classes``."""
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"kind must be one of {PREDICTION_KINDS}, got {kind!r}")
    n = len(sample_ids)
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != (n, len(classes)):
            raise ValueError(f"probs has shape {probs.shape}, expected ({n}, {len(classes)})")
    rows = []
    for i, sid in enumerate(sample_ids):
        p = None if probs is None else probs[i]
        rows.append((run_id, sid, kind, None if folds is None else int(folds[i]),
                     None if labels is None else labels[i],
                     None if p is None else classes[int(np.argmax(p))],
                     None if p is None else p.tobytes(),
                     None if targets is None else float(targets[i])))
    with catalog.write() as con:
        con.executemany("INSERT OR REPLACE INTO predictions(run_id, sample_id, kind, fold, label,"
                        " predicted, probs, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def read_predictions(catalog, *, run: int | None = None, kind: str = "oof") -> Predictions:
    """The predictions of ``run`` (default: the newest finished run that stored ``kind``)."""
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"kind must be one of {PREDICTION_KINDS}, got {kind!r}")
    if run is None:
        found = catalog.query(
            "SELECT MAX(p.run_id) FROM predictions p JOIN runs r ON r.id = p.run_id"
            " WHERE p.kind = ? AND r.status = 'done'", (kind,))
        run = found[0][0] if found else None
        if run is None:
            hint = ("smartset predict --oof" if kind == "oof" else "smartset train / evaluate")
            raise PredictionsNotFoundError(f"No finished run stored {kind!r} predictions yet: "
                                           f"run '{hint}' first.")
    config = catalog.query("SELECT config FROM runs WHERE id = ?", (run,))
    if not config:
        raise PredictionsNotFoundError(f"No run {run}. See 'smartset runs'.")
    classes = list(json.loads(config[0][0]).get("classes") or [])
    rows = catalog.query("SELECT sample_id, fold, label, predicted, probs, target FROM predictions"
                         " WHERE run_id = ? AND kind = ? ORDER BY sample_id", (run, kind))
    if not rows:
        raise PredictionsNotFoundError(f"Run {run} stored no {kind!r} predictions.")
    has_probs = rows[0]["probs"] is not None
    probs = (np.stack([np.frombuffer(r["probs"], dtype=np.float32) for r in rows])
             if has_probs else None)
    has_targets = rows[0]["target"] is not None
    return Predictions(
        run_id=int(run), kind=kind,
        sample_ids=np.array([r["sample_id"] for r in rows], dtype=object),
        classes=classes, probs=probs,
        labels=np.array([r["label"] for r in rows], dtype=object),
        predicted=np.array([r["predicted"] for r in rows], dtype=object),
        folds=np.array([-1 if r["fold"] is None else r["fold"] for r in rows], dtype=np.int64),
        targets=np.array([r["target"] for r in rows], dtype=np.float64) if has_targets else None)
