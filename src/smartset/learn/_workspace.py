"""The learning stage over a workspace: runs, checkpoints and predictions in the catalog.

Every split, fold and leakage check groups samples by lineage (an original and its
augmented copies) and by duplicate set (:func:`duplicate_groups`), and only originals are
scored unless asked (:func:`split_holdout`, :func:`evaluate`).

``train`` fits a model on a version and evaluates it on held-out samples; ``predict_oof``
stores out-of-fold probabilities (and features) for every sample; ``evaluate`` measures a
trained model on a version, refusing leaked samples unless forced; ``baselines`` reports
the dummy/kNN/linear baselines with the same metrics.
"""

from __future__ import annotations

import json

import numpy as np

from smartset._atomic import write_text as atomic_write_text
from smartset.learn._baselines import classification_baselines, regression_baselines
from smartset.learn.data import load_version
from smartset.learn.errors import LearnError
from smartset.learn.metrics import classification_report, regression_report
from smartset.learn.store import oof_features_of, read_oof_features
from smartset.predictions import write_predictions

__all__ = ["train", "predict_oof", "evaluate", "baselines", "duplicate_groups",
           "lineage_roots", "derived_mask", "split_holdout", "read_oof_features", "oof_features_of", "run_dir",
           "choose_oof_model", "auto_size", "embedding_cache_status", "predict_images"]


_TRAIN_DEFAULTS = {"model": "lenet", "fit": "stretch", "test_fraction": 0.2, "seed": 0}


