"""The learning stage over a workspace: runs, checkpoints and predictions in the catalog.

``train`` fits a model on a version and evaluates it on held-out samples; ``predict_oof``
stores out-of-fold probabilities (and features) for every sample; ``evaluate`` measures a
trained model on a version, refusing leaked samples unless forced; ``baselines`` reports
the dummy/kNN/linear baselines with the same metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smartset._atomic import write_text as atomic_write_text
from smartset.catalog import now
from smartset.learn.baselines import classification_baselines, regression_baselines
from smartset.learn.crossval import fold_ids
from smartset.learn.data import LoadedData, load_version
from smartset.learn.errors import LeakageError, LearnError
from smartset.learn.estimator import ImageClassifier, ImageRegressor, load_checkpoint
from smartset.learn.metrics import (classification_report, misclassified_montage,
                                    plot_confusion, regression_report, top_losses)
from smartset.predictions import write_predictions

__all__ = ["train", "predict_oof", "evaluate", "baselines", "duplicate_groups",
           "split_holdout", "read_oof_features", "run_dir"]

_HELD_OUT = ("test", "val", "valid", "validation")


def run_dir(ws, run_id: int) -> Path:
    return ws.path / "models" / f"run-{run_id}"


def duplicate_groups(ws, ids) -> np.ndarray:
    """A group key per sample: samples with the same bytes, or in one duplicate set of the
    newest audit, share a key (so they land on the same side of a split)."""
    ids = list(ids)
    parent = {sid: sid for sid in ids}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(members):
        members = [m for m in members if m in parent]
        for other in members[1:]:
            parent[find(other)] = find(members[0])

    by_sha: dict[str, list[str]] = {}
    for row in ws.catalog.query("SELECT id, sha256 FROM samples"):
        by_sha.setdefault(row[1], []).append(row[0])
    for members in by_sha.values():
        if len(members) > 1:
            union(members)
    newest = ws.catalog.query("SELECT MAX(f.run_id) FROM audit_findings f JOIN runs r"
                              " ON r.id = f.run_id WHERE r.status = 'done'")
    if newest and newest[0][0] is not None:
        groups: dict[str, list[str]] = {}
        for sid, grp in ws.catalog.query(
                "SELECT sample_id, grp FROM audit_findings WHERE run_id = ? AND kind IN "
                "('exact_duplicate', 'near_duplicate')", (newest[0][0],)):
            groups.setdefault(grp, []).append(sid)
        for members in groups.values():
            union(members)
    return np.array([find(s) for s in ids], dtype=object)


def split_holdout(data: LoadedData, groups: np.ndarray, *, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and held-out rows: the version's test split when it has one, else a seeded
    stratified ``test_fraction`` that keeps duplicate groups on one side."""
    held = np.isin(data.splits, _HELD_OUT)
    if held.any() and (~held).any():
        return np.flatnonzero(~held), np.flatnonzero(held), "the version's test split"
    if not 0 < test_fraction < 1:
        raise LearnError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    unique, group_index = np.unique(groups.astype(str), return_inverse=True)
    strata = data.labels if data.targets is None else np.zeros(len(data), dtype=object)
    test_groups = set()
    for value in sorted(set(strata.tolist()), key=str):
        rows = np.flatnonzero(strata == value)
        candidates = rng.permutation(np.unique(group_index[rows]))
        take = max(1, int(round(len(candidates) * test_fraction))) if len(candidates) > 1 else 0
        test_groups.update(candidates[:take].tolist())
    is_test = np.isin(group_index, list(test_groups))
    return (np.flatnonzero(~is_test), np.flatnonzero(is_test),
            f"a {test_fraction:.0%} stratified hold-out (duplicates kept together, seed {seed})")


def _estimator(task: str, model: str, options: dict):
    cls = ImageClassifier if task == "classification" else ImageRegressor
    return cls(model, **options)


def _report(task, model, data: LoadedData, rows, out_dir: Path | None, title: str) -> dict:
    if task == "classification":
        probs = model.predict_proba(data.images[rows])
        report = classification_report(data.labels[rows], probs, model.classes_)
        losses = top_losses(data.labels[rows], probs, model.classes_, k=20)
        report["top_losses"] = [{**loss, "sample_id": data.ids[rows][loss["row"]],
                                 "path": data.paths[rows][loss["row"]]} for loss in losses]
        if out_dir is not None:
            report["confusion_png"] = str(plot_confusion(report["confusion"], model.classes_,
                                                         out_dir / "confusion.png", title=title))
            montage = misclassified_montage(
                data.images[rows], data.labels[rows],
                np.asarray(model.classes_, dtype=object)[probs.argmax(1)],
                out_dir / "misclassified.png")
            report["misclassified_png"] = str(montage) if montage else None
        return report | {"probs": probs}
    predicted = model.predict(data.images[rows])
    return regression_report(data.targets[rows], predicted) | {"predicted": predicted}


