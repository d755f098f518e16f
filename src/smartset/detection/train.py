"""Training and running the detector (:mod:`smartset.detection.detector`): the loop over
arrays, checkpoints that resume to the same model, and the workspace layer that records
runs and writes predictions as COCO results and YOLO text files.

Every random step of an epoch (order, augmentation) is drawn from ``(seed, epoch)``, and
the learning rate is a function of the step, so a run resumed from its last epoch's
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._atomic import write_text
from smartset._checkpoint import read_state, save_state
from smartset.detection.detector import (DETECTOR_FORMAT, build_detector, centernet_loss,
                                         centernet_targets, decode, torch)
from smartset.errors import SmartsetError, SourceError

__all__ = ["DetectionData", "Detector", "DetectorError", "fit_detector", "load_detector",
           "data_from_coco", "data_from_workspace", "split_groups", "condition_group",
           "predictions_frame", "train", "predict", "write_coco_results", "write_yolo",
           "evaluate_predictions"]

PREPROCESS = ("none", "dacolt")


class DetectorError(SmartsetError, ValueError):
    """A detector setting, checkpoint or data set that cannot be used; says what to do."""


# -- data --------------------------------------------------------------------------------------
@dataclass
class DetectionData:
    """Images (``H x W x 3`` uint8 arrays) with their ground truth: ``gt`` rows ``image``
    (a key of ``keys``), ``category``, ``x``, ``y``, ``w``, ``h``; ``conditions`` per key
    (or None); ``groups``: images that must stay on one side of a split (condition
    copies of one scene)."""

    keys: list
    images: list
    gt: pd.DataFrame
    conditions: dict = field(default_factory=dict)
    groups: list = field(default_factory=list)
    files: list = field(default_factory=list)
    splits: list = field(default_factory=list)

    def subset(self, rows: Sequence[int]) -> DetectionData:
        keys = [self.keys[i] for i in rows]
        return DetectionData(keys, [self.images[i] for i in rows],
                             self.gt[self.gt["image"].isin(set(keys))].reset_index(drop=True),
                             {k: self.conditions.get(k) for k in keys},
                             [self.groups[i] for i in rows] if self.groups else [],
                             [self.files[i] for i in rows] if self.files else [],
                             [self.splits[i] for i in rows] if self.splits else [])


_CONDITION_SUFFIX = re.compile(r"_(high|medium|low|artificial)$")


def condition_group(relpath: str) -> str:
    """The scene an image shows: its path without the extension and a trailing condition
    suffix (``shape_0003_low.png`` -> ``shape_0003``), so the brightness-shifted copies
    ``synth shapes --conditions`` writes stay on one side of a split."""
    stem = os.path.splitext(relpath)[0]
    return _CONDITION_SUFFIX.sub("", stem)


def _read_rgb(path) -> np.ndarray:
    from smartset.imageio import load_image

    return np.ascontiguousarray(load_image(path, mode="RGB"))


def data_from_coco(coco_path: str | Path) -> DetectionData:
    """A :class:`DetectionData` from a COCO file and the images beside it (what
    ``smartset synth shapes`` writes): keys are the relative file names, conditions from
    the image records' ``condition``."""
    from smartset.detection.formats_in import read_coco

    aset = read_coco(coco_path)
    bad = [i for i in aset.issues if i.reason in ("image_missing", "bad_file")]
    if bad:
        raise SourceError(f"'{coco_path}': {bad[0].detail} ({bad[0].where}); fix the file "
                          f"or the image folder.")
    root = Path(aset.root)
    keys = [image.file for image in aset.images]
    rows = [(a.file, a.category, *a.bbox) for a in aset.annotations]
    gt = pd.DataFrame(rows, columns=["image", "category", "x", "y", "w", "h"])
    return DetectionData(keys, [_read_rgb(root / k) for k in keys], gt,
                         {image.file: image.meta.get("condition") for image in aset.images},
                         [condition_group(k) for k in keys], keys,
                         [image.split for image in aset.images])


