"""Multi-label training, evaluation and prediction over a workspace (``smartset train
--multi-label``; ``evaluate`` and ``predict`` of such a run).

The tags are :meth:`smartset.Workspace.tags` of the version (frozen with it). A file filed
under several class folders is one image with several tags, so rows with the same content
count once. The hold-out keeps lineages and duplicates on one side, as ``train`` does: the
version's test split when it has one, else a seeded share of the groups (not stratified:
tag combinations are too many to stratify on). The run is recorded like any training run
(config with ``task: multilabel``, per-epoch history, the checkpoint with its per-class
thresholds); the held-out predictions are written as ``models/run-N/heldout.csv`` rather
than into the catalog's predictions table, whose readers (cleaning, review) expect one
label per sample.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from smartset._atomic import write_text as atomic_write_text
from smartset.learn._workspace import derived_mask, duplicate_groups, run_dir
from smartset.learn.data import _decode, load_version
from smartset.learn.errors import LeakageError, LearnError
from smartset.learn.estimator import load_checkpoint
from smartset.learn.multilabel import MultiLabelClassifier, group_folds
from smartset.learn.multilabel_metrics import multilabel_report
from smartset.tags import tag_matrix

__all__ = ["train_multilabel", "evaluate_multilabel", "predict_multilabel", "is_multilabel_run",
           "load_tagged"]

_REFUSED = {"resume_run": "--resume", "lr_find": "--lr-find", "mix": "--mixup/--cutmix",
            "balanced_sampling": "--balanced-sampling"}


def is_multilabel_run(ws, run) -> bool:
    """Whether ``run`` (a run id or checkpoint path) holds a multi-label model."""
    if isinstance(run, int) or (isinstance(run, str) and run.isdigit()):
        found = ws.catalog.run(int(run))
        return found is not None and found["config"].get("task") == "multilabel"
    return False


def load_tagged(ws, version: str | None = None, *, size=None, mode: str | None = None,
                fit: str = "stretch", progress: bool | None = None):
    """``(data, tag_sets)``: the decoded images of ``version`` that have tags (one row per
    content: a file filed under several class folders is one image) and their sorted tags
    (:meth:`smartset.Workspace.tags`)."""
    data = load_version(ws, version, size=size, mode=mode, fit=fit, labeled_only=False,
                        progress=progress)
    tags = ws.tags(version)
    sha = dict(zip(*(ws.samples(version)[c] for c in ("id", "sha256"))))
    seen, rows = set(), []
    for row, sid in enumerate(data.ids.tolist()):
        if tags.get(sid) and sha[sid] not in seen:
            seen.add(sha[sid])
            rows.append(row)
    if not rows:
        where = f"version {version!r}" if version else "the catalog"
        raise LearnError(f"No tagged samples in {where}: ingest a table with a tags column "
                         f"(--tags-column), label samples, or mark them multi-label.")
    data = data.subset(rows)
    return data, [sorted(tags[s]) for s in data.ids.tolist()]


def train_multilabel(ws, version: str | None = None, *, model: str | None = "lenet",
                     size=None, mode: str | None = None, fit: str | None = "stretch",
                     test_fraction: float | None = 0.2, seed: int | None = 0,
                     include_derived: bool = False, progress: bool | None = None,
                     **options) -> dict:
    """Train a :class:`MultiLabelClassifier` on the tags of ``version`` and score it on
    held-out samples; ``options`` go to the estimator (epochs, batch_size, lr,
    class_weight, init_from, trainable_blocks, threshold_fraction, ...). Returns the run's
    id, config, history and ``test`` (:func:`multilabel_report`)."""
    for key, flag in _REFUSED.items():
        if options.get(key):
            raise LearnError(f"{flag} is not available with --multi-label yet: leave it out.")
        options.pop(key, None)
    model, fit = model or "lenet", fit or "stretch"
    test_fraction = 0.2 if test_fraction is None else test_fraction
    seed = 0 if seed is None else seed
    if not 0 < test_fraction < 1:
        raise LearnError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from smartset.learn.pretrained import default_size

    size, _ = default_size(model, size)
    data, tag_sets = load_tagged(ws, version, size=size, mode=mode, fit=fit, progress=progress)
    groups = duplicate_groups(ws, data.ids).astype(str)
    derived = derived_mask(ws, data.ids)
    held = np.isin(data.splits, ("test",))
    if held.any() and (~held).any():
        is_test, holdout = held, "the version's test split"
    else:
        folds = max(2, int(round(1 / test_fraction)))
        is_test = group_folds(len(data), folds, groups=groups, seed=seed) == 0
        holdout = (f"a {1 / folds:.0%} hold-out of lineage groups (copies and duplicates kept "
                   f"together, seed {seed})")
    test_groups = set(groups[is_test & ~derived].tolist())
    train_rows = np.flatnonzero(~is_test & ~np.isin(groups, list(test_groups)))
    test_rows = np.flatnonzero(is_test & (~derived | include_derived))
    classes = sorted({t for row in train_rows for t in tag_sets[row]})
    unseen = sorted({t for row in test_rows for t in tag_sets[row]} - set(classes))
    config = {"stage": "train", "task": "multilabel", "model": model, "version": version,
              "size": list(data.size), "mode": data.mode, "fit": fit, "classes": classes,
              "holdout": holdout, "test_fraction": test_fraction,
              "include_derived": include_derived, "n_train": int(len(train_rows)),
              "n_test": int(len(test_rows)), "unseen_tags": unseen,
              "options": {k: v for k, v in options.items() if v is not None}}
    run_id = ws.catalog.start_run("train", config, seed=seed)
    out_dir = run_dir(ws, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "model.pt"
    with ws.catalog.failing_run(run_id):
        atomic_write_text(out_dir / "train_ids.json", json.dumps(data.ids[train_rows].tolist()))
        estimator = MultiLabelClassifier(model, **{**options, "seed": seed,
                                                   "checkpoint": checkpoint,
                                                   "progress": progress})
        estimator._fixed_classes = classes
        estimator.fit(data.images[train_rows], [tag_sets[r] for r in train_rows],
                      groups=groups[train_rows])
        metrics = {"history": estimator.history_, "best_epoch": estimator.best_epoch_,
                   "train_seconds": round(estimator.train_seconds_, 3),
                   "thresholds": dict(zip(classes, map(float, estimator.thresholds_))),
                   "checkpoint": str(checkpoint.relative_to(ws.path)), "holdout": holdout}
        if len(test_rows):
            known = [[t for t in tag_sets[r] if t in classes] for r in test_rows]
            probs = estimator.predict_proba(data.images[test_rows])
            truth, _ = tag_matrix(known, classes)
            metrics["test"] = multilabel_report(truth, probs, classes,
                                                thresholds=estimator.thresholds_)
            _write_csv(out_dir / "heldout.csv", data.paths[test_rows].tolist(), probs,
                       estimator, truth=known)
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics}


def _write_csv(path: Path, files, probs, model, *, truth=None) -> Path:
    """``file[,tags],predicted,<probability per class>`` (tags joined by ``|``), atomically."""
    chosen = model.decision(None, probs=probs)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", *(["tags"] if truth is not None else []), "predicted",
                     *model.classes_])
    for i, name in enumerate(files):
        predicted = "|".join(c for c, on in zip(model.classes_, chosen[i]) if on)
        given = ["|".join(truth[i])] if truth is not None else []
        writer.writerow([name, *given, predicted, *(f"{p:.6f}" for p in probs[i])])
    atomic_write_text(path, buffer.getvalue())
    return path


def _load(ws, run) -> tuple[MultiLabelClassifier, dict, int]:
    run_id = int(run)
    found = ws.catalog.run(run_id)
    if found is None:
        raise LearnError(f"No run {run_id}. See 'smartset runs'.")
    model = load_checkpoint(run_dir(ws, run_id) / "model.pt")
    if not isinstance(model, MultiLabelClassifier):
        raise LearnError(f"Run {run_id} is not a multi-label run (train it with --multi-label).")
    return model, found["config"], run_id


def evaluate_multilabel(ws, run, version: str | None = None, *, split=None,
                        force: bool = False, progress: bool | None = None) -> dict:
    """Score multi-label run ``run`` on the tagged samples of ``version`` (``split``) that it
    did not train on: its training samples, and samples sharing a lineage or duplicate set
    with them, are refused (:class:`LeakageError`) unless ``force`` (the report then says
    so). Writes ``reports/evaluate/run-N/multilabel.json``; returns the report."""
    model, config, run_id = _load(ws, run)
    c, h, w = model.input_shape_
    data, tag_sets = load_tagged(ws, version, size=(h, w), mode="L" if c == 1 else "RGB",
                             fit=config.get("fit") or "stretch", progress=progress)
    if split is not None:
        rows = np.flatnonzero(np.isin(data.splits, [split] if isinstance(split, str) else split))
        data, tag_sets = data.subset(rows), [tag_sets[r] for r in rows]
    trained_path = run_dir(ws, run_id) / "train_ids.json"
    trained = set(json.loads(trained_path.read_text())) if trained_path.exists() else set()
    groups = duplicate_groups(ws, data.ids).astype(str)
    trained_groups = set(groups[np.isin(data.ids.astype(str), list(trained))].tolist())
    seen = np.isin(groups, list(trained_groups))
    if seen.any() and not force:
        if seen.all():
            raise LeakageError(f"Every tagged sample of this data copies a sample run {run_id} "
                               f"trained on: score other data, or pass --force.")
    rows = np.arange(len(data)) if force else np.flatnonzero(~seen)
    known = [[t for t in tag_sets[r] if t in model.classes_] for r in rows]
    probs = model.predict_proba(data.images[rows])
    truth, _ = tag_matrix(known, model.classes_)
    report = multilabel_report(truth, probs, model.classes_, thresholds=model.thresholds_)
    report |= {"run_id": run_id, "version": version, "split": split,
               "left_out_trained": int(seen.sum()) if not force else 0,
               "forced": bool(force and seen.any()),
               "unseen_tags": sorted({t for r in rows for t in tag_sets[r]}
                                     - set(model.classes_))}
    out = ws.reports_dir / "evaluate" / f"run-{run_id}" / "multilabel.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2))
    report["path"] = str(out)
    return report


def predict_multilabel(ws, run, version: str | None = None, *, folder=None, out=None,
                       progress: bool | None = None) -> dict:
    """Write ``file,predicted,<probability per class>`` for the images of ``folder`` (every
    image under it) or of ``version``, with multi-label run ``run``: ``predicted`` the tags
    at or above their class's threshold, joined by ``|``. Files that cannot be decoded are
    listed in ``skipped``."""
    from smartset.errors import ImageDecodeError
    from smartset.learn._workspace import _files_to_predict

    started = time.perf_counter()
    if folder is not None and version is not None:
        raise LearnError("Give --version or --folder, not both.")
    model, config, run_id = _load(ws, run)
    names, paths, _ = _files_to_predict(ws, version, folder)
    c, h, w = model.input_shape_
    mode, fit = ("L" if c == 1 else "RGB"), config.get("fit") or "stretch"
    kept, images, skipped = [], [], []
    for name, path in zip(names, paths):
        try:
            images.append(_decode(path, mode, (h, w), fit))
            kept.append(name)
        except (ImageDecodeError, OSError) as error:
            skipped.append((name, str(error)[:200]))
    if not images:
        raise LearnError("None of the images could be decoded; see 'skipped'.")
    probs = model.predict_proba(np.stack(images))
    label = Path(folder).name if folder is not None else (version or "catalog")
    path = Path(out) if out else ws.reports_dir / "predict" / f"run-{run_id}-{label}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(path, kept, probs, model)
    chosen = model.decision(None, probs=probs)
    return {"path": str(path), "n": len(kept), "classes": model.classes_,
            "thresholds": dict(zip(model.classes_, map(float, model.thresholds_))),
            "counts": dict(zip(model.classes_, map(int, chosen.sum(0)))),
            "skipped": skipped, "run_id": run_id,
            "seconds": round(time.perf_counter() - started, 3)}

