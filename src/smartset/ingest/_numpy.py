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
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from smartset._atomic import write_text
from smartset._progress import progress_bar
from smartset.errors import SourceError
from smartset.ingest._sources import SPLITS, Entry, Issue, SourcePlan, _split_of, label_problem

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


def _array(archive, key: str, path: Path) -> np.ndarray:
    """``archive[key]``, or a :class:`SourceError` naming the array and the fix."""
    try:
        values = np.asarray(archive[key])
    except ValueError as error:  # object arrays: refused, since pickles can run code
        raise SourceError(
            f"'{key}' in '{path}' cannot be read without unpickling ({error}). Save it as a "
            f"plain numeric or string array (e.g. labels.astype(str) or an integer array), "
            f"not dtype=object.") from error
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise SourceError(f"'{key}' in '{path}' is damaged ({type(error).__name__}: {error}). "
                          f"Save the archive again.") from error
    if values.dtype.hasobject:
        raise SourceError(f"'{key}' in '{path}' has dtype object; save it as a plain numeric "
                          f"or string array.")
    return values


def _as_uint8_images(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim == 4 and images.shape[1] in (1, 3, 4) and images.shape[-1] not in (1, 3, 4):
        images = np.moveaxis(images, 1, -1)  # N, C, H, W -> N, H, W, C
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise SourceError(
            f"'images' in '{path}' has shape {images.shape}; expected N x H x W (grayscale) or "
            f"N x H x W x C with C = 1, 3 or 4. Reshape the array and save it again.")
    if images.shape[0] == 0:
        raise SourceError(f"'images' in '{path}' holds no images (shape {images.shape}). "
                          f"Save at least one image.")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise SourceError(f"'images' in '{path}' has shape {images.shape}: images of zero "
                          f"width or height. Check the array's axes and save it again.")
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255
    if np.issubdtype(images.dtype, np.floating):
        finite = np.isfinite(images)
        low = float(images[finite].min()) if finite.any() else float("nan")
        high = float(images[finite].max()) if finite.any() else float("nan")
        if not finite.all() or low < 0.0 or high > 1.0:
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
        raw = _array(archive, target_key, path)
        if raw.ndim == 0 or raw.ndim > 2 or raw.shape[0] != n:
            raise SourceError(f"'{target_key}' in '{path}' has shape {raw.shape} but there are "
                              f"{n} images; expected {n} values or an {n} x T table.")
        try:
            targets = raw.astype(np.float64).reshape(n, -1)
        except (TypeError, ValueError) as error:
            raise SourceError(f"'{target_key}' in '{path}' is {raw.dtype}, not numbers "
                              f"({error}). Save the targets as a float array.") from error
        if targets.shape[1] == 0:
            raise SourceError(f"'{target_key}' in '{path}' has no target columns.")
        bad = np.flatnonzero(~np.isfinite(targets).all(axis=1))
        if bad.size:
            raise SourceError(f"'{target_key}' in '{path}' holds NaN or infinite values (rows "
                              f"{', '.join(map(str, bad[:5].tolist()))}"
                              f"{', ...' if bad.size > 5 else ''}). Drop or fill them and "
                              f"save it again.")
        return [None] * n, [tuple(map(float, row)) for row in targets]
    if key is None:
        return [None] * n, [None] * n
    values = _array(archive, key, path)
    if values.ndim == 0 or values.ndim > 2:
        raise SourceError(f"'{key}' in '{path}' has shape {values.shape}; expected one label "
                          f"per image ({n}) or an {n} x K one-hot table.")
    if values.shape[0] != n:
        raise SourceError(f"'{key}' in '{path}' has {values.shape[0]} entries but there are "
                          f"{n} images; they must match one to one.")
    if values.ndim == 2 and values.shape[1] > 1 and set(np.unique(values)) <= {0, 1}:
        values = values.argmax(axis=1)  # one-hot
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2:
        raise SourceError(f"'{key}' in '{path}' has shape {values.shape} but is not one-hot "
                          f"(0/1 values); save one label per image instead.")
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    if np.issubdtype(values.dtype, np.integer):
        if classes is None and "classes" in archive.files:
            classes = [str(c) for c in _array(archive, "classes", path).reshape(-1)]
        if classes is not None:
            if values.min() < 0 or values.max() >= len(classes):
                raise SourceError(f"labels in '{path}' run from {values.min()} to {values.max()} "
                                  f"but {len(classes)} class names were given.")
            return [classes[v] for v in values], [None] * n
        return [str(int(v)) for v in values], [None] * n
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise SourceError(f"'{key}' in '{path}' holds NaN or infinite values. Drop or fill "
                              f"them and save it again.")
        return [None] * n, [tuple(map(float, np.atleast_1d(row))) for row in values]
    if values.dtype.kind not in ("U", "b"):
        raise SourceError(f"'{key}' in '{path}' has dtype {values.dtype}; expected integers, "
                          f"strings or floats (targets).")
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
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SourceError(f"'{archive_path}' is a single .npy array, not an .npz archive. Save "
                          f"it with numpy.savez(path, images=..., labels=...).")
    with archive:
        image_key = next((k for k in _IMAGE_KEYS if k in archive.files), None)
        if image_key is None:
            raise SourceError(f"'{archive_path}' has no 'images' array; found: "
                              f"{', '.join(archive.files) or 'nothing'}. Save the images "
                              f"under the key 'images'.")
        images = _as_uint8_images(_array(archive, image_key, archive_path), archive_path)
        n = images.shape[0]
        labels, targets = _labels_of(archive, archive_path, n, classes)
        splits = [split] * n
        if "split" in archive.files or "splits" in archive.files:
            split_key = "split" if "split" in archive.files else "splits"
            given = _array(archive, split_key, archive_path).reshape(-1)
            if given.shape[0] != n:
                raise SourceError(f"'{split_key}' in '{archive_path}' has {given.shape[0]} "
                                  f"entries but there are {n} images; they must match.")
            splits = [split or _split_of(str(s)) or "train" for s in given]
    refused = {}
    for i, label in enumerate(labels):
        if label is not None and label_problem(label):
            refused[i] = label_problem(label)
            labels[i] = None
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
    for i, problem in sorted(refused.items())[:1000]:
        plan.issues.append(Issue("bad_label", f"image {i}: label refused: {problem}; "
                                 f"ingested unlabeled. Fix the label and ingest again.",
                                 names[i]))
    kinds = ("regression targets" if targets[0] is not None else
             f"{len(set(labels))} classes" if labels[0] is not None else "no labels")
    plan.detected = (f"NumPy archive '{archive_path.name}': {n} images of {images.shape[1:]} "
                     f"{images.dtype}, {kinds}; PNGs {'already ' if done else ''}written to {out}")
    return plan