def data_from_workspace(ws, version: str | None = None) -> DetectionData:
    """A :class:`DetectionData` of a workspace version (live catalog by default): keys are
    sample ids, conditions from the import's image metadata else measured brightness."""
    from smartset.detection.evaluation import ground_truth, image_conditions

    gt, images = ground_truth(ws, version)
    if images.empty:
        raise DetectorError("The version holds no images; ingest or import some first "
                            "('smartset annotations import').")
    keys = list(images["image"])
    splits = ws.samples(version).set_index("id")["split"].to_dict() \
        if "split" in ws.samples(version).columns else {}
    return DetectionData(keys, [_read_rgb(p) for p in images["path"]],
                         gt[["image", "category", "x", "y", "w", "h"]].reset_index(drop=True),
                         image_conditions(images), [condition_group(r) for r in images["relpath"]],
                         list(images["relpath"]), [splits.get(k) for k in keys])


def split_groups(data: DetectionData, *, test_fraction: float = 0.25, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, test_rows)``: images of a ``test``/``val`` split are held out when
    the data has such splits; otherwise a ``test_fraction`` of the groups (scenes), drawn
    with ``seed``, so condition copies of a scene never straddle the split."""
    held = np.array([str(s).lower() in ("test", "val", "valid", "validation")
                     for s in (data.splits or [None] * len(data.keys))])
    if held.any() and not held.all():
        return np.flatnonzero(~held), np.flatnonzero(held)
    groups = np.array(data.groups or data.keys, dtype=object)
    unique = sorted(set(groups.tolist()), key=str)
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(len(unique))[:max(1, round(test_fraction * len(unique)))])
    test = np.array([unique.index(g) in chosen for g in groups]) if len(unique) > 1 else \
        np.zeros(len(groups), bool)
    return np.flatnonzero(~test), np.flatnonzero(test)


# -- the model wrapper ----------------------------------------------------------------------
def _device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _prepare(images: Sequence[np.ndarray], size: int | None) -> tuple[torch.Tensor, list]:
    """A uint8 ``N x 3 x S x S`` batch: each image stretched to ``size`` (or, ``size``
    None, padded at the bottom and right to a multiple of 16); the scale per image."""
    import cv2

    out, scales = [], []
    if size is None:
        height = max(i.shape[0] for i in images)
        width = max(i.shape[1] for i in images)
        height, width = -(-height // 16) * 16, -(-width // 16) * 16
        for image in images:
            canvas = np.zeros((height, width, 3), np.uint8)
            canvas[:image.shape[0], :image.shape[1]] = image
            out.append(canvas)
            scales.append((1.0, 1.0))
    else:
        for image in images:
            h, w = image.shape[:2]
            out.append(image if (h, w) == (size, size) else
                       cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA
                                  if size < max(h, w) else cv2.INTER_LINEAR))
            scales.append((size / w, size / h))
    batch = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    return batch, scales


class Detector:
    """A trained detector: the network, its classes and everything needed to use it
    (input size, stride, mean/std, test-time ``preprocess``). :meth:`predict` takes
    images and gives boxes in each image's own pixels."""

    def __init__(self, network, config: dict):
        self.network = network
        self.config = dict(config)

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    def _normalise(self, batch: torch.Tensor, preprocess: str | None) -> torch.Tensor:
        if preprocess == "dacolt":
            from smartset.learn.robustness import dacolt_tensor

            # the grid follows the image size; a model trained with dacolt before that
            # (no "dacolt_tiles" in its config) keeps the 4 x 4 grid it learned with
            tiles = self.config.get("dacolt_tiles", 4 if self.config.get("preprocess") ==
                                    "dacolt" else "auto")
            batch = dacolt_tensor(batch, tiles=tiles)
        mean = torch.tensor(self.config["mean"]).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.config["std"]).view(1, 3, 1, 1) * 255
        return ((batch.float() - mean) / std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, score_threshold: float = 0.05,
                size: int | str | None = "model", preprocess: str | None = "model",
                batch_size: int = 16, device: str | None = None) -> list[list[dict]]:
        """Detections per image (``H x W x 3`` uint8 arrays): ``[{"category", "bbox":
        [x, y, w, h], "score"}]`` by falling score. ``size``: ``"model"`` (the training
        size), an int, or ``"native"`` (each image as it is, padded to a multiple of
        16); ``preprocess``: ``"model"`` (the model's own), ``"dacolt"`` or ``"none"``."""
        size = self.config.get("size") if size == "model" else None if size == "native" \
            else int(size)
        preprocess = self.config.get("preprocess") if preprocess == "model" else preprocess
        device = _device(device)
        network = self.network.to(device).eval()
        out = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            if size is None:   # native sizes may differ: one image at a time then
                groups = [[image] for image in chunk] if len({i.shape for i in chunk}) > 1 \
                    else [chunk]
            else:
                groups = [chunk]
            for group in groups:
                batch, scales = _prepare(group, size)
                x = self._normalise(batch, preprocess).to(device)
                for found, (sx, sy), image in zip(
                        decode(network(x), stride=self.config["stride"],
                               score_threshold=score_threshold), scales, group):
                    boxes = found["boxes"].cpu().numpy().astype(np.float64)
                    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] / sx, 0, image.shape[1])
                    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] / sy, 0, image.shape[0])
                    dets = []
                    for box, score, label in zip(boxes, found["scores"].tolist(),
                                                 found["labels"].tolist()):
                        w, h = box[2] - box[0], box[3] - box[1]
                        if w > 0 and h > 0:
                            dets.append({"category": self.classes[label],
                                         "bbox": [float(box[0]), float(box[1]), float(w),
                                                  float(h)], "score": float(score)})
                    out.append(dets)
        return out

    def save(self, path: str | Path, **extra) -> Path:
        """Write the model (weights and config) atomically to ``path``."""
        state = {"format": DETECTOR_FORMAT, "config": self.config,
                 "state_dict": self.network.state_dict(), **extra}
        return _atomic_save(state, Path(path))