def train(ws, version: str | None = None, *, model: str | None = None, size=None,
          mode: str | None = None, fit: str | None = None, test_fraction: float | None = None,
          seed: int | None = None, resume_run: int | None = None,
          include_derived: bool = False, progress: bool | None = None, **options) -> dict:
    """Train ``model`` (default ``lenet``) on ``version`` and evaluate it on held-out samples.

    ``options`` go to :class:`ImageClassifier` (epochs, batch_size, lr, augment,
    class_weight, balanced_sampling, val_fraction, patience, init_from, trainable_blocks,
    ...). The hold-out is :func:`split_holdout` (default ``test_fraction`` 0.2, ``seed``
    0): lineages and duplicates stay on one side, and only originals are scored unless
    ``include_derived``. Held-out samples that copy a training sample (the version's test
    split can hold some: same bytes, an audit duplicate set, a lineage) are the overlap
    ``evaluate`` refuses: they are reported (``leakage``) and left out of the score, which
    is also given with them (``test_with_leaked``).

    The run records its config, seed, versions, per-epoch metrics, wall time and
    checkpoint; held-out predictions are stored (kind ``eval``). ``resume_run`` continues a
    killed run from its last checkpoint with the run's own configuration (version, model,
    size, mode, fit, hold-out, seed, options); a setting given that differs from it is
    refused, and so is data that no longer gives the run's training samples.
    """
    lr_find = bool(options.pop("lr_find", False))  # the range test sets options["lr"]
    if lr_find and resume_run is not None:
        raise LearnError("--lr-find starts a run; a resumed run keeps its own learning rate: "
                         "leave --lr-find out.")
    given = {"version": version, "model": model, "size": size, "mode": mode, "fit": fit,
             "test_fraction": test_fraction, "seed": seed, **options}
    if resume_run is not None:
        run_id = int(resume_run)
        settings = _resume_settings(ws, run_id, given)
    else:
        run_id = None
        settings = {**given, **{k: v if given.get(k) is None else given[k]
                                for k, v in _TRAIN_DEFAULTS.items()}}
    version, model, size, mode, fit, test_fraction, seed = (
        settings.pop(k) for k in ("version", "model", "size", "mode", "fit", "test_fraction",
                                  "seed"))
    options = settings  # the options given, or (resuming) the run's own
    from smartset.learn.pretrained import default_size

    size, size_note = default_size(model, size)  # a pretrained backbone: its own input size
    if size is None and options.get("init_from") is None:
        size, size_note = auto_size(ws, version, size)  # photos of many sizes: one, said
    data = load_version(ws, version, size=size, mode=mode, fit=fit, progress=progress)
    task = "classification" if data.targets is None else "regression"
    groups = duplicate_groups(ws, data.ids)
    train_rows, test_rows, holdout = split_holdout(
        data, groups, test_fraction=test_fraction, seed=seed,
        derived=derived_mask(ws, data.ids), include_derived=include_derived)
    leakage = _leakage_counts(ws, data.ids[train_rows], data.ids[test_rows])
    leaked = np.isin(data.ids[test_rows].astype(str), list(leakage.pop("leaked")))
    scored_rows = test_rows[~leaked]
    classes = sorted(set(data.labels[train_rows].tolist()), key=str) if task == "classification" else []
    found_lr = None
    if lr_find:
        from smartset.learn.schedule import lr_find as range_test

        finder = _estimator(task, model, {**options, "seed": seed, "progress": False})
        if task == "classification":
            finder._fixed_classes = classes
        found_lr = range_test(finder, data.images[train_rows],
                              data.labels[train_rows] if task == "classification"
                              else data.targets[train_rows])
        options["lr"] = found_lr["lr"]
    config = {"stage": "train", "model": model, "version": version, "size": list(data.size),
              "mode": data.mode, "fit": fit, "task": task, "classes": classes,
              "holdout": holdout, "test_fraction": test_fraction,
              "include_derived": include_derived, "n_train": int(len(train_rows)),
              "n_test": int(len(scored_rows)), "n_test_leaked": int(leaked.sum()),
              "options": _jsonable(options)}
    if size_note:
        config["size_note"] = size_note
    if found_lr is not None:
        config["lr_find"] = {k: found_lr[k] for k in ("method", "lr", "valley", "steep",
                                                      "minimum", "iterations")}
        config["lr_find"] |= {"default_lr": _ESTIMATOR_LR, "plot": "lr_find.png"}
    if run_id is not None:
        _check_resumed_data(ws, run_id, data.ids[train_rows])
    else:
        run_id = ws.catalog.start_run("train", config, seed=seed)
    out_dir = run_dir(ws, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "model.pt"
    with ws.catalog.failing_run(run_id):
        if found_lr is not None:
            from smartset.learn.schedule import plot_lr_find

            plot_lr_find(found_lr, out_dir / "lr_find.png",
                         title=f"{model}: learning-rate range test")
        # written first: a resumed run checks its data against it, and evaluate's guard
        # reads it
        atomic_write_text(out_dir / "train_ids.json", json.dumps(data.ids[train_rows].tolist()))
        estimator = _estimator(task, model, {**options, "seed": seed, "checkpoint": checkpoint,
                                             "resume": resume_run is not None,
                                             "progress": progress})
        if task == "classification":
            estimator._fixed_classes = classes
            estimator.fit(data.images[train_rows], data.labels[train_rows])
        else:
            estimator.fit(data.images[train_rows], data.targets[train_rows])
        metrics = {"history": estimator.history_, "best_epoch": estimator.best_epoch_,
                   "train_seconds": round(estimator.train_seconds_, 3),
                   "threads": getattr(estimator, "threads_", None),
                   "precision": getattr(estimator, "precision_", "fp32"),
                   "checkpoint": str(checkpoint.relative_to(ws.path)), "holdout": holdout,
                   "leakage": leakage}
        if len(scored_rows):
            report = _report(task, estimator, data, scored_rows, out_dir,
                             f"{model} on held-out")
            if task == "classification":
                write_predictions(ws.catalog, run_id, data.ids[scored_rows].tolist(),
                                  kind="eval", classes=classes, probs=report.pop("probs"),
                                  labels=data.labels[scored_rows].tolist())
            else:
                predicted = report.pop("predicted")
                write_predictions(ws.catalog, run_id, data.ids[scored_rows].tolist(),
                                  kind="eval", targets=predicted[:, 0])
            metrics["test"] = report
        if leakage["n"]:
            with_leaked = _report(task, estimator, data, test_rows, None, "")
            with_leaked.pop("probs", None)
            with_leaked.pop("predicted", None)
            metrics["test_with_leaked"] = {k: with_leaked[k] for k in
                                           ("n", "accuracy", "mae", "rmse") if k in with_leaked}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics}


