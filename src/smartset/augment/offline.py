"""Offline augmentation: a new data set version of originals plus augmented copies, each
copy a PNG with lineage to its origin (origin id, policy, every parameter), the way the
MNIST study grew 60k digits to 300k and 1.5M.

Nothing is left half-written: the files go to a new folder first (each written under a
temporary name, then renamed), and only when all are there are they registered and the
version made; an error before that removes the folder and leaves the catalog as it was.
"""

from __future__ import annotations

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smartset._atomic import atomic_path
from smartset._progress import progress_bar
from smartset.augment.errors import AugmentError, AugmentParameterError
from smartset.augment.policy import augment, resolve_policy, validate_policy
from smartset.errors import VersionError
from smartset.imageio import load_image

__all__ = ["augment_version"]


def _default_name(version: str | None, label: str, factor: int) -> str:
    name = f"{version or 'live'}-{label}-x{factor}"
    return re.sub(r"[^A-Za-z0-9._+-]", "-", name)[:100]


def augment_version(ws, *, policy, factor: int, version: str | None = None,
                    name: str | None = None, seed: int = 0, batch_size: int = 256,
                    constraints=None, mode: str | None = None, description: str | None = None,
                    include_derived: bool | None = None, workers: int = 2,
                    show_progress: bool | None = None) -> dict:
    """Write version ``name``: the samples of ``version`` (default: the live catalog) plus
    ``factor - 1`` augmented copies of each, so the version holds ``factor`` times as many
    samples (the study's factors: 1, 5, 25).

    ``policy``: a named policy (``"rotation-elastic"``), a policy file, a transform or a
    :class:`~smartset.augment.Policy`; ``constraints`` (e.g. ``"digits"``) are checked
    first. Images are decoded in ``mode`` (Pillow mode; default: each file's own), grouped
    by size and augmented in batches of ``batch_size`` with parameters drawn from ``seed``
    (the same seed and batch size give the same files). Copies are written as PNGs under
    ``WORKSPACE/data/augment-NAME/`` with ``workers`` writer threads, registered with
    ``stage="augment"`` and each sample's replay record (see
    :func:`smartset.augment.replay`). ``include_derived``: also augment samples that are
    themselves derived (augmented) ones; default: yes for an explicit ``version`` (all its
    members), no for the live catalog (so running twice does not compound). Returns a
    summary dict.
    """
    started = time.perf_counter()
    policy = resolve_policy(policy)
    if constraints:
        validate_policy(policy, constraints)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise AugmentParameterError(f"factor must be a whole number >= 1 (the version's size "
                                    f"over the original's: 5 turns 60k into 300k), got {factor!r}.")
    if batch_size < 1:
        raise AugmentParameterError(f"batch_size must be at least 1, got {batch_size}.")
    factor = int(factor)
    if factor > 1 and not policy.leaves():
        raise AugmentParameterError(f"Policy {policy.label!r} changes nothing, so its copies "
                                    f"would repeat the originals: use factor 1.")
    name = name or _default_name(version, policy.label, factor)
    if name in set(ws.versions()["name"]):
        raise VersionError(f"Version {name!r} exists already; versions are immutable, so "
                           f"choose a new name (--name).")
    frame = ws.samples(version)
    if not (include_derived if include_derived is not None else version is not None):
        frame = frame[frame["origin_id"].isna()]
    if frame.empty:
        raise AugmentError(f"{'Version ' + repr(version) if version else 'The catalog'} has no "
                           f"available samples to augment.")
    folder = ws.path / "data" / f"augment-{name}"
    _clear_leftovers(ws, folder)
    config = {"policy": policy.spec(), "factor": factor, "version": version, "name": name,
              "batch_size": batch_size, "mode": mode}
    run_id = ws.catalog.start_run("augment", config, seed=seed)
    copies = factor - 1
    relpaths, origins, records = [], [], []
    registered = False
    try:
        if copies:
            with progress_bar(len(frame) * copies, "augmenting", enabled=show_progress) as advance, \
                    ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for batch_no, (ids, images) in enumerate(_batches(frame, mode, batch_size)):
                    rng = np.random.default_rng([seed, batch_no])
                    batch = images.repeat_interleave(copies, dim=0)
                    result = augment(batch, policy, seed=rng)
                    out = result.output.permute(0, 2, 3, 1).contiguous().numpy()
                    jobs = []
                    for row in range(len(out)):
                        origin, copy = ids[row // copies], row % copies + 1
                        relpath = f"{origin[:2]}/{origin}-{copy}.png"
                        record = dict(result.records[row])
                        record["copy"] = copy
                        relpaths.append(relpath)
                        origins.append(origin)
                        records.append(record)
                        jobs.append(pool.submit(_write_png, folder / relpath, out[row]))
                    for job in jobs:
                        job.result()
                    advance(len(out))
            registered = True  # from here on files may be referenced by the catalog
            new_ids = ws.add_derived_samples(folder, relpaths, origin_ids=origins,
                                             params=records, stage="augment")
        else:
            new_ids = []
        registered = True
        summary = {"policy": policy.spec(), "factor": factor, "seed": seed,
                   "source_version": version, "batch_size": batch_size,
                   "n_original": len(frame), "n_augmented": len(new_ids)}
        info = ws.create_version(
            name, sample_ids=list(frame["id"]) + list(new_ids), params=summary,
            description=description or (f"{version or 'live catalog'} x{factor} with "
                                        f"augmentation policy {policy.label!r} (seed {seed})"))
    except BaseException as error:
        if not registered:
            shutil.rmtree(folder, ignore_errors=True)
        ws.catalog.finish_run(run_id, {"error": f"{type(error).__name__}: {error}"},
                              status="failed")
        raise
    seconds = time.perf_counter() - started
    result = {"version": info["name"], "n_samples": info["n_samples"],
              "n_original": len(frame), "n_augmented": len(new_ids), "factor": factor,
              "policy": policy.label, "seed": seed, "folder": str(folder),
              "fingerprint": info["fingerprint"], "seconds": round(seconds, 3),
              "images_per_s": round(len(new_ids) / seconds, 1) if seconds else None}
    ws.catalog.finish_run(run_id, result)
    return result


def _clear_leftovers(ws, folder: Path) -> None:
    """A folder of this name from an interrupted run is removed, unless the catalog knows
    its files (then the name is taken)."""
    if not folder.exists():
        return
    prefix = str(folder) + "/"
    known = ws.samples(None, include_unavailable=True)
    if known["path"].str.startswith(prefix).any():
        raise AugmentError(f"'{folder}' holds samples of the catalog already; choose another "
                           f"version name (--name).")
    shutil.rmtree(folder)


def _batches(frame, mode: str | None, batch_size: int):
    """(sample ids, uint8 tensor N x C x H x W) per batch of images of one size."""
    pending: dict[tuple, tuple[list, list]] = {}
    for sid, path in zip(frame["id"], frame["path"]):
        array = load_image(path, mode=mode)
        if array.ndim == 2:
            array = array[:, :, None]
        ids, arrays = pending.setdefault(array.shape, ([], []))
        ids.append(sid)
        arrays.append(array)
        if len(ids) == batch_size:
            yield ids, _stack(arrays)
            del pending[array.shape]
    for ids, arrays in pending.values():
        yield ids, _stack(arrays)


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))


def _write_png(target: Path, array: np.ndarray) -> None:
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
