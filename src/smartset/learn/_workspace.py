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
from pathlib import Path

import numpy as np

from smartset._atomic import write_text as atomic_write_text
from smartset._progress import progress_job
from smartset.learn._baselines import classification_baselines, regression_baselines
from smartset.learn.crossval import fold_ids
from smartset.learn.data import LoadedData, load_version
from smartset.learn.errors import LeakageError, LearnError
from smartset.learn.estimator import ImageClassifier, ImageRegressor, load_checkpoint
from smartset.learn.metrics import (classification_report, misclassified_montage,
                                    plot_confusion, regression_report, top_losses)
from smartset.learn.tta import TTA_VIEWS, tta_proba, tta_views  # noqa: F401
from smartset.learn.store import oof_features_of, read_oof_features, register_oof_features
from smartset.predictions import write_predictions

__all__ = ["train", "predict_oof", "evaluate", "baselines", "duplicate_groups",
           "lineage_roots", "derived_mask", "split_holdout", "read_oof_features", "oof_features_of", "run_dir",
           "choose_oof_model", "auto_size", "embedding_cache_status", "predict_images"]

_HELD_OUT = ("test", "val", "valid", "validation")


def run_dir(ws, run_id: int) -> Path:
    return ws.path / "models" / f"run-{run_id}"


def lineage_roots(ws, ids=None) -> dict[str, str]:
    """The lineage root of each sample: the original an augmented (or oversampled) copy was
    made from, following chains of copies of copies; an original is its own root.
    ``ids``: the samples to answer for (default: every derived sample of the catalog; a
    sample missing from the answer is an original)."""
    parent = ws.origins()

    def root(sid: str) -> str:
        seen = set()
        while sid in parent and sid not in seen:
            seen.add(sid)
            sid = parent[sid]
        return sid

    wanted = parent.keys() if ids is None else (str(i) for i in ids)
    return {sid: root(sid) for sid in wanted}


def derived_mask(ws, ids) -> np.ndarray:
    """``True`` for each of ``ids`` that smartset derived from another sample (augmented or
    oversampled copies: a row in the catalog's ``lineage``)."""
    derived = set(ws.origins())
    return np.array([str(i) in derived for i in ids], dtype=bool)


def duplicate_groups(ws, ids) -> np.ndarray:
    """A group key per sample: samples of one lineage (an original and every copy derived
    from it), samples with the same bytes, and samples in one duplicate set of the newest
    audit share a key, transitively, so that they land on the same side of every split,
    fold and leakage check."""
    ids = list(ids)
    roots = lineage_roots(ws, ids)
    all_roots = lineage_roots(ws)
    parent = {r: r for r in roots.values()}  # the union-find runs over lineage roots

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(members):
        members = [m for m in {all_roots.get(m, m) for m in members} if m in parent]
        for other in members[1:]:
            parent[find(other)] = find(members[0])

    by_sha: dict[str, list[str]] = {}
    for sid, sha in ws.content_hashes(available_only=False).items():
        by_sha.setdefault(sha, []).append(sid)
    for members in by_sha.values():
        if len(members) > 1:
            union(members)
    from smartset.audit.store import duplicate_sets

    for members in duplicate_sets(ws).values():  # the reference audit's sets
        union(members)
    return np.array([find(roots[str(s)]) for s in ids], dtype=object)


