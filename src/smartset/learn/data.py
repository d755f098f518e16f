"""Image arrays of a catalog version for training: decoded once, resized to one size,
cached by fingerprint (the version's samples, labels and the decode options)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smartset._progress import progress_bar
from smartset.data import _load
from smartset.errors import ImageDecodeError
from smartset.learn.errors import LearnError

__all__ = ["LoadedData", "load_version", "LOAD_VERSION"]

LOAD_VERSION = 2  # bump when decoding changes: old caches are then never served


@dataclass
class LoadedData:
    """``images`` uint8 ``(N, H, W, C)``; per-sample ``ids``, ``labels`` (str or None),
    ``targets`` (``(N, T)`` float32 or None), ``splits``, ``paths``; ``skipped``: samples
    that could not be decoded, with the reason."""

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray | None
    splits: np.ndarray
    paths: np.ndarray
    mode: str
    size: tuple[int, int]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> LoadedData:
        rows = np.asarray(rows)
        return LoadedData(self.ids[rows], self.images[rows], self.labels[rows],
                          None if self.targets is None else self.targets[rows],
                          self.splits[rows], self.paths[rows], self.mode, self.size,
                          self.skipped)


def _pick_mode(frame: pd.DataFrame, mode: str | None) -> str:
    if mode is not None:
        if mode not in ("L", "RGB"):
            raise LearnError(f"mode must be 'L' (gray) or 'RGB', got {mode!r}")
        return mode
    gray = {"L", "1", "I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
    return "L" if set(frame["mode"].dropna()) <= gray else "RGB"


def _pick_size(frame: pd.DataFrame, size) -> tuple[int, int]:
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if h < 1 or w < 1:
            raise LearnError(f"size must be positive, got {size!r}")
        return int(h), int(w)
    sizes = frame.groupby(["height", "width"]).size().sort_values(ascending=False)
    if len(sizes) > 1:
        examples = ", ".join(f"{int(w)}x{int(h)}" for h, w in list(sizes.index)[:3])
        raise LearnError(f"The images have {len(sizes)} different sizes (e.g. {examples}): "
                         f"give a size to resize them to, e.g. --size 64 (or size=64).")
    h, w = sizes.index[0]
    return int(h), int(w)


def _decode(path: str, mode: str, size: tuple[int, int], fit: str) -> np.ndarray:
    """``path`` decoded and resized as the data set does (``smartset.data``), always
    ``H x W x C``."""
    array = _load(path, mode, size, fit)
    return array[:, :, None] if array.ndim == 2 else array


def load_version(ws, version: str | None = None, *, size=None, mode: str | None = None,
                 split=None, fit: str = "stretch", labeled_only: bool = True,
                 cache: bool = True, progress: bool | None = None) -> LoadedData:
    """Decode the images of ``version`` (default: the live catalog) into one array.

    ``size``: ``int`` or ``(H, W)`` to resize to (required when sizes differ); ``fit``:
    ``"stretch"`` or ``"pad"`` (keep the aspect ratio); ``mode``: ``"L"`` or ``"RGB"``
    (default: gray when every image is gray). Samples without a label or targets are left
    out when ``labeled_only``. The result is cached under the workspace's cache folder.
    """
    if fit not in ("stretch", "pad"):
        raise LearnError(f"fit must be 'stretch' or 'pad', got {fit!r}")
    frame = ws.samples(version, split=split)
    if labeled_only:
        has_target = frame["targets"].map(lambda t: t is not None)
        frame = frame[frame["label"].notna() | has_target]
    if frame.empty:
        where = f"version {version!r}" if version else "the catalog"
        raise LearnError(f"No labeled samples in {where}: ingest labeled data, or label it "
                         f"('smartset label set').")
    mode = _pick_mode(frame, mode)
    size = _pick_size(frame, size)
    digest = hashlib.sha256(json.dumps(
        [LOAD_VERSION, mode, size, fit, frame["id"].tolist(), frame["sha256"].tolist()]).encode())
    path = ws.cache_dir / "learn" / f"arrays-{digest.hexdigest()[:24]}.npz"
    images = None
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as stored:
            images, kept = stored["images"], stored["kept"]
    if images is None:
        decoded, kept, skipped_rows = [], [], []
        with progress_bar(len(frame), "decoding images", enabled=progress) as advance:
            for row, image_path in enumerate(frame["path"]):
                try:
                    decoded.append(_decode(image_path, mode, size, fit))
                    kept.append(row)
                except ImageDecodeError:
                    skipped_rows.append(row)
                advance(1)
        if not decoded:
            raise LearnError("None of the images could be decoded: see 'smartset audit'.")
        images, kept = np.stack(decoded), np.asarray(kept, dtype=np.int64)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(temporary, images=images, kept=kept)
            os.replace(temporary, path)
    lost = np.setdiff1d(np.arange(len(frame)), kept)
    skipped = [(frame["relpath"].iloc[i], "could not be decoded") for i in lost]
    frame = frame.iloc[kept]
    targets = None
    if frame["targets"].map(lambda t: t is not None).all() and frame["label"].isna().all():
        targets = np.asarray(frame["targets"].tolist(), dtype=np.float32)
    return LoadedData(ids=frame["id"].to_numpy(dtype=object), images=images,
                      labels=frame["label"].to_numpy(dtype=object), targets=targets,
                      splits=frame["split"].to_numpy(dtype=object),
                      paths=frame["path"].to_numpy(dtype=object), mode=mode, size=size,
                      skipped=skipped)
