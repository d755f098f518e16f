"""Out-of-fold predictions for every sample (:func:`predict_oof`): which model and size
to use on the data at hand, a CNN per fold or a head on frozen backbone embeddings, and
the stored probabilities and features the cleaning stage reads."""

from __future__ import annotations


import numpy as np

from smartset._progress import progress_job
from smartset.learn._common import _jsonable, run_dir
from smartset.learn._splits import _group_folds, derived_mask, duplicate_groups
from smartset.learn.data import load_version
from smartset.learn.errors import LearnError
from smartset.learn.metrics import classification_report
from smartset.learn.store import register_oof_features
from smartset.predictions import write_predictions


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
