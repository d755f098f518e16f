"""Batch inference on the executor seam: a trained checkpoint applied to batches of images.

:func:`predict_batch` is a batch function (:mod:`smartset.engine`), so the ``serial``,
``local`` and ``ray`` engines run the same code and give the same probabilities (to
float rounding: ``1e-6``). Each worker process loads a checkpoint once and keeps it for
the batches that follow (the Ray engine runs plain functions as Ray Data tasks, not
actors, and Ray reuses its worker processes, so a per-process cache serves both).
:func:`predict_on_engine` cuts arrays into batches, maps them and joins the results.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from smartset._torch import one_thread_in_worker_processes, require_torch
from smartset.engine import Batch, Engine, batches_of, get_engine
from smartset.learn.errors import LearnError

torch = require_torch("smartset.learn")

__all__ = ["predict_batch", "predict_on_engine"]

_LOADED: dict[tuple, object] = {}  # at most one model per process: see _model


def _model(checkpoint: str, device: str):
    """The fitted model of ``checkpoint``, loaded once per process (and again only when
    the file changes: the key holds its size and modification time)."""
    from smartset.learn.estimator import load_checkpoint

    stat = os.stat(checkpoint)
    key = (os.path.abspath(checkpoint), stat.st_size, stat.st_mtime_ns, device)
    model = _LOADED.get(key)
    if model is None:
        _LOADED.clear()  # folds come one after another: keep memory to one model
        model = load_checkpoint(checkpoint)
        model.network_.to(device)
        _LOADED[key] = model
    return model


def _images_of(batch: Batch, model, fit: str) -> np.ndarray:
    """The batch's images as uint8 ``(n, H, W, C)`` at the model's input size and mode."""
    if "image" in batch:
        return np.stack([np.asarray(image) for image in batch["image"]])
    if "path" not in batch:
        raise LearnError(f"predict_batch needs a column 'image' (uint8 arrays) or 'path' "
                         f"(image files), got columns {sorted(batch)}.")
    from smartset.learn.data import _decode  # the decoding load_version uses

    channels, height, width = model.input_shape_
    mode = "L" if channels == 1 else "RGB"
    return np.stack([_decode(path, mode, (height, width), fit) for path in batch["path"]])


def predict_batch(batch: Batch, *, checkpoint: str | Path, features: bool = False,
                  fit: str = "stretch", device: str = "cpu") -> Batch:
    """Apply the model saved at ``checkpoint`` to one batch.

    ``batch`` holds ``image`` (uint8 arrays ``H x W`` or ``H x W x C`` at the model's
    input size) or ``path`` (image files or fsspec URLs, decoded and resized to the
    model's input size and mode as :func:`smartset.learn.load_version` does, with ``fit``
    ``"stretch"`` or ``"pad"``). Returns the input columns plus ``probs`` (float32 ``(n,
    n_classes)`` in the model's ``classes_`` order) for a classifier or ``predicted``
    (float32 ``(n, n_targets)``) for a regressor, and ``features`` (float32 ``(n, d)``,
    the backbone's output) when asked. ``device``: where the network runs (``"cpu"`` in
    worker processes: they cannot share the driver's CUDA context).
    """
    one_thread_in_worker_processes(torch)
    model = _model(os.fspath(checkpoint), device)
    images = _images_of(batch, model, fit)
    out = {key: value for key, value in batch.items() if key != "image"}  # pixels stay here
    if hasattr(model, "classes_"):
        out["probs"] = model.predict_proba(images)
    else:
        out["predicted"] = model.predict(images)
    if features:
        out["features"] = model.transform(images)
    return out


def predict_on_engine(checkpoint: str | Path, images, *, engine: str | Engine | None = None,
                      workers: int | None = None, batch_size: int = 256,
                      features: bool = False, device: str = "cpu") -> dict[str, np.ndarray]:
    """:func:`predict_batch` over uint8 ``images`` ``(N, H, W[, C])`` on ``engine`` (a name,
    an engine, or None: ``$SMARTSET_ENGINE``, else ``local``), ``batch_size`` images a
    task. Returns ``{"probs" or "predicted": (N, k), "features": (N, d) when asked}``,
    rows in the order of ``images``."""
    if batch_size < 1:
        raise LearnError(f"batch_size must be at least 1, got {batch_size}")
    images = np.asarray(images)
    runner = get_engine(engine, workers=workers)
    batches = batches_of({"image": images}, batch_size)
    parts: dict[str, list[np.ndarray]] = {}
    for result in runner.map_batches(predict_batch, batches, fn_kwargs={
            "checkpoint": os.fspath(checkpoint), "features": features, "device": device}):
        for key in ("probs", "predicted", "features"):
            if key in result:
                parts.setdefault(key, []).append(np.asarray(result[key]))
    return {key: np.concatenate(values) for key, values in parts.items()}