def _resume_settings(ws, run_id: int, given: dict) -> dict:
    """The settings of training run ``run_id`` (its stored config and seed), or a
    :class:`LearnError` naming each setting in ``given`` (not None) that differs from it."""
    found = ws.catalog.run(run_id)
    if found is None:
        raise LearnError(f"No run {run_id} to resume. See 'smartset runs'.")
    command, config, seed = found["command"], found["config"], found["seed"]
    if command != "train":
        raise LearnError(f"Run {run_id} is a '{command}' run, not a training run: resume a "
                         f"'train' run (see 'smartset runs').")
    stored = {"version": config.get("version"), "model": config.get("model"),
              "size": tuple(config["size"]) if config.get("size") else None,
              "mode": config.get("mode"), "fit": config.get("fit") or "stretch",
              "test_fraction": config.get("test_fraction", _TRAIN_DEFAULTS["test_fraction"]),
              "seed": 0 if seed is None else int(seed), **(config.get("options") or {})}
    conflicts = []
    for key, value in given.items():
        if value is None:
            continue
        mine = stored.get(key)
        if key == "size":
            value = (value, value) if isinstance(value, int) else tuple(value)
        elif not isinstance(value, (str, int, float, bool, list, tuple, dict)):
            value = _jsonable({key: value})[key]
        if isinstance(mine, list):
            mine = tuple(mine)
        if isinstance(value, list):
            value = tuple(value)
        if value != mine:
            conflicts.append(f"--{key.replace('_', '-')} {_flag(value)} (run {run_id}: "
                             f"{_flag(mine)})")
    if conflicts:
        raise LearnError(f"Run {run_id} is resumed with its own settings; these differ: "
                         f"{'; '.join(conflicts)}. Drop them, or start a new run without "
                         f"--resume.")
    return dict(stored)


def _flag(value) -> str:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return str(value[0])
    return "none" if value is None else str(value)


def _check_resumed_data(ws, run_id: int, train_ids) -> None:
    """Refuse to resume run ``run_id`` when its version no longer gives the samples it
    trained on (the live catalog changed since: copies added, samples excluded)."""
    path = run_dir(ws, run_id) / "train_ids.json"
    config = ws.catalog.run(run_id)["config"]
    now_ids = [str(i) for i in train_ids]
    if path.exists():
        before = json.loads(path.read_text())
        same = sorted(before) == sorted(now_ids)
    else:
        before = [None] * int(config.get("n_train", len(now_ids)))
        same = len(before) == len(now_ids)
    if not same:
        where = f"version {config['version']!r}" if config.get("version") else "the live catalog"
        raise LearnError(f"Run {run_id} trained on {len(before)} samples of {where}; it now "
                         f"gives {len(now_ids)} other training samples, so the run cannot "
                         f"continue: start a new run (or train on a version, which pins its "
                         f"samples).")