_atomic_save = save_state  # the one atomic checkpoint writer (smartset._checkpoint)


def _read(path: str | Path) -> dict:
    return read_state(
        path, format=DETECTOR_FORMAT, error=DetectorError,
        missing="No detector at '{path}': give a 'smartset detect train' run id or the path "
                "of its model.pt.",
        damaged="'{path}' cannot be read as a detector ({reason}); train again or resume the "
                "run.",
        foreign="'{path}' is not a smartset detector (format {format}); give a 'smartset "
                "detect train' model.pt.")


def load_detector(path: str | Path) -> Detector:
    """The :class:`Detector` saved at ``path`` (a ``model.pt`` of ``smartset detect
    train``; a training checkpoint works too)."""
    state = _read(path)
    config = state["config"]
    network = build_detector(len(config["classes"]), backbone=config["backbone"],
                             stride=config["stride"], width=config["width"], pretrained=False)
    network.load_state_dict(state["state_dict"])
    return Detector(network.eval(), config)


# -- training ----------------------------------------------------------------------------------
def _targets(data: DetectionData, classes: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    number = {c: i for i, c in enumerate(classes)}
    by_image = {k: g for k, g in data.gt.groupby("image", sort=False)}
    out = []
    for key in data.keys:
        g = by_image.get(key)
        if g is None or g.empty:
            out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
            continue
        g = g[g["category"].isin(number)]
        out.append((np.array(g[["x", "y", "w", "h"]], np.float32),   # writable copies
                    np.array(g["category"].map(number), np.int64)))
    return out


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def fit_detector(data: DetectionData, *, classes: Sequence[str] | None = None,
                 epochs: int = 30, batch_size: int = 16, lr: float = 2e-3,
                 size: int | None = None, stride: int = 8, width: int = 64,
                 backbone: str = "efficientnet_lite0", policy=None,
                 preprocess: str | None = None, seed: int = 0,
                 checkpoint: str | Path | None = None, resume: bool = False,
                 device: str | None = None, progress=None) -> Detector:
    """Train a detector on ``data`` and return it.

    ``size``: images are stretched to ``size x size`` (None: kept, padded to a multiple of
    16; they must then share one size). ``policy``: a box-aware augmentation policy (a
    name such as ``knife-light`` or ``whale-scale``, a policy file, a Policy), applied
    online, boxes moved with the image. ``preprocess``: ``"dacolt"`` applies
    brightness-guided CLAHE + gamma to every training batch (after augmentation; one CLAHE
    tile per 128 px, :func:`smartset.learn.robustness.clahe_tiles`) and is kept with the
    model for test time. ``checkpoint``: written after every epoch
    (atomically); with ``resume`` an existing one is continued. ``progress``: a callable
    ``(epoch, epochs, loss)``. Uses CUDA when present unless ``device``.
    """
    from smartset.augment.policy import augment, resolve_policy
    from smartset.augment.targets import BoundingBoxes
    from smartset.backbones import backbone_spec

    preprocess = None if preprocess in (None, "none") else preprocess
    if preprocess not in (None, "dacolt"):
        raise DetectorError(f"Unknown preprocess {preprocess!r}; use 'dacolt' or 'none'.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise DetectorError(f"epochs and batch_size must be >= 1 and lr > 0 (got {epochs}, "
                            f"{batch_size}, {lr}).")
    if not data.keys:
        raise DetectorError("No training images: the version or split is empty.")
    classes = sorted(set(data.gt["category"])) if classes is None else list(classes)
    if not classes:
        raise DetectorError("The training images hold no annotations; import boxes first "
                            "('smartset annotations import').")
    if size is None and len({i.shape[:2] for i in data.images}) > 1:
        raise DetectorError("The training images differ in size: give --size (the side "
                            "every image is resized to, e.g. 256).")
    spec = backbone_spec(backbone)
    policy_obj = resolve_policy(policy) if policy not in (None, "none") else None
    config = {"classes": classes, "backbone": backbone, "stride": int(stride),
              "width": int(width), "size": size, "mean": list(spec.mean),
              "std": list(spec.std), "preprocess": preprocess,
              "policy": policy_obj.spec() if policy_obj is not None else None,
              "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
              "seed": int(seed), "architecture": "centernet"}
    if preprocess == "dacolt":   # the CLAHE grid follows the image size (clahe_tiles)
        config["dacolt_tiles"] = "auto"
    device = _device(device)
    generator = torch.Generator().manual_seed(int(seed))
    network = build_detector(len(classes), backbone=backbone, stride=stride, width=width)
    _init_heads(network, generator)
    network.to(device)
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=1e-4)
    model = Detector(network, config)
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and resume and ckpt.exists():
        state = _read(ckpt)
        different = {k: (state["config"].get(k), v) for k, v in config.items()
                     if state["config"].get(k) != v}
        if different:
            raise DetectorError(f"'{ckpt}' was trained with other settings "
                                f"({', '.join(f'{k}: {a} there, {b} here' for k, (a, b) in different.items())}); "
                                f"resume with the same settings, or start a new run.")
        network.load_state_dict(state["state_dict"])
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        start, history = int(state.get("epoch", 0)), list(state.get("history", []))
    targets = _targets(data, classes)
    n = len(data.images)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    warmup = min(total // 10 + 1, 50)
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(start, epochs):
        network.train()
        rng = np.random.default_rng([int(seed), epoch])
        order = rng.permutation(n)
        losses = []
        for b in range(steps_per_epoch):
            rows = order[b * batch_size:(b + 1) * batch_size]
            batch, scales = _prepare([data.images[i] for i in rows], size)
            boxes = [targets[i][0] * np.array([sx, sy, sx, sy], np.float32)
                     for i, (sx, sy) in zip(rows, scales)]
            labels = [targets[i][1] for i in rows]
            if policy_obj is not None:
                bb = BoundingBoxes([torch.from_numpy(x) for x in boxes], "xywh",
                                   tuple(batch.shape[-2:]),
                                   [torch.from_numpy(x) for x in labels], min_visibility=0.3)
                batch, moved = augment((batch, bb), policy_obj, seed=rng).output
                boxes = [x.numpy() for x in moved.to_xyxy()]
                labels = [x.numpy() for x in moved.labels]
            else:
                boxes = [np.concatenate([x[:, :2], x[:, :2] + x[:, 2:]], 1) for x in boxes]
            x = model._normalise(batch, preprocess).to(device)
            goal = centernet_targets(boxes, labels, num_classes=len(classes),
                                     shape=tuple(x.shape[-2:]), stride=stride)
            for group in optimizer.param_groups:
                group["lr"] = _lr(epoch * steps_per_epoch + b, total, lr, warmup)
            loss, parts = centernet_loss(network(x), goal)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5)})
        if progress is not None:
            progress(epoch + 1, epochs, history[-1]["loss"])
        if ckpt is not None:
            model.save(ckpt, optimizer=optimizer.state_dict(), epoch=epoch + 1,
                       history=history)
    model.network.eval()
    model.history_ = history
    model.train_seconds_ = time.perf_counter() - started
    model.cpu_seconds_ = time.process_time() - cpu_started
    return model


