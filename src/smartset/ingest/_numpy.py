"""NumPy array files (``.npz`` with ``images`` and ``labels``), written out once as PNGs.

Every sample of a workspace is a file, so that later stages, the review app and exports
treat array data like any folder of images. The export is resumable: each PNG is written
under a temporary name and renamed, a marker records the archive's sha256 when all are
written, and a re-run with the same archive writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from smartset._atomic import write_text
from smartset._progress import progress_bar
from smartset.errors import SourceError
from smartset.ingest._sources import SPLITS, Entry, SourcePlan, _split_of

_IMAGE_KEYS = ("images", "x", "X", "data", "x_train", "imgs")
_LABEL_KEYS = ("labels", "y", "Y", "y_train", "label")
_TARGET_KEYS = ("targets", "target", "values")
_MARKER = ".smartset-export.json"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_uint8_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 4 and images.shape[1] in (1, 3, 4) and images.shape[-1] not in (1, 3, 4):
        images = np.moveaxis(images, 1, -1)  # N, C, H, W -> N, H, W, C
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise SourceError(
            f"'images' in '{path}' has shape {images.shape}; expected N x H x W (grayscale) or "
            f"N x H x W x C with C = 1, 3 or 4. Reshape the array and save it again.")
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    if np.issubdtype(images.dtype, np.floating):
        low, high = float(np.nanmin(images)), float(np.nanmax(images))
        if np.isnan(images).any() or low < 0.0 or high > 1.0:
            raise SourceError(
                f"'images' in '{path}' is {images.dtype} with values in [{low:g}, {high:g}]; "
                f"expected uint8, or floats in [0, 1]. Scale it and save it again.")
        return np.round(images * 255.0).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    raise SourceError(f"'images' in '{path}' has dtype {images.dtype} with values beyond 0-255; "
                      f"convert it to uint8 and save it again.")


def _labels_of(archive, path: Path, n: int, classes: list[str] | None):
    """Return ``(labels, targets)`` lists of length n (entries may be None)."""
    key = next((k for k in _LABEL_KEYS if k in archive.files), None)
    target_key = next((k for k in _TARGET_KEYS if k in archive.files), None)
    if target_key is not None:
        targets = np.asarray(archive[target_key], dtype=np.float64).reshape(n, -1)
        return [None] * n, [tuple(map(float, row)) for row in targets]
    if key is None:
        return [None] * n, [None] * n
    values = np.asarray(archive[key])
    if values.shape[0] != n:
        raise SourceError(f"'{key}' in '{path}' has {values.shape[0]} entries but there are "
                          f"{n} images; they must match one to one.")
    if values.ndim == 2 and values.shape[1] > 1 and set(np.unique(values)) <= {0, 1}:
        values = values.argmax(axis=1)  # one-hot
    if np.issubdtype(values.dtype, np.integer):
        if classes is None and "classes" in archive.files:
            classes = [str(c) for c in archive["classes"]]
        if classes is not None:
            if values.min() < 0 or values.max() >= len(classes):
                raise SourceError(f"labels in '{path}' run from {values.min()} to {values.max()} "
                                  f"but {len(classes)} class names were given.")
            return [classes[v] for v in values], [None] * n
        return [str(int(v)) for v in values], [None] * n
    if np.issubdtype(values.dtype, np.floating):
        return [None] * n, [tuple(map(float, np.atleast_1d(row))) for row in values]
    return [str(v) for v in values], [None] * n


def plan_numpy(archive_path: Path, data_dir: Path, *, split: str | None,
               classes: list[str] | None = None, show_progress: bool | None = None
               ) -> SourcePlan:
    """Export ``archive_path`` to PNGs under ``data_dir`` (once) and plan their ingest."""
    try:
        archive = np.load(archive_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SourceError(f"Could not read '{archive_path}' as a NumPy .npz archive ({error}). "
                          f"Save it with numpy.savez(path, images=..., labels=...).") from error
    with archive:
        image_key = next((k for k in _IMAGE_KEYS if k in archive.files), None)
        if image_key is None:
            raise SourceError(f"'{archive_path}' has no 'images' array; found: "
                              f"{', '.join(archive.files) or 'nothing'}. Save the images "
                              f"under the key 'images'.")
        images = _as_uint8_images(np.asarray(archive[image_key]), archive_path)
        n = images.shape[0]
        labels, targets = _labels_of(archive, archive_path, n, classes)
        splits = [split] * n
        if "split" in archive.files or "splits" in archive.files:
            given = archive["split" if "split" in archive.files else "splits"]
            splits = [split or _split_of(str(s)) or "train" for s in given]
    digest = _file_sha256(archive_path)
    out = data_dir / f"{archive_path.stem}-{digest[:8]}"
    width = len(str(max(n - 1, 0)))
    names = [f"{i:0{width}d}.png" for i in range(n)]
    marker = out / _MARKER
    done = marker.exists() and json.loads(marker.read_text()).get("sha256") == digest
    if not done:
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar(n, "writing PNGs", enabled=show_progress) as advance:
            for i, name in enumerate(names):
                target = out / name
                if not target.exists():
                    tmp = out / f".{name}.tmp"
                    Image.fromarray(images[i]).save(tmp, format="PNG")
                    os.replace(tmp, target)
                advance(1)
        write_text(marker, json.dumps({"sha256": digest, "source": str(archive_path), "n": n}))
    plan = SourcePlan("numpy", out, f"numpy:{archive_path.resolve()}", "")
    for i, name in enumerate(names):
        info = os.stat(out / name)
        label, target = labels[i], targets[i]
        entry_split = splits[i] or ("unlabeled" if label is None and target is None else "train")
        if entry_split not in SPLITS:
            entry_split = "train"
        plan.entries.append(Entry(name, info.st_size, info.st_mtime_ns, label, target, entry_split))
    kinds = ("regression targets" if targets[0] is not None else
             f"{len(set(labels))} classes" if labels[0] is not None else "no labels")
    plan.detected = (f"NumPy archive '{archive_path.name}': {n} images of {images.shape[1:]} "
                     f"{images.dtype}, {kinds}; PNGs {'already ' if done else ''}written to {out}")
    return plan