def baselines(ws, version: str | None = None, *, size=None, mode: str | None = None,
              test_fraction: float = 0.2, k: int = 3, seed: int = 0,
              backbone: str | None = "auto", engine=None,
              progress: bool | None = None) -> dict:
    """The dummy, kNN and linear-probe baselines on the same hold-out ``train`` would use.

    ``backbone``: the features of ``knn_embeddings`` and ``linear_probe``. ``"auto"``
    (default): photos (see :func:`choose_oof_model`) use the embeddings of
    :data:`smartset.backbones.DEFAULT_BACKBONE` (cached; computed on ``engine`` when
    missing), small gray images the pixel embedding (8x8 gray + 4x4 colour); a backbone
    name forces it; ``None`` forces the pixel embedding. ``size`` defaults as in
    :func:`auto_size` (the images' own when they share one, else at most 64 px). Each row
    names its feature source (``features``).
    """
    size, size_note = auto_size(ws, version, size)
    data = load_version(ws, version, size=size, mode=mode, progress=progress)
    embedded = None
    if data.targets is None and backbone is not None:
        if backbone == "auto":
            try:
                chosen = choose_oof_model(ws, version)
            except LearnError:
                chosen = {"kind": "cnn"}
            backbone = chosen.get("backbone") if chosen["kind"] == "backbone" else None
        if backbone is not None:
            from smartset.embeddings import embed

            embedded = embed(ws, version, backbone=backbone, sample_ids=data.ids.tolist(),
                             engine=engine, progress=progress)
            position = {sid: i for i, sid in enumerate(embedded.ids.tolist())}
            data = data.subset(np.flatnonzero([sid in position for sid in data.ids]))
            vectors = embedded.vectors[[position[sid] for sid in data.ids]]
    groups = duplicate_groups(ws, data.ids)
    train_rows, test_rows, holdout = split_holdout(data, groups, test_fraction=test_fraction,
                                                   seed=seed, derived=derived_mask(ws, data.ids))
    if not len(test_rows):
        raise LearnError("Nothing held out to evaluate the baselines on.")
    feature_source = (f"{embedded.backbone} embeddings ({embedded.size} px)" if embedded
                      else "pixel embedding (8x8 gray + 4x4 colour)")
    config = {"stage": "baseline", "version": version, "size": list(data.size),
              "mode": data.mode, "holdout": holdout, "k": k, "size_note": size_note,
              "features": feature_source,
              "backbone": embedded.backbone if embedded else None,
              "preprocessing": _preprocessing_of(embedded.backbone) if embedded else None}
    run_id = ws.catalog.start_run("baseline", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        rows = []
        if data.targets is None:
            features = {}
            if embedded is not None:
                features = {"train_features": vectors[train_rows],
                            "test_features": vectors[test_rows], "standardize_probe": False}
            for result in classification_baselines(
                    data.images[train_rows], data.labels[train_rows], data.images[test_rows],
                    k=k, seed=seed, **features):
                report = classification_report(data.labels[test_rows], result["probs"],
                                               result["classes"])
                source = ("" if result["name"] in ("most_frequent", "stratified", "uniform")
                          else f"pixels ({min(28, max(data.size))} px gray)"
                          if result["name"].startswith("knn_pixels") else feature_source)
                rows.append({"baseline": result["name"], "features": source,
                             "accuracy": report["accuracy"],
                             "macro_f1": report["macro"]["f1"],
                             "seconds": round(result["seconds"], 3)})
        else:
            for result in regression_baselines(data.targets[train_rows], len(test_rows)):
                report = regression_report(data.targets[test_rows], result["predicted"])
                rows.append({"baseline": result["name"], "mae": report["mae"],
                             "rmse": report["rmse"]})
        metrics = {"holdout": holdout, "n_train": int(len(train_rows)),
                   "n_test": int(len(test_rows)), "features": feature_source,
                   "size_note": size_note, "baselines": rows}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, **metrics}


# The stage's functions by topic; this module keeps training and the baselines and answers
# for all of them (smartset.learn's exports and older imports read them here).
from smartset.learn._common import (_ESTIMATOR_LR, _estimator, _jsonable,  # noqa: E402,F401
                                    _preprocessing_of, _report, run_dir)
from smartset.learn._evaluate import (_by_condition, _leakage, _leakage_counts,  # noqa: E402,F401
                                      _load_model, _set_preprocess, evaluate, load_model)
from smartset.learn._oof import (CNN_PHOTO_SIZE, PHOTO_MIN_SIDE, auto_size,  # noqa: E402,F401
                                 choose_oof_model, embedding_cache_status, predict_oof)
from smartset.learn._predict import (IMAGE_SUFFIXES, _files_to_predict,  # noqa: E402,F401
                                     _predictor, predict_images)
from smartset.learn._splits import (_HELD_OUT, _group_folds, derived_mask,  # noqa: E402,F401
                                    duplicate_groups, lineage_roots, split_holdout)