def _init_heads(network, generator) -> None:
    """The new layers' weights from ``generator`` (the backbone keeps its pretrained ones)."""
    for name, module in network.named_modules():
        if name.startswith("features"):
            continue
        if isinstance(module, torch.nn.Conv2d):
            bound = 1.0 / np.sqrt(module.in_channels * module.kernel_size[0]
                                  * module.kernel_size[1])
            with torch.no_grad():
                module.weight.uniform_(-bound * np.sqrt(3), bound * np.sqrt(3),
                                       generator=generator)
                if module.bias is not None and not name.startswith("heatmap"):
                    module.bias.zero_()


# -- predictions as frames and files ---------------------------------------------------------
def predictions_frame(keys: Sequence, detections: Sequence[list[dict]]) -> pd.DataFrame:
    """One row per detection: ``image`` (``keys[i]``), ``category``, ``x``, ``y``, ``w``,
    ``h``, ``score`` (what :mod:`smartset.detection.evaluation` reads)."""
    rows = [(key, d["category"], *d["bbox"], d["score"])
            for key, found in zip(keys, detections) for d in found]
    return pd.DataFrame(rows, columns=["image", "category", "x", "y", "w", "h", "score"])


def evaluate_predictions(data: DetectionData, pred: pd.DataFrame, *,
                         score_threshold: float = 0.3) -> dict:
    """mAP (COCO), P/R/F1 at IoU 0.5 (detections scoring at least ``score_threshold``),
    counting F1 and the knife table (as records) of ``pred`` on ``data``."""
    from smartset.detection.evaluation import counting_f1, evaluate_detections, knife_table

    metrics = evaluate_detections(data.gt, pred, score_threshold=score_threshold)
    counting = counting_f1(data.gt, pred, images=data.keys, score_threshold=score_threshold)
    counting.pop("per_image")
    conditions = {k: v for k, v in data.conditions.items() if v}
    table = knife_table(data.gt, pred, conditions or None, score_threshold=score_threshold,
                        images=data.keys)
    return {"map": metrics["map"], "map50": metrics["map50"], "precision": metrics["precision"],
            "recall": metrics["recall"], "f1": metrics["f1"], "counting_f1": counting["f1"],
            "presence_f1": counting["presence"]["f1"], "score_threshold": score_threshold,
            "images": len(data.keys), "table": table.to_dict("records")}


