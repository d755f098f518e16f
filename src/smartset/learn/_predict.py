"""Predicting new images with a trained run (:func:`predict_images`): a version or a
folder in, a CSV out, with test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartset.learn._common import run_dir
from smartset.learn._evaluate import _load_model
from smartset.learn.errors import LearnError
from smartset.learn.tta import tta_proba, tta_views


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
