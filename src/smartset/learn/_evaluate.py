"""Evaluating a trained run on a version (:func:`evaluate`): loading runs and
checkpoints, refusing leaked samples, conditions and shifts, test-time augmentation and
saliency beside the plain score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smartset.learn._common import _report, run_dir
from smartset.learn._splits import derived_mask, duplicate_groups, lineage_roots
from smartset.learn.data import LoadedData, load_version
from smartset.learn.errors import LeakageError, LearnError
from smartset.learn.estimator import ImageClassifier, ImageRegressor, load_checkpoint
from smartset.learn.tta import tta_views
from smartset.predictions import write_predictions


def load_model(ws, model_or_run):
    """A fitted model from a training run id, a checkpoint path, or several of those (a
    list, or "3,4,5": an ensemble of their probabilities); ``loaded_from_`` says which
    (what an audit's ``embedding_model`` records)."""
    model, _ = _load_model(ws, model_or_run)
    if not isinstance(model_or_run, (ImageClassifier, ImageRegressor)):
        model.loaded_from_ = str(model_or_run)
    return model


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
             force: bool = False, held_out: bool = False, exclude_leaked: bool = False,
             include_derived: bool = False, shifts=(), positive=None,
             preprocess: str | None = None, tta=None, tta_n: int | None = None,
             saliency: bool = False, progress: bool | None = None) -> dict:
    """Evaluate a trained model on ``version``: a run id, a checkpoint path, or several
    (an ensemble: their probabilities averaged).

    ``tta`` (``flip``, ``shift``, ``flip+shift`` or a policy; ``tta_n`` views): the score
    under test-time augmentation beside the plain one (``report["tta"]``; the stored
    predictions stay the plain ones). ``saliency``: occlusion and Grad-CAM maps of the
    misclassified images (:func:`smartset.learn.saliency.saliency_report`).

    Which samples: those of ``version`` (``split``, ``sample_ids`` narrow them), originals
    only: augmented copies are left out unless ``include_derived``. Leakage guard: samples
    the model was trained on, augmented copies (or the originals) of them, and duplicates
    of them (same bytes, an audit duplicate set) are refused unless ``force``, and then
    every report says so; ``exclude_leaked`` scores the rest instead, and ``held_out``
    (the samples the run(s) did not train on) leaves them out too. ``left_out`` in the
    result counts what was left out and why.

    The report holds metrics per bucket of brightness, contrast and image size; ``shifts``
    adds rows under synthetic shifts of the evaluated images
    (:data:`smartset.learn.robustness.SHIFTS`); ``positive`` (a class) adds the knife-study
    table (condition, n, TP, FP, precision, recall, F1) over those conditions.
    ``preprocess``: ``None`` uses the model's own test-time preprocessing, ``"dacolt"``
    applies brightness-guided preprocessing at test time, ``"none"`` turns it off.
    """
    if force and (held_out or exclude_leaked):
        raise LearnError("--force measures seen samples too; --held-out and --exclude-leaked "
                         "leave them out: give one or the other.")
    estimator, run_ids = _load_model(ws, model)
    c, h, w = estimator.input_shape_
    data = load_version(ws, version, size=(h, w), mode="L" if c == 1 else "RGB",
                        split=split, progress=progress)
    if sample_ids is not None:
        wanted = set(sample_ids)
        data = data.subset(np.flatnonzero([i in wanted for i in data.ids]))
    if not len(data):
        raise LearnError("No samples to evaluate: check the version, --split or --held-out.")
    left_out = {"derived": 0, "trained": 0, "copies_of_trained": 0}
    if not include_derived:
        derived = derived_mask(ws, data.ids)
        if derived.all():
            raise LearnError(f"All {len(data)} samples to evaluate are augmented copies, and "
                             f"only originals are scored: pass --include-derived to score "
                             f"copies.")
        left_out["derived"] = int(derived.sum())
        data = data.subset(np.flatnonzero(~derived))
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
    leaked = leakage.pop("leaked")
    if held_out and not leakage["checked"]:
        raise LearnError("--held-out needs training run ids with their recorded training "
                         "samples (models/run-N/train_ids.json): give a 'smartset train' run.")
    if leakage["n"] and (held_out or exclude_leaked):
        if leakage["n"] == len(data):
            raise LearnError(f"All {len(data)} samples to evaluate were seen in training (or "
                             f"copy samples that were): nothing held out is left to score.")
        left_out["trained"] = leakage["same_sample"]
        left_out["copies_of_trained"] = leakage["n"] - leakage["same_sample"]
        data = data.subset(np.flatnonzero([i not in leaked for i in data.ids]))
        leakage = {**leakage, "excluded": leakage["n"], "n": 0, "same_sample": 0,
                   "lineage": 0, "duplicates": 0, "sample_ids": []}
    elif leakage["n"] and not force:
        rest = len(data) - leakage["n"]
        raise LeakageError(
            f"{leakage['n']} of the {len(data)} evaluated samples were seen in training "
            f"({leakage['same_sample']} the same samples, {leakage['lineage']} augmented "
            f"copies or originals of them, {leakage['duplicates']} duplicates of them): the "
            f"score would be inflated. Pass --exclude-leaked to score the other {rest}, or "
            f"--force to measure them too (the report is then marked).")
    config = {"stage": "evaluate", "model_runs": run_ids, "model": estimator.model_name_,
              "version": version, "split": split, "force": force, "held_out": held_out,
              "exclude_leaked": exclude_leaked, "include_derived": include_derived,
              "left_out": left_out, "shifts": list(shifts),
              "positive": positive, "preprocess": preprocess,
              "tta": None if tta in (None, False, "none") else str(tta), "tta_n": tta_n,
              "saliency": bool(saliency),
              "classes": list(getattr(estimator, "classes_", []))}
    if (tta not in (None, False, "none") or saliency) and task != "classification":
        raise LearnError("--tta and --saliency score classifiers; this model is a regressor.")
    if tta not in (None, False, "none"):
        tta_views(tta, tta_n)  # an unknown name: one line, before the run is recorded
    eval_id = ws.catalog.start_run("evaluate", config)
    out_dir = run_dir(ws, eval_id)
    with ws.catalog.failing_run(eval_id):
        report = _report(task, estimator, data, np.arange(len(data)), out_dir,
                         "evaluation" + (" (LEAKED samples included)" if leakage["n"] else ""))
        probs = report.pop("probs", None)
        report.pop("predicted", None)
        report["leakage"] = leakage
        report["left_out"] = left_out
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
            if config["tta"] is not None:
                from smartset.learn.tta import tta_report

                found = tta_report(estimator, data.images, data.labels, probs, tta, n=tta_n)
                found.pop("probs")
                report["tta"] = found
            if saliency:
                from smartset.learn.saliency import saliency_report

                report["saliency"] = saliency_report(estimator, data.images, data.labels,
                                                     data.ids.tolist(), probs, out_dir)
            if positive is not None:
                from smartset.learn.robustness import condition_table

                for bucket in report["by_condition"].get("brightness", []):
                    rows = np.asarray(bucket.pop("rows"))
                    conditions[f"{bucket['bucket']} brightness"] = (data.labels[rows],
                                                                    predicted[rows])
                # the conditions overlap (shifted copies and terciles of the same images)
                report["condition_table"] = condition_table(conditions, positive,
                                                            disjoint=False)
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
    """Which of ``ids`` the training runs ``run_ids`` saw (their ``train_ids.json``), the
    same samples or copies of them (:func:`_leakage_counts`)."""
    trained: set[str] = set()
    checked = False
    for run_id in run_ids:
        path = run_dir(ws, run_id) / "train_ids.json"
        if path.exists():
            trained |= set(json.loads(path.read_text()))
            checked = True
    if not checked:
        return {"n": 0, "same_sample": 0, "lineage": 0, "duplicates": 0, "checked": False,
                "leaked": set()}
    return _leakage_counts(ws, trained, ids)


def _leakage_counts(ws, trained, ids) -> dict:
    """Which of ``ids`` a model trained on ``trained`` has seen: ``same_sample`` (trained
    on it), ``lineage`` (an augmented copy of it, or its original, was trained on),
    ``duplicates`` (same bytes or an audit duplicate set); ``n`` in all, ``sample_ids``
    (the first 50) and ``leaked`` (the set)."""
    trained = {str(t) for t in trained}
    ids = [str(i) for i in ids]
    same = {i for i in ids if i in trained}
    every = list(trained | set(ids))
    keyed = dict(zip(every, duplicate_groups(ws, every)))
    roots = lineage_roots(ws, every)
    trained_groups = {keyed[t] for t in trained}
    trained_roots = {roots[t] for t in trained}
    related = {i for i in ids if i not in same and keyed[i] in trained_groups}
    lineage = {i for i in related if roots[i] in trained_roots}
    return {"n": len(same) + len(related), "same_sample": len(same), "lineage": len(lineage),
            "duplicates": len(related - lineage), "checked": True,
            "sample_ids": sorted(same | related)[:50], "leaked": same | related}