def train(ws, version: str | None = None, *, model: str = "lenet", size=None,
          mode: str | None = None, fit: str = "stretch", test_fraction: float = 0.2,
          seed: int = 0, resume_run: int | None = None, progress: bool | None = None,
          **options) -> dict:
    """Train ``model`` on ``version`` and evaluate it on held-out samples.

    ``options`` go to :class:`ImageClassifier` (epochs, batch_size, lr, augment,
    class_weight, balanced_sampling, val_fraction, patience, init_from, trainable_blocks,
    ...). The run records its config, seed, versions, per-epoch metrics, wall time and
    checkpoint; held-out predictions are stored (kind ``eval``). ``resume_run`` continues a
    killed run from its last checkpoint.
    """
    data = load_version(ws, version, size=size, mode=mode, fit=fit, progress=progress)
    task = "classification" if data.targets is None else "regression"
    groups = duplicate_groups(ws, data.ids)
    train_rows, test_rows, holdout = split_holdout(data, groups, test_fraction=test_fraction,
                                                   seed=seed)
    classes = sorted(set(data.labels[train_rows].tolist()), key=str) if task == "classification" else []
    config = {"stage": "train", "model": model, "version": version, "size": list(data.size),
              "mode": data.mode, "fit": fit, "task": task, "classes": classes,
              "holdout": holdout, "n_train": int(len(train_rows)),
              "n_test": int(len(test_rows)), "options": _jsonable(options)}
    if resume_run is not None:
        run_id = int(resume_run)
        previous = ws.catalog.query("SELECT config FROM runs WHERE id = ?", (run_id,))
        if not previous:
            raise LearnError(f"No run {run_id} to resume. See 'smartset runs'.")
    else:
        run_id = ws.catalog.start_run("train", config, seed=seed)
    out_dir = run_dir(ws, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "model.pt"
    with ws.catalog.failing_run(run_id):
        estimator = _estimator(task, model, {**options, "seed": seed, "checkpoint": checkpoint,
                                             "resume": resume_run is not None,
                                             "progress": progress})
        if task == "classification":
            estimator._fixed_classes = classes
            estimator.fit(data.images[train_rows], data.labels[train_rows])
        else:
            estimator.fit(data.images[train_rows], data.targets[train_rows])
        atomic_write_text(out_dir / "train_ids.json", json.dumps(data.ids[train_rows].tolist()))
        metrics = {"history": estimator.history_, "best_epoch": estimator.best_epoch_,
                   "train_seconds": round(estimator.train_seconds_, 3),
                   "checkpoint": str(checkpoint.relative_to(ws.path)), "holdout": holdout}
        if len(test_rows):
            report = _report(task, estimator, data, test_rows, out_dir, f"{model} on held-out")
            if task == "classification":
                write_predictions(ws.catalog, run_id, data.ids[test_rows].tolist(), kind="eval",
                                  classes=classes, probs=report.pop("probs"),
                                  labels=data.labels[test_rows].tolist())
            else:
                predicted = report.pop("predicted")
                write_predictions(ws.catalog, run_id, data.ids[test_rows].tolist(), kind="eval",
                                  targets=predicted[:, 0])
            metrics["test"] = report
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics}