def split_holdout(data: LoadedData, groups: np.ndarray, *, test_fraction: float, seed: int,
                  derived: np.ndarray | None = None, include_derived: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and held-out rows: the version's test split when it has one, else a seeded
    stratified ``test_fraction`` of the ``groups`` (:func:`duplicate_groups`: a lineage, its
    copies and duplicates are one group, kept on one side).

    ``derived`` (:func:`derived_mask`): the rows that are augmented copies. They are never
    scored (the held-out rows are originals) unless ``include_derived``; copies of held-out
    samples are not trained on either. Without ``derived``, every row counts as an original.
    """
    derived = np.zeros(len(data), dtype=bool) if derived is None else np.asarray(derived, bool)
    keys = groups.astype(str)
    held = np.isin(data.splits, _HELD_OUT)
    if held.any() and (~held).any():
        is_test, how = held, "the version's test split"
    else:
        if not 0 < test_fraction < 1:
            raise LearnError(f"test_fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(seed)
        unique, group_index = np.unique(keys, return_inverse=True)
        has_original = np.zeros(len(unique), dtype=bool)
        has_original[group_index[~derived]] = True
        strata = data.labels if data.targets is None else np.zeros(len(data), dtype=object)
        test_groups = set()
        for value in sorted(set(strata[~derived].tolist()), key=str):
            rows = np.flatnonzero((strata == value) & ~derived)
            candidates = rng.permutation(np.unique(group_index[rows]))
            take = max(1, int(round(len(candidates) * test_fraction))) if len(candidates) > 1 else 0
            test_groups.update(candidates[:take].tolist())
        is_test = np.isin(group_index, list(test_groups)) & has_original[group_index]
        how = (f"a {test_fraction:.0%} stratified hold-out (lineages and duplicates kept "
               f"together, seed {seed})")
    test_keys = set(keys[is_test & ~derived].tolist())
    # copies of held-out samples: neither trained on nor (unless asked) scored
    copies_of_test = derived & ~is_test & np.isin(keys, list(test_keys))
    train = ~is_test & ~copies_of_test
    test = is_test & (~derived | include_derived)
    left_out = int(is_test.sum() - test.sum() + copies_of_test.sum())
    if left_out:
        how += (f"; {left_out} augmented cop{'y' if left_out == 1 else 'ies'} of held-out "
                f"samples left out (only originals are scored)")
    return np.flatnonzero(train), np.flatnonzero(test), how


_ESTIMATOR_LR = 1e-3  # ImageClassifier's default learning rate, recorded beside lr_find's


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


# -- choosing the out-of-fold model and the image size --------------------------------------
PHOTO_MIN_SIDE = 64  # gray images at least this large (median shorter side) count as photos
CNN_PHOTO_SIZE = 64  # the CNN's input side on photos of differing sizes, unless --size


def _labeled_frame(ws, version):
    frame = ws.samples(version)
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    labeled = frame[frame["label"].notna()]
    if labeled.empty:
        where = f"version {version!r}" if version else "the catalog"
        if len(frame) and frame["targets"].map(lambda t: t is not None).any():
            raise LearnError("out-of-fold probabilities are for classification; this version "
                             "has regression targets.")
        raise LearnError(f"No labeled samples in {where}: ingest labeled data, or label it "
                         f"('smartset label set').")
    return labeled


def _shorter_side(frame) -> float:
    sides = np.minimum(frame["width"].to_numpy(dtype=float), frame["height"].to_numpy(dtype=float))
    sides = sides[np.isfinite(sides)]
    return float(np.median(sides)) if len(sides) else 0.0


def _is_colour(frame) -> bool:
    return not set(frame["mode"].dropna()) <= {"L", "1", "I;16", "I"}


def choose_oof_model(ws, version: str | None = None, *, model: str | None = None,
                     backbone: str | None = None, augment=None) -> dict:
    """Which model ``predict_oof`` fits, and why: ``{"kind": "backbone" | "cnn", "model",
    "backbone", "reason"}``.

    ``backbone`` given: a frozen backbone + linear head. ``model`` given: that CNN. Else,
    by the data: colour images (or gray ones with a median shorter side of at least
    :data:`PHOTO_MIN_SIDE` px) get :data:`smartset.backbones.DEFAULT_BACKBONE` + a linear
    head when its package is installed; small gray images (digits) and ``augment`` (which
    only trained fold models can use) get ``small_cnn``.
    """
    from smartset.backbones import DEFAULT_BACKBONE, backbone_spec

    if backbone is not None:
        if model is not None:
            raise LearnError(f"Give --backbone (a frozen backbone + linear head) or --model "
                             f"(a CNN trained per fold), not both (got {backbone!r} and "
                             f"{model!r}).")
        spec = backbone_spec(backbone)
        return {"kind": "backbone", "model": "linear_head", "backbone": spec.name,
                "reason": f"--backbone {spec.name}: a frozen backbone + linear head"}
    if model is not None:
        return {"kind": "cnn", "model": model, "backbone": None,
                "reason": f"--model {model}: a CNN trained per fold"}
    frame = _labeled_frame(ws, version)
    colour, side = _is_colour(frame), _shorter_side(frame)
    looks = (f"{'colour' if colour else 'gray'} images, median shorter side {side:.0f} px")
    if augment is not None:
        return {"kind": "cnn", "model": "small_cnn", "backbone": None,
                "reason": f"--augment trains the fold models on augmented images: small_cnn "
                          f"({looks}; a frozen backbone would ignore the augmentation)"}
    if colour or side >= PHOTO_MIN_SIDE:
        spec = backbone_spec(DEFAULT_BACKBONE)
        if not spec.installed():
            return {"kind": "cnn", "model": "small_cnn", "backbone": None,
                    "reason": f"photos ({looks}), but {spec.name} is not installed "
                              f"(pip install {spec.pip}): small_cnn"}
        return {"kind": "backbone", "model": "linear_head", "backbone": spec.name,
                "reason": f"photos ({looks}): a frozen {spec.name} + linear head "
                          f"(--model small_cnn trains a CNN instead)"}
    return {"kind": "cnn", "model": "small_cnn", "backbone": None,
            "reason": f"small gray images ({looks}): small_cnn"}


def auto_size(ws, version: str | None = None, size=None) -> tuple:
    """The CNN input size for ``version``: ``(size, note)``. ``size`` given: it, unchanged.
    Images of one size: ``None`` (kept as they are). Differing sizes: ``min(64, median
    shorter side)`` px, rounded down to a multiple of 8 (at least 16), and a note saying so."""
    if size is not None:
        return size, None
    frame = ws.samples(version)
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    sizes = frame.dropna(subset=["width", "height"]).groupby(["height", "width"]).size()
    if len(sizes) <= 1:
        return None, None
    side = _shorter_side(frame)
    chosen = max(16, int(min(CNN_PHOTO_SIZE, side)) // 8 * 8)
    low, high = frame["width"] * frame["height"], frame["width"] * frame["height"]
    small, large = frame.loc[low.idxmin()], frame.loc[high.idxmax()]
    note = (f"images resized to {chosen}x{chosen} px (their sizes differ, "
            f"{int(small['width'])}x{int(small['height'])} to "
            f"{int(large['width'])}x{int(large['height'])}; --size to choose)")
    return chosen, note


def predict_oof(ws, version: str | None = None, *, model: str | None = None,
                backbone: str | None = None, folds: int = 5, size=None,
                mode: str | None = None, fit: str = "stretch", seed: int = 0, engine=None,
                progress: bool | None = None, **options) -> dict:
    """Out-of-fold class probabilities for every labeled sample of ``version``.

    Each sample is predicted by a model that did not see it; folds are stratified and keep
    duplicate groups together (a copy in the training folds would leak its label).
    Probabilities are stored (kind ``oof``) with the run, the features as an artifact
    (:func:`read_oof_features`).

    Which model (:func:`choose_oof_model`; the result's ``chosen`` says which and why):

    - a frozen backbone + linear head (``backbone="efficientnet_lite0"``, the default for
      photos): the embeddings (:func:`smartset.embeddings.embed`, cached by content, on
      ``engine``: default this process) are the stored features; a logistic regression per
      fold (:mod:`smartset.learn.heads`) gives the probabilities, and one fitted on every
      sample is saved as ``models/run-N/head.npz`` for ``smartset predict RUN``. ``size``,
      ``mode``, ``fit`` and the training options do not apply (the backbone's own
      preprocessing does, recorded in the config); ``batch_size`` is the embedding batch.
    - a CNN trained per fold (``model="small_cnn"``, the default for small gray images):
      ``options`` go to :class:`ImageClassifier` (epochs, batch_size, augment...);
      ``size`` defaults to the images' own when they share one, else :func:`auto_size`;
      ``engine`` (``serial``, ``local``, ``ray``; default None: here, on the model in
      memory) runs the held-out predictions as batch inference, each fold model saved as
      ``models/run-N/fold-K.pt`` and loaded once per worker.

    ``progress`` (True, False, None: when stderr is a terminal, or a sink of
    :mod:`smartset._progress`): first one line saying what will be trained (model, folds,
    size, backbone or not, and why), then ONE bar for the whole job: decoding or embedding,
    then each fold as a phase ("fold 2/5 · small_cnn epoch 3/10 loss 0.41"), with one
    overall time remaining.
    """
    chosen = choose_oof_model(ws, version, model=model, backbone=backbone,
                              augment=options.get("augment"))
    title, plan = _oof_plan(ws, version, chosen, folds=folds, size=size, options=options)
    with progress_job(title, folds, enabled=progress) as job:
        job.note(plan)
        # a frozen backbone: the embedding is nearly all the work, the heads take seconds
        with job.phase("embedding" if chosen["kind"] == "backbone" else "",
                       folds if chosen["kind"] == "backbone" else 0):
            return _predict_oof(ws, version, chosen=chosen, folds=folds, size=size,
                                mode=mode, fit=fit, seed=seed, engine=engine,
                                progress=job.enabled, **options)


def _oof_plan(ws, version, chosen: dict, *, folds: int, size, options: dict) -> tuple[str, str]:
    """The job's title and the line that says, before any work, what will be trained."""
    if chosen["kind"] == "backbone":
        from smartset.backbones import backbone_spec

        spec = backbone_spec(chosen["backbone"])
        return (f"predict --oof {spec.name} + linear head",
                f"predict --oof: {folds} folds; a frozen pretrained {spec.name} backbone "
                f"embeds every image at {spec.size}x{spec.size} px (its own preprocessing), "
                f"then a linear head per fold; why: {chosen['reason']}")
    size, size_note = auto_size(ws, version, size)
    shown = ("the images' own size" if size is None else
             f"{size}x{size} px" if isinstance(size, int) else f"{size[0]}x{size[1]} px")
    epochs = options.get("epochs") or 8  # cross_val_predict's default
    return (f"predict --oof {chosen['model']}",
            f"predict --oof: {folds} folds; {chosen['model']} trained from scratch per fold "
            f"(no pretrained backbone), {epochs} epoch{'s' if epochs != 1 else ''} at {shown}"
            f"{'; ' + size_note if size_note else ''}; why: {chosen['reason']}")


def _predict_oof(ws, version, *, chosen: dict, folds: int, size, mode, fit, seed, engine,
                 progress, **options) -> dict:
    """:func:`predict_oof` once the model is chosen (inside its progress job)."""
    if chosen["kind"] == "backbone":
        return _predict_oof_backbone(ws, version, chosen=chosen, folds=folds, seed=seed,
                                     engine=engine, progress=progress,
                                     batch_size=int(options.get("batch_size") or 32),
                                     ignored=sorted([k for k, v in options.items()
                                                     if v is not None and k != "batch_size"]
                                                    + [k for k, v in (("size", size),
                                                                      ("mode", mode))
                                                       if v is not None]))
    model = chosen["model"]
    size, size_note = auto_size(ws, version, size)
    data = load_version(ws, version, size=size, mode=mode, fit=fit, progress=progress)
    if data.targets is not None:
        raise LearnError("out-of-fold probabilities are for classification; this version "
                         "has regression targets.")
    classes = sorted(set(data.labels.tolist()), key=str)
    codes = np.array([classes.index(v) for v in data.labels.tolist()])
    fold = _group_folds(codes, duplicate_groups(ws, data.ids), folds, seed)
    config = {"stage": "predict", "oof": True, "model": model, "version": version,
              "folds": folds, "size": list(data.size), "mode": data.mode, "fit": fit,
              "classes": classes, "n": int(len(data)), "options": _jsonable(options),
              "chosen": chosen["reason"], "size_note": size_note}
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
        metrics = _store_oof(ws, run_id, data.ids, data.labels, classes, probs, fold,
                             features, {"source": f"{model} fold models"})
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, "chosen": chosen, **metrics}


def _store_oof(ws, run_id, ids, labels, classes, probs, fold, features, meta) -> dict:
    """Write the out-of-fold probabilities and the features artifact; the run's metrics."""
    out_dir = run_dir(ws, run_id)
    write_predictions(ws.catalog, run_id, ids.tolist(), kind="oof", classes=classes,
                      probs=probs, labels=labels.tolist(), folds=fold)
    features_path = out_dir / "oof_features.npz"
    np.savez(features_path, ids=ids.astype(str), features=features)
    register_oof_features(ws, run_id, features_path,
                          {"run_id": run_id, "dim": int(features.shape[1]), **meta})
    originals = ~derived_mask(ws, ids)  # every sample gets probabilities; originals a score
    if not originals.any():
        originals[:] = True
    report = classification_report(labels[originals], probs[originals], classes)
    return {"oof": {**{k: report[k] for k in ("accuracy", "log_loss", "macro",
                                              "most_confused")},
                    "n": int(len(ids)), "n_scored": int(originals.sum()),
                    "derived_not_scored": int((~originals).sum())},
            "features": features_path.relative_to(ws.path).as_posix()}


def _predict_oof_backbone(ws, version, *, chosen: dict, folds: int, seed: int, engine,
                          progress, batch_size: int, ignored: list[str]) -> dict:
    """The frozen-backbone path of :func:`predict_oof`."""
    import time

    from smartset.backbones import backbone_spec
    from smartset.embeddings import embed
    from smartset.learn.heads import HEAD_C, LinearHead, cross_val_head

    started = time.perf_counter()
    spec = backbone_spec(chosen["backbone"])
    frame = _labeled_frame(ws, version)
    cached_before = embedding_cache_status(ws, version, backbone=spec.name,
                                           sample_ids=frame["id"].tolist())["cached"]
    embedded = embed(ws, version, backbone=spec.name, sample_ids=frame["id"].tolist(),
                     engine=engine, batch_size=batch_size, progress=progress)
    embed_seconds = time.perf_counter() - started
    labels_of = dict(zip(frame["id"], frame["label"]))
    ids = np.asarray(embedded.ids, dtype=object)
    labels = np.array([labels_of[i] for i in ids], dtype=object)
    classes = sorted(set(labels.tolist()), key=str)
    codes = np.array([classes.index(v) for v in labels.tolist()])
    fold = _group_folds(codes, duplicate_groups(ws, ids), folds, seed)
    head_params = {"kind": "logistic_regression", "C": HEAD_C, "standardize": False,
                   "features": "L2-normalised pooled embeddings"}
    config = {"stage": "predict", "oof": True, "model": "linear_head", "backbone": spec.name,
              "preprocessing": spec.preprocessing(), "head": head_params, "version": version,
              "folds": folds, "size": [spec.size, spec.size], "mode": "RGB",
              "classes": classes, "n": int(len(ids)), "chosen": chosen["reason"],
              "ignored_options": ignored, "skipped": embedded.missing[:50]}
    run_id = ws.catalog.start_run("predict --oof", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        out_dir = run_dir(ws, run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        head_started = time.perf_counter()
        probs = cross_val_head(embedded.vectors, codes, fold, classes=classes, seed=seed)
        head = LinearHead(classes, backbone=spec.name, preprocessing=spec.preprocessing(),
                          seed=seed).fit(embedded.vectors, codes)
        head.save(out_dir / "head.npz")
        head_seconds = time.perf_counter() - head_started
        metrics = _store_oof(ws, run_id, ids, labels, classes, probs, fold, embedded.vectors,
                             {"source": f"{spec.name} embeddings", "backbone": spec.name})
        metrics |= {"head": (out_dir / "head.npz").relative_to(ws.path).as_posix(),
                    "embedding": {"backbone": spec.name, "size": spec.size,
                                  "dim": int(embedded.vectors.shape[1]),
                                  "cached": int(min(cached_before, len(ids))),
                                  "computed": int(max(0, len(ids) - cached_before)),
                                  "missing": [list(m) for m in embedded.missing],
                                  "seconds": round(embed_seconds, 3)},
                    "head_seconds": round(head_seconds, 3),
                    "seconds": round(time.perf_counter() - started, 3)}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, "chosen": chosen, **metrics}


def embedding_cache_status(ws, version: str | None = None, *, backbone: str,
                           sample_ids=None) -> dict:
    """How many samples of ``version`` have cached embeddings of ``backbone``:
    ``{"n", "cached", "folder"}`` (computes nothing; :func:`smartset.embeddings.cache_status`)."""
    from smartset.embeddings import cache_status

    return cache_status(ws, version, backbone=backbone, sample_ids=sample_ids)


def _group_folds(codes, groups, folds, seed) -> np.ndarray:
    """Stratified folds over lineage and duplicate groups (:func:`duplicate_groups`: a
    group's members share a fold, so no copy of a sample trains the model that predicts it)."""
    base = fold_ids(codes, folds, seed)
    first: dict = {}
    out = base.copy()
    for row, group in enumerate(groups.tolist()):
        out[row] = first.setdefault(group, base[row])
    return out


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


def _preprocessing_of(backbone: str) -> dict:
    from smartset.backbones import backbone_spec

    return backbone_spec(backbone).preprocessing()


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


# -- predicting new images with a trained run ----------------------------------------------
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif")


def _predictor(ws, model):
    """``(kind, thing, runs, description)``: a linear head (``models/run-N/head.npz`` of a
    ``predict --oof`` run, or a ``.npz`` path) or a fitted network (:func:`_load_model`)."""
    from smartset.learn.heads import LinearHead

    if isinstance(model, LinearHead):
        return "head", model, [], f"linear head on {model.backbone}"
    head_path = None
    if isinstance(model, int) or (isinstance(model, str) and model.isdigit()):
        folder = run_dir(ws, int(model))
        if not (folder / "model.pt").is_file() and (folder / "head.npz").is_file():
            head_path = folder / "head.npz"
        elif not (folder / "model.pt").is_file():
            raise LearnError(f"Run {model} has no model to predict with (no model.pt, no "
                             f"head.npz): give a 'smartset train' run, or a 'smartset predict "
                             f"--oof' run on a backbone. See 'smartset runs'.")
    elif isinstance(model, (str, Path)) and str(model).endswith(".npz"):
        head_path = Path(model)
    if head_path is not None:
        head = LinearHead.load(head_path)
        runs = [int(head_path.parent.name[4:])] if head_path.parent.name.startswith("run-") else []
        return "head", head, runs, f"a linear head on frozen {head.backbone} embeddings"
    estimator, runs = _load_model(ws, model)
    c, h, w = estimator.input_shape_
    return "network", estimator, runs, f"{estimator.model_name_} ({c}-channel {w}x{h})"


def _files_to_predict(ws, version, folder) -> tuple[list[str], list[str], list[str | None]]:
    """``(names, paths, sample_ids)``: the images of ``folder`` (recursive, sorted; names
    relative to it) or of ``version`` (relpaths; labeled or not)."""
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise LearnError(f"No folder {root}: give a folder of images (--folder PATH).")
        paths = sorted(p for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise LearnError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {root}.")
        return ([p.relative_to(root).as_posix() for p in paths], [str(p) for p in paths],
                [None] * len(paths))
    frame = ws.samples(version)
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    if frame.empty:
        where = f"version {version!r}" if version else "the catalog"
        raise LearnError(f"No images in {where} to predict: ingest some, or give --folder.")
    return frame["relpath"].astype(str).tolist(), frame["path"].tolist(), frame["id"].tolist()


def predict_images(ws, model, version: str | None = None, *, folder=None, out=None,
                   tta=False, tta_n: int | None = None, fit: str | None = None,
                   batch_size: int = 64, progress: bool | None = None) -> dict:
    """Predict the classes of images with a trained run and write them as a CSV.

    ``model``: a ``smartset train`` run id (its ``model.pt``), a checkpoint path, several
    (``"3,4,5"``: an ensemble), or a ``predict --oof`` run on a backbone (its linear head
    ``head.npz`` over the backbone's embeddings). The images: ``folder`` (every image file
    under it, recursively, sorted) or the samples of ``version`` (default: the live
    catalog; labeled or not). Each is decoded at the model's input size and mode (the
    network's checkpoint; ``fit``: ``stretch`` or ``pad``, default the training run's) or
    the backbone's preprocessing (a head). ``tta``: ``True``/``"flip"`` averages the
    probabilities of the image and its mirror; ``"shift"`` of 4% shifts, ``"flip+shift"``
    both (6 views), a policy name ``tta_n`` seeded draws (:mod:`smartset.learn.tta`).

    The CSV (``out``, default ``reports/predict/run-N-NAME.csv``) has one row per image:
    ``file`` (relative to ``folder``, or the sample's relpath), ``label`` (the predicted
    class), then one probability column per class (rows sum to 1): a contest submission.
    Files that cannot be decoded are left out and listed in ``skipped``. Returns ``path``,
    ``n``, ``classes``, ``counts`` (per predicted class), ``model``, ``tta`` (views),
    ``skipped``, ``run_id`` (the recorded run) and ``seconds``.
    """
    import csv
    import time

    from smartset._progress import progress_bar
    from smartset.errors import ImageDecodeError

    started = time.perf_counter()
    if folder is not None and version is not None:
        raise LearnError("Give --version or --folder, not both.")
    views = tta_views(tta, tta_n)
    tta = None if len(views) == 1 else tta
    kind, predictor, runs, description = _predictor(ws, model)
    names, paths, sample_ids = _files_to_predict(ws, version, folder)
    classes = [str(c) for c in predictor.classes_] if kind == "network" \
        else [str(c) for c in predictor.classes]
    if fit is None:
        fit = "stretch"
        if runs:
            found = ws.catalog.run(runs[0])
            if found:
                fit = found["config"].get("fit") or "stretch"
    if kind == "network":
        from smartset.learn.data import _decode

        c, h, w = predictor.input_shape_
        mode = "L" if c == 1 else "RGB"

        def decode(path):
            return _decode(path, mode, (h, w), fit)
    else:
        from smartset.backbones import backbone_spec
        from smartset.embeddings import decode_for_backbone, embed_images

        spec = backbone_spec(predictor.backbone)

        def decode(path):
            return decode_for_backbone(path, spec.size)

    def probabilities(images: np.ndarray) -> np.ndarray:
        if kind == "network":
            return tta_proba(predictor.predict_proba, images, tta, n=tta_n)
        return tta_proba(lambda shown: predictor.predict_proba(
            embed_images(shown, backbone=spec.name, batch_size=batch_size, progress=False)),
            images, tta, n=tta_n)

    kept, skipped, parts = [], [], []
    cached = None
    if kind == "head" and folder is None and tta is None:
        from smartset.embeddings import embed  # a version: the cached embeddings serve

        embedded = embed(ws, version, backbone=spec.name,
                         sample_ids=[s for s in sample_ids if s is not None],
                         batch_size=batch_size, progress=progress)
        cached = dict(zip(embedded.ids.tolist(), range(len(embedded.ids))))
        reasons = dict(embedded.missing)
        rows = [i for i, s in enumerate(sample_ids) if s in cached]
        skipped = [(names[i], reasons.get(sample_ids[i], "could not be decoded"))
                   for i, s in enumerate(sample_ids) if s not in cached]
        if rows:
            parts.append(predictor.predict_proba(
                embedded.vectors[[cached[sample_ids[i]] for i in rows]]))
        kept = rows
    else:
        with progress_bar(len(paths), f"predicting {len(paths)} images"
                          + (f" ({len(views)} views)" if tta else ""),
                          enabled=progress) as advance:
            for first in range(0, len(paths), batch_size):
                block, rows = [], []
                for i in range(first, min(len(paths), first + batch_size)):
                    try:
                        block.append(decode(paths[i]))
                        rows.append(i)
                    except ImageDecodeError as error:
                        skipped.append((names[i], error.reason))
                if block:
                    parts.append(probabilities(np.stack(block)))
                    kept.extend(rows)
                advance(min(batch_size, len(paths) - first))
    if not kept:
        raise LearnError("None of the images could be decoded: nothing to predict.")
    probs = np.concatenate(parts)
    predicted = [classes[j] for j in probs.argmax(1)]
    config = {"stage": "predict", "oof": False, "model_runs": runs, "model": description,
              "version": version, "folder": str(folder) if folder is not None else None,
              "tta": list(views) if tta else None, "classes": classes}
    run_id = ws.catalog.start_run("predict", config)
    with ws.catalog.failing_run(run_id):
        if out is None:
            source = (Path(folder).name if folder is not None else version) or "catalog"
            label = "-".join(str(r) for r in runs) or "model"
            out = ws.path / "reports" / "predict" / f"run-{label}-{source}.csv"
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        columns = [c if c not in ("file", "label") else f"p_{c}" for c in classes]
        temporary = out.with_name(f".{out.name}.{run_id}.tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "label", *columns])
            for row, i in enumerate(kept):
                writer.writerow([names[i], predicted[row],
                                 *(f"{p:.6f}" for p in probs[row].tolist())])
        import os

        os.replace(temporary, out)
        counts = {c: predicted.count(c) for c in classes}
        metrics = {"path": str(out), "n": len(kept), "classes": classes, "counts": counts,
                   "model": description, "tta": list(views) if tta else None,
                   "skipped": [list(s) for s in skipped],
                   "seconds": round(time.perf_counter() - started, 3)}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, **metrics}