def write_coco_results(path: str | Path, pred: pd.DataFrame, *, image_ids: Mapping,
                       category_ids: Mapping, files: Mapping | None = None) -> Path:
    """A COCO results file (``[{"image_id", "category_id", "bbox", "score"}]``, plus
    ``file_name`` and ``category``) of ``pred``; ``image_ids[image]`` gives each image's
    COCO id, ``category_ids[name]`` each category's number. Written atomically."""
    results = []
    for r in pred.itertuples(index=False):
        item = {"image_id": image_ids[r.image], "category_id": category_ids[r.category],
                "category": r.category, "bbox": [round(float(v), 3) for v in (r.x, r.y, r.w, r.h)],
                "score": round(float(r.score), 5)}
        if files is not None:
            item["file_name"] = files[r.image]
        results.append(item)
    write_text(path, json.dumps(results))
    return Path(path)


def write_yolo(folder: str | Path, pred: pd.DataFrame, *, files: Mapping, sizes: Mapping,
               classes: Sequence[str]) -> Path:
    """YOLO text files, one per image (``files[image]``'s stem, empty if nothing was
    found): ``class cx cy w h score``, coordinates as fractions of ``sizes[image]``
    ``(width, height)``; ``classes.txt`` names the classes in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    number = {c: i for i, c in enumerate(classes)}
    by_image = {k: g for k, g in pred.groupby("image", sort=False)}
    for image, file in files.items():
        width, height = sizes[image]
        lines = []
        for r in by_image.get(image, pred.iloc[:0]).itertuples(index=False):
            lines.append(f"{number[r.category]} {(r.x + r.w / 2) / width:.6f} "
                         f"{(r.y + r.h / 2) / height:.6f} {r.w / width:.6f} {r.h / height:.6f} "
                         f"{r.score:.5f}")
        write_text(folder / (Path(file).stem + ".txt"), "\n".join(lines) + ("\n" if lines else ""))
    write_text(folder / "classes.txt", "\n".join(classes) + "\n")
    return folder


# -- the workspace layer -------------------------------------------------------------------------
def _run_dir(ws, run_id: int) -> Path:
    from smartset.learn._workspace import run_dir

    return run_dir(ws, run_id)


def train(ws, version: str | None = None, *, seed: int = 0, epochs: int = 30,
          batch_size: int = 16, lr: float = 2e-3, size: int | None = None, stride: int = 8,
          policy: str | None = None, preprocess: str | None = None,
          test_fraction: float = 0.25, train_conditions: Sequence[str] | None = None,
          resume_run: int | None = None, device: str | None = None, progress=None) -> dict:
    """Train a detector on a workspace version's boxes and evaluate it on held-out images.

    The hold-out is the version's ``test``/``val`` split if it has one, else
    ``test_fraction`` of the scenes (:func:`split_groups`, seed ``seed``).
    ``train_conditions``: train only on images of these lighting conditions (the test keeps
    all). The run (``smartset runs``: command ``detect train``) records config, seed,
    software versions, the loss per epoch, wall and CPU time, and the held-out metrics;
    its model is ``models/run-N/model.pt``. ``resume_run`` continues a killed run from its
    last checkpoint with its own settings.
    """
    given = {"version": version, "seed": seed, "epochs": epochs, "batch_size": batch_size,
             "lr": lr, "size": size, "stride": stride, "policy": policy,
             "preprocess": preprocess, "test_fraction": test_fraction,
             "train_conditions": list(train_conditions) if train_conditions else None}
    if resume_run is not None:
        found = ws.catalog.run(int(resume_run))
        if found is None or found["command"] != "detect train":
            raise DetectorError(f"No 'detect train' run {resume_run} to resume; see "
                                f"'smartset runs'.")
        given = {k: found["config"]["settings"][k] for k in given}
        run_id = int(resume_run)
    data = data_from_workspace(ws, given["version"])
    train_rows, test_rows = split_groups(data, test_fraction=given["test_fraction"],
                                         seed=given["seed"])
    if given["train_conditions"]:
        wanted = set(given["train_conditions"])
        train_rows = np.array([i for i in train_rows if data.conditions.get(data.keys[i])
                               in wanted], dtype=int)
    train_data, test_data = data.subset(train_rows), data.subset(test_rows)
    config = {"stage": "detect train", "settings": given, "n_train": len(train_rows),
              "n_test": len(test_rows), "architecture": "centernet",
              "backbone": "efficientnet_lite0"}
    if resume_run is None:
        run_id = ws.catalog.start_run("detect train", config, seed=given["seed"])
    out_dir = _run_dir(ws, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ws.catalog.failing_run(run_id):
        write_text(out_dir / "train_ids.json", json.dumps([str(k) for k in train_data.keys]))
        cpu0 = time.process_time()
        model = fit_detector(train_data, classes=sorted(set(data.gt["category"])),
                             epochs=given["epochs"], batch_size=given["batch_size"],
                             lr=given["lr"], size=given["size"], stride=given["stride"],
                             policy=given["policy"], preprocess=given["preprocess"],
                             seed=given["seed"], checkpoint=out_dir / "model.pt",
                             resume=resume_run is not None, device=device, progress=progress)
        metrics = {"history": model.history_, "train_seconds": round(model.train_seconds_, 2),
                   "cpu_seconds": round(time.process_time() - cpu0, 2),
                   "load_average": [round(v, 2) for v in os.getloadavg()],
                   "checkpoint": str((out_dir / "model.pt").relative_to(ws.path))}
        if len(test_rows):
            pred = predictions_frame(test_data.keys, model.predict(test_data.images,
                                                                   device=device))
            report = evaluate_predictions(test_data, pred)
            report["table"] = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                                for k, v in row.items()} for row in report["table"]]
            metrics["test"] = report
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics}


def _model_path(ws, model) -> Path:
    text = str(model)
    if text.isdigit():
        return _run_dir(ws, int(text)) / "model.pt"
    return Path(text)


def predict(ws, model, version: str | None = None, *, folder: str | Path | None = None,
            out: str | Path | None = None, yolo: str | Path | None = None,
            score_threshold: float = 0.05, preprocess: str | None = "model",
            device: str | None = None) -> dict:
    """Run a trained detector (a ``detect train`` run id or a ``model.pt`` path) on a
    version's images (default: the live catalog) or on the images of ``folder``, and write
    a COCO results file (``out``, default ``reports/detect/run-N-predictions.json``; image
    ids as a COCO export of the version gives them, or 1.. in file order for a folder) and,
    with ``yolo``, a folder of YOLO ``.txt`` files. The run is recorded."""
    from smartset.detection.formats_in import _is_image, _walk

    path = _model_path(ws, model)
    detector = load_detector(path)
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise DetectorError(f"'{root}' is not a folder of images.")
        files = [f for f in _walk(root) if _is_image(f)]
        if not files:
            raise DetectorError(f"'{root}' holds no images to detect objects in.")
        keys = files
        image_ids = {f: i + 1 for i, f in enumerate(files)}
        images = [_read_rgb(root / f) for f in files]
        names = dict(zip(keys, files))
    else:
        from smartset.detection.evaluation import ground_truth

        _, frame = ground_truth(ws, version)
        keys = list(frame["image"])
        image_ids = dict(zip(keys, (int(i) for i in frame["coco_id"])))
        images = [_read_rgb(p) for p in frame["path"]]
        names = dict(zip(keys, frame["relpath"]))
    run_id = ws.catalog.start_run("detect predict", {"model": str(path), "version": version,
                                                     "folder": str(folder) if folder else None,
                                                     "score_threshold": score_threshold,
                                                     "preprocess": preprocess})
    with ws.catalog.failing_run(run_id):
        pred = predictions_frame(keys, detector.predict(
            images, score_threshold=score_threshold, preprocess=preprocess, device=device))
        target = Path(out) if out else ws.reports_dir / "detect" / f"run-{run_id}-predictions.json"
        from smartset.detection.store import categories

        numbers = {name: n for n, name in categories(ws).items()}
        numbers = {c: numbers.get(c, i + 1) for i, c in enumerate(detector.classes)}
        write_coco_results(target, pred, image_ids=image_ids, category_ids=numbers, files=names)
        result = {"run_id": run_id, "predictions": len(pred), "images": len(keys),
                  "coco": str(target), "model": str(path)}
        if yolo is not None:
            sizes = {k: (i.shape[1], i.shape[0]) for k, i in zip(keys, images)}
            write_yolo(yolo, pred, files=names, sizes=sizes, classes=detector.classes)
            result["yolo"] = str(yolo)
        ws.catalog.finish_run(run_id, {k: v for k, v in result.items() if k != "run_id"})
    return result