def predict_oof(ws, version: str | None = None, *, model: str = "small_cnn", folds: int = 5,
                size=None, mode: str | None = None, fit: str = "stretch", seed: int = 0,
                engine=None, progress: bool | None = None, **options) -> dict:
    """Out-of-fold class probabilities for every labeled sample of ``version``.

    Each sample is predicted by the fold model that did not train on it; folds are
    stratified and keep duplicate groups together (a copy in the training folds would leak
    its label). Probabilities are stored (kind ``oof``) with the run; the fold models'
    features are stored as an artifact (:func:`read_oof_features`). Training runs here;
    ``engine`` (``serial``, ``local``, ``ray``; default None: here, on the model in memory)
    runs the held-out predictions as batch inference, each fold model saved as
    ``models/run-N/fold-K.pt`` and loaded once per worker.
    """
    data = load_version(ws, version, size=size, mode=mode, fit=fit, progress=progress)
    if data.targets is not None:
        raise LearnError("out-of-fold probabilities are for classification; this version "
                         "has regression targets.")
    classes = sorted(set(data.labels.tolist()), key=str)
    codes = np.array([classes.index(v) for v in data.labels.tolist()])
    fold = _group_folds(codes, duplicate_groups(ws, data.ids), folds, seed)
    config = {"stage": "predict", "oof": True, "model": model, "version": version,
              "folds": folds, "size": list(data.size), "mode": data.mode, "fit": fit,
              "classes": classes, "n": int(len(data)), "options": _jsonable(options)}
    run_id = ws.catalog.start_run("predict --oof", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        from smartset.learn.crossval import cross_val_predict

        out_dir = run_dir(ws, run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        probs, features = cross_val_predict(data.images, codes, model=model, folds=folds,
                                            seed=seed, fold=fold, return_features=True,
                                            classes=list(range(len(classes))),
                                            engine=engine, checkpoint_dir=out_dir,
                                            progress=progress, **options)
        write_predictions(ws.catalog, run_id, data.ids.tolist(), kind="oof", classes=classes,
                          probs=probs, labels=data.labels.tolist(), folds=fold)
        features_path = out_dir / "oof_features.npz"
        np.savez(features_path, ids=data.ids.astype(str), features=features)
        with ws.catalog.write() as con:
            con.execute("INSERT OR REPLACE INTO artifacts(name, path, kind, fingerprint, meta,"
                        " created_at) VALUES (?, ?, 'features', ?, ?, ?)",
                        (f"oof_features.run{run_id}", features_path.relative_to(ws.path).as_posix(),
                         str(run_id), json.dumps({"run_id": run_id, "dim": int(features.shape[1])}),
                         now()))
        report = classification_report(data.labels, probs, classes)
        metrics = {"oof": {k: report[k] for k in ("n", "accuracy", "log_loss", "macro",
                                                   "most_confused")},
                   "features": features_path.relative_to(ws.path).as_posix()}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics}


def read_oof_features(ws, run: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sample_ids, features)`` stored by :func:`predict_oof` (default: its newest run)."""
    rows = ws.catalog.query("SELECT path, fingerprint FROM artifacts WHERE kind = 'features'"
                            " ORDER BY CAST(fingerprint AS INTEGER) DESC")
    for path, run_id in rows:
        if run is None or int(run_id) == int(run):
            with np.load(ws.path / path, allow_pickle=False) as stored:
                return stored["ids"].astype(object), stored["features"]
    from smartset.predictions import PredictionsNotFoundError

    raise PredictionsNotFoundError("No out-of-fold features stored: run 'smartset predict --oof'.")


def _group_folds(codes, groups, folds, seed) -> np.ndarray:
    """Stratified folds over duplicate groups (a group's members share a fold)."""
    base = fold_ids(codes, folds, seed)
    first: dict = {}
    out = base.copy()
    for row, group in enumerate(groups.tolist()):
        out[row] = first.setdefault(group, base[row])
    return out


def _load_model(ws, model_or_run):
    """A fitted model and the training runs behind it, from a run id, a checkpoint path,
    several of those (a list, or "3,4,5": an ensemble), or a model object."""
    from smartset.learn.crossval import EnsembleClassifier

    if isinstance(model_or_run, (ImageClassifier, ImageRegressor, EnsembleClassifier)):
        return model_or_run, []
    if isinstance(model_or_run, str) and "," in model_or_run:
        model_or_run = [part.strip() for part in model_or_run.split(",") if part.strip()]
    if isinstance(model_or_run, (list, tuple)):
        loaded = [_load_model(ws, member) for member in model_or_run]
        members = [model for model, _ in loaded]
        if any(not hasattr(m, "classes_") for m in members):
            raise LearnError("ensembles are of classifiers; a member is a regressor")
        return EnsembleClassifier(members), [r for _, runs in loaded for r in runs]
    if isinstance(model_or_run, int) or (isinstance(model_or_run, str) and model_or_run.isdigit()):
        run_id = int(model_or_run)
        return load_checkpoint(run_dir(ws, run_id) / "model.pt"), [run_id]
    path = Path(model_or_run)
    runs = []
    if path.parent.name.startswith("run-") and path.parent.parent == ws.path / "models":
        runs = [int(path.parent.name[4:])]
    return load_checkpoint(path), runs


def evaluate(ws, model, version: str | None = None, *, split=None, sample_ids=None,
             force: bool = False, shifts=(), positive=None, preprocess: str | None = None,
             progress: bool | None = None) -> dict:
    """Evaluate a trained model on ``version``: a run id, a checkpoint path, or several
    (an ensemble: their probabilities averaged).

    Leakage guard: samples the model was trained on, or duplicates of them, are refused
    unless ``force``, and then every report says so. The report holds metrics per bucket of
    brightness, contrast and image size; ``shifts`` adds rows under synthetic shifts of the
    evaluated images (:data:`smartset.learn.robustness.SHIFTS`); ``positive`` (a class) adds
    the knife-study table (condition, n, TP, FP, precision, recall, F1) over those
    conditions. ``preprocess``: ``None`` uses the model's own test-time preprocessing,
    ``"dacolt"`` applies brightness-guided preprocessing at test time, ``"none"`` turns
    it off.
    """
    estimator, run_ids = _load_model(ws, model)
    c, h, w = estimator.input_shape_
    data = load_version(ws, version, size=(h, w), mode="L" if c == 1 else "RGB",
                        split=split, progress=progress)
    if sample_ids is not None:
        wanted = set(sample_ids)
        data = data.subset(np.flatnonzero([i in wanted for i in data.ids]))
    if not len(data):
        raise LearnError("No samples to evaluate: check the version, --split or --held-out.")
    task = "classification" if hasattr(estimator, "classes_") else "regression"
    if task == "classification":
        unknown = sorted(set(data.labels.tolist()) - set(estimator.classes_), key=str)
        if unknown:
            raise LearnError(f"The version has classes the model does not know ({unknown[:5]}); "
                             f"the model knows {estimator.classes_[:10]}. Evaluate on a version "
                             f"of those classes, or train a new head: 'smartset train --init-from "
                             f"CHECKPOINT'.")
        if positive is not None and positive not in estimator.classes_:
            raise LearnError(f"--positive {positive!r} is not a class of the model "
                             f"({estimator.classes_[:10]}).")
    _set_preprocess(estimator, preprocess)
    leakage = _leakage(ws, run_ids, data.ids)
    if leakage["n"] and not force:
        raise LeakageError(
            f"{leakage['n']} of the {len(data)} evaluated samples were seen in training "
            f"({leakage['same_sample']} the same samples, {leakage['duplicates']} duplicates of "
            f"them): the score would be inflated. Evaluate on held-out samples (--held-out, "
            f"--split test), or pass --force to measure anyway (the report is then marked).")
    config = {"stage": "evaluate", "model_runs": run_ids, "model": estimator.model_name_,
              "version": version, "split": split, "force": force, "shifts": list(shifts),
              "positive": positive, "preprocess": preprocess,
              "classes": list(getattr(estimator, "classes_", []))}
    eval_id = ws.catalog.start_run("evaluate", config)
    out_dir = run_dir(ws, eval_id)
    with ws.catalog.failing_run(eval_id):
        report = _report(task, estimator, data, np.arange(len(data)), out_dir,
                         "evaluation" + (" (LEAKED samples included)" if leakage["n"] else ""))
        probs = report.pop("probs", None)
        report.pop("predicted", None)
        report["leakage"] = leakage
        if probs is not None:
            write_predictions(ws.catalog, eval_id, data.ids.tolist(), kind="eval",
                              classes=list(estimator.classes_), probs=probs,
                              labels=data.labels.tolist())
            predicted = np.asarray(estimator.classes_, dtype=object)[probs.argmax(1)]
            report["by_condition"] = _by_condition(ws, version, data, predicted)
            conditions = {"original": (data.labels, predicted)}
            if shifts:
                from smartset.learn.robustness import shift_images

                rows = [{"condition": "original", "n": len(data), "accuracy": report["accuracy"]}]
                for kind in shifts:
                    shifted = estimator.predict(shift_images(data.images, kind))
                    conditions[kind] = (data.labels, shifted)
                    rows.append({"condition": kind, "n": len(data),
                                 "accuracy": float(np.mean(shifted == data.labels))})
                report["robustness"] = rows
            if positive is not None:
                from smartset.learn.robustness import condition_table

                for bucket in report["by_condition"].get("brightness", []):
                    rows = np.asarray(bucket.pop("rows"))
                    conditions[f"{bucket['bucket']} brightness"] = (data.labels[rows],
                                                                    predicted[rows])
                report["condition_table"] = condition_table(conditions, positive)
            for table in report["by_condition"].values():
                for bucket in table:
                    bucket.pop("rows", None)
        ws.catalog.finish_run(eval_id, report)
    return {"run_id": eval_id, **report}


def _set_preprocess(estimator, preprocess: str | None) -> None:
    if preprocess is None:
        return
    from smartset.learn.robustness import PREPROCESSING

    if preprocess != "none" and preprocess not in PREPROCESSING:
        raise LearnError(f"Unknown preprocessing {preprocess!r}; choose from "
                         f"{', '.join(PREPROCESSING)} or none.")
    for member in getattr(estimator, "members", [estimator]):
        member.preprocess_ = None if preprocess == "none" else preprocess


def _by_condition(ws, version, data: LoadedData, predicted: np.ndarray) -> dict:
    """Accuracy per tercile (low, medium, high) of brightness, contrast and image size."""
    from smartset.learn.robustness import brightness

    gray = data.images.astype(np.float32).mean(axis=3).reshape(len(data), -1) / 255.0
    frame = ws.samples(version).set_index("id")
    pixels = (frame["width"] * frame["height"]).reindex(data.ids).to_numpy(dtype=np.float64)
    out = {}
    for name, values in (("brightness", brightness(data.images)), ("contrast", gray.std(1)),
                         ("size", pixels)):
        if len(values) < 3 or np.unique(values).size < 3:
            continue
        edges = np.quantile(values, [0, 1 / 3, 2 / 3, 1])
        bucket = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 2)
        out[name] = [{"bucket": label, "from": float(edges[b]), "to": float(edges[b + 1]),
                      "n": int((bucket == b).sum()),
                      "accuracy": float(np.mean(predicted[bucket == b] == data.labels[bucket == b]))
                      if (bucket == b).any() else float("nan"),
                      "rows": np.flatnonzero(bucket == b).tolist()}
                     for b, label in enumerate(("low", "medium", "high"))]
    return out


def _leakage(ws, run_ids, ids) -> dict:
    trained: set[str] = set()
    checked = False
    for run_id in run_ids:
        path = run_dir(ws, run_id) / "train_ids.json"
        if path.exists():
            trained |= set(json.loads(path.read_text()))
            checked = True
    if not checked:
        return {"n": 0, "same_sample": 0, "duplicates": 0, "checked": False}
    ids = list(ids)
    same = {i for i in ids if i in trained}
    every = list(trained | set(ids))
    keyed = dict(zip(every, duplicate_groups(ws, every)))
    trained_groups = {keyed[t] for t in trained}
    dup = {i for i in ids if i not in same and keyed[i] in trained_groups}
    return {"n": len(same) + len(dup), "same_sample": len(same), "duplicates": len(dup),
            "checked": True, "sample_ids": sorted(same | dup)[:50]}


def baselines(ws, version: str | None = None, *, size=None, mode: str | None = None,
              test_fraction: float = 0.2, k: int = 3, seed: int = 0,
              progress: bool | None = None) -> dict:
    """The dummy, kNN and linear-probe baselines on the same hold-out ``train`` would use."""
    data = load_version(ws, version, size=size, mode=mode, progress=progress)
    groups = duplicate_groups(ws, data.ids)
    train_rows, test_rows, holdout = split_holdout(data, groups, test_fraction=test_fraction,
                                                   seed=seed)
    if not len(test_rows):
        raise LearnError("Nothing held out to evaluate the baselines on.")
    config = {"stage": "baseline", "version": version, "size": list(data.size),
              "mode": data.mode, "holdout": holdout, "k": k}
    run_id = ws.catalog.start_run("baseline", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        rows = []
        if data.targets is None:
            for result in classification_baselines(
                    data.images[train_rows], data.labels[train_rows], data.images[test_rows],
                    k=k, seed=seed):
                report = classification_report(data.labels[test_rows], result["probs"],
                                               result["classes"])
                rows.append({"baseline": result["name"], "accuracy": report["accuracy"],
                             "macro_f1": report["macro"]["f1"],
                             "seconds": round(result["seconds"], 3)})
        else:
            for result in regression_baselines(data.targets[train_rows], len(test_rows)):
                report = regression_report(data.targets[test_rows], result["predicted"])
                rows.append({"baseline": result["name"], "mae": report["mae"],
                             "rmse": report["rmse"]})
        metrics = {"holdout": holdout, "n_train": int(len(train_rows)),
                   "n_test": int(len(test_rows)), "baselines": rows}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, **metrics}


def _jsonable(options: dict) -> dict:
    out = {}
    for key, value in options.items():
        if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)):
            out[key] = value
        elif isinstance(value, Path):
            out[key] = str(value)
        else:
            label = getattr(value, "label", None)
            out[key] = label() if callable(label) else repr(value)
    return out
