"""Offline augmentation: a new data set version of originals plus augmented copies, each
copy a PNG with lineage to its origin (origin id, policy, every parameter), the way the
MNIST study grew 60k digits to 300k and 1.5M.

The work per batch (decode, augment, write PNGs) is a batch function,
:func:`augment_files`, run by an engine (:mod:`smartset.engine`: ``serial``, ``local``,
``ray``); the driver only registers what the workers wrote. The parameters of copy ``c``
of sample ``s`` are drawn from a generator seeded by ``(seed, s, c)`` alone, so every
engine, batch size and worker order writes the same bytes.

Nothing is left half-written: the files go to a new folder first (each written under a
temporary name, then renamed), and only when all are there are they registered and the
version made, the samples and the version in one catalog transaction; an error before it
commits removes the folder and leaves the catalog as it was, and a kill leaves only the
folder, which the next run of the same name clears. The version name is checked before
anything is written or deleted, and a second writer of the workspace meanwhile is refused
(``Catalog.exclusive``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smartset._atomic import atomic_path
from smartset._names import inside, remove_tree, safe_name
from smartset._progress import progress_bar
from smartset._torch import one_thread_in_worker_processes
from smartset.augment._params import Params
from smartset.augment.errors import AugmentError, AugmentParameterError
from smartset.augment.policy import PolicyParams, resolve_policy, validate_policy
from smartset.engine import Batch, Engine, batches_of, get_engine
from smartset.errors import VersionError
from smartset.imageio import load_image
from smartset.workspace import check_version_name

__all__ = ["augment_version", "augment_files", "sample_rng", "augmented_splits",
           "HELD_OUT_SPLITS"]


def _default_name(version: str | None, label: str, factor: int) -> str:
    return safe_name(f"{version or 'live'}-{label}-x{factor}")


def augment_version(ws, *, policy, factor: int, version: str | None = None,
                    name: str | None = None, seed: int = 0, batch_size: int = 256,
                    constraints=None, mode: str | None = None, description: str | None = None,
                    include_derived: bool | None = None, splits=None,
                    engine: str | Engine | None = None, workers: int | None = None,
                    show_progress: bool | None = None) -> dict:
    """Write version ``name``: the samples of ``version`` (default: the live catalog) plus
    ``factor - 1`` augmented copies of each, so the version holds ``factor`` times as many
    samples (the study's factors: 1, 5, 25).

    ``policy``: a named policy (``"rotation-elastic"``), a policy file, a transform or a
    :class:`~smartset.augment.Policy`; ``constraints`` (e.g. ``"digits"``) are checked
    first. Images are decoded in ``mode`` (Pillow mode; default: each file's own) and
    augmented ``batch_size`` samples at a time on ``engine`` (``serial``, ``local``: a
    process pool of ``workers``, the default; ``ray``: Ray Data; default
    ``$SMARTSET_ENGINE``), each copy's parameters drawn from ``(seed, sample id, copy)``
    (``seed``: a whole number >= 0), so the same seed writes the same files whatever the
    engine and the batch size (a transform's ``same_on_batch`` has no effect here: every
    copy draws its own). Copies are written as PNGs under ``WORKSPACE/data/augment-NAME/``
    by the workers (on a cluster the workspace must be on a shared file system), registered
    with ``stage="augment"`` and each sample's replay record (see
    :func:`smartset.augment.replay`). ``include_derived``: also augment samples that are
    themselves derived (augmented) ones; default: yes for an explicit ``version`` (all its
    members), no for the live catalog (so running twice does not compound).

    ``splits``: the splits whose samples get copies. Default: every split but the held-out
    ones (``test``, ``val``, ``valid``, ``validation``), whose samples join the new version
    as they are: a copy of a test image would be scored as another test image, or leak it
    into training. ``"all"`` (or a list naming them) augments them too. Returns a summary
    dict (``augmented_splits``, ``n_kept_as_is``: samples of other splits not augmented).
    """
    started = time.perf_counter()
    if name is not None:  # it names a folder: checked before anything is read or written
        check_version_name(name)
    ws.catalog.check_writable()
    policy = resolve_policy(policy)
    if constraints:
        validate_policy(policy, constraints)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise AugmentParameterError(f"factor must be a whole number >= 1 (the version's size "
                                    f"over the original's: 5 turns 60k into 300k), got {factor!r}.")
    if batch_size < 1:
        raise AugmentParameterError(f"batch_size must be at least 1, got {batch_size}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AugmentParameterError(f"seed must be a whole number >= 0 (each copy's "
                                    f"parameters come from seed, sample and copy), got {seed!r}.")
    factor = int(factor)
    if factor > 1 and not policy.leaves():
        raise AugmentParameterError(f"Policy {policy.label!r} changes nothing, so its copies "
                                    f"would repeat the originals: use factor 1.")
    name = check_version_name(name or _default_name(version, policy.label, factor))
    # One writer at a time: a second augment (of the same name above all: it would clear
    # this one's folder) or ingest meanwhile is told which process holds the workspace.
    with ws.catalog.exclusive("augment run"):
        return _augment_locked(ws, started, policy=policy, factor=factor, version=version,
                               name=name, seed=seed, batch_size=batch_size, mode=mode,
                               description=description, include_derived=include_derived,
                               splits=splits, engine=engine, workers=workers,
                               show_progress=show_progress)


def _augment_locked(ws, started, *, policy, factor, version, name, seed, batch_size, mode,
                    description, include_derived, splits, engine, workers, show_progress):
    if name in set(ws.versions()["name"]):
        raise VersionError(f"Version {name!r} exists already; versions are immutable, so "
                           f"choose a new name (--name).")
    frame = ws.samples(version)
    if not (include_derived if include_derived is not None else version is not None):
        frame = frame[frame["origin_id"].isna()]
    if frame.empty:
        raise AugmentError(f"{'Version ' + repr(version) if version else 'The catalog'} has no "
                           f"available samples to augment.")
    chosen = augmented_splits(frame["split"], splits)
    kept = frame[~frame["split"].isin(chosen)]
    frame = frame[frame["split"].isin(chosen)]
    if frame.empty:
        raise AugmentError(f"No samples in the split(s) to augment ({', '.join(chosen) or 'none'}"
                           f"); the source has {', '.join(sorted(map(str, set(kept['split']))))}: "
                           f"name them with --split.")
    folder = ws.path / "data" / f"augment-{name}"
    _clear_leftovers(ws, folder)
    config = {"policy": policy.spec(), "factor": factor, "version": version, "name": name,
              "batch_size": batch_size, "mode": mode, "splits": chosen}
    run_id = ws.catalog.start_run("augment", config, seed=seed)
    copies = factor - 1
    relpaths, origins, records = [], [], []
    try:
        if copies:
            engine = get_engine(engine, workers=workers)
            batches = batches_of({"id": frame["id"].tolist(), "path": frame["path"].tolist()},
                                 batch_size)
            # Started before the progress bar's thread: the local engine forks only while
            # this process runs a single thread.
            results = engine.map_batches(augment_files, batches, fn_kwargs={
                "policy": policy, "copies": copies, "seed": int(seed), "folder": str(folder),
                "mode": mode})
            with progress_bar(len(frame) * copies, "augmenting", enabled=show_progress) as advance:
                for written in results:
                    relpaths.extend(written["relpath"])
                    origins.extend(written["origin"])
                    records.extend(written["record"])
                    advance(len(written["relpath"]))
        summary = {"policy": policy.spec(), "factor": factor, "seed": seed,
                   "source_version": version, "batch_size": batch_size,
                   "n_original": len(frame), "n_augmented": len(relpaths),
                   "augmented_splits": chosen, "n_kept_as_is": len(kept)}
        # The copies and the version in one transaction: a failure or a kill before it
        # commits leaves no sample in the catalog, and a re-run clears the folder.
        new_ids, info = ws.add_derived_version(
            name, folder, relpaths, origin_ids=origins, params=records, stage="augment",
            sample_ids=list(frame["id"]) + list(kept["id"]), version_params=summary,
            description=description or (f"{version or 'live catalog'} x{factor} with "
                                        f"augmentation policy {policy.label!r} (seed {seed})"),
            engine=engine, parent=version)
    except BaseException as error:
        try:  # files of a version that committed are never removed
            if name not in ws.version_names():
                remove_tree(ws.path, folder)
        except (sqlite3.Error, OSError):
            pass
        try:  # best effort: a full disk must not hide the error that stopped the run
            ws.catalog.finish_run(run_id, {"error": f"{type(error).__name__}: {error}"},
                                  status="failed")
        except (sqlite3.Error, OSError):
            pass
        raise
    seconds = time.perf_counter() - started
    result = {"version": info["name"], "n_samples": info["n_samples"],
              "n_original": len(frame), "n_augmented": len(new_ids),
              "augmented_splits": chosen, "n_kept_as_is": len(kept),
              "kept_splits": {str(k): int(v) for k, v in kept["split"].value_counts().items()},
              "factor": factor,
              "policy": policy.label, "seed": seed, "folder": str(folder),
              "fingerprint": info["fingerprint"], "seconds": round(seconds, 3),
              "images_per_s": round(len(new_ids) / seconds, 1) if seconds else None}
    ws.catalog.finish_run(run_id, result)
    return result


HELD_OUT_SPLITS = ("test", "val", "valid", "validation")


def augmented_splits(present, splits=None) -> list[str]:
    """The splits to augment among ``present`` (split names): ``splits`` (a name, a list, or
    ``"all"``), by default every one but :data:`HELD_OUT_SPLITS`. A named split that is
    not there is an error."""
    present = sorted({str(s) for s in present})
    if splits is None:
        return [s for s in present if s not in HELD_OUT_SPLITS]
    wanted = [splits] if isinstance(splits, str) else [str(s) for s in splits]
    if "all" in wanted:
        return present
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise AugmentParameterError(f"No split {', '.join(missing)} in the source (it has "
                                    f"{', '.join(present)}); name splits it has, or 'all'.")
    return sorted(set(wanted))


def _clear_leftovers(ws, folder: Path) -> None:
    """A folder of this name from an interrupted run is removed, unless the catalog knows
    its files (then the name is taken). Only ever a folder inside the workspace: anything
    that resolves outside it is refused (:func:`smartset._names.remove_tree`)."""
    inside(ws.path / "data", folder)
    if not folder.exists() and not folder.is_symlink():
        return
    prefix = str(folder) + "/"
    known = ws.samples(None, include_unavailable=True)
    if known["path"].str.startswith(prefix).any():
        raise AugmentError(f"'{folder}' holds samples of the catalog already; choose another "
                           f"version name (--name).")
    remove_tree(ws.path, folder)


def augment_files(batch: Batch, *, policy, copies: int, seed: int, folder: str,
                  mode: str | None = None) -> Batch:
    """A batch function (:mod:`smartset.engine`): write ``copies`` augmented PNGs of each
    image of ``batch`` (columns ``id``: sample ids, ``path``: local paths or fsspec URLs).

    Copy ``c`` (1..copies) of sample ``s`` gets the parameters :func:`sample_rng` ``(seed,
    s, c)`` draws, so its pixels do not depend on the batch it is in; it is written to
    ``folder/s[:2]/s-c.png`` (atomically). ``policy``: as for :func:`augment_version`;
    ``mode``: the Pillow mode to decode to (default: each file's own). Returns one row per
    copy, sample by sample in input order: ``origin``, ``copy``, ``relpath`` and
    ``record`` (the replay record, plus ``copy``).
    """
    one_thread_in_worker_processes(torch)
    policy = resolve_policy(policy)
    arrays = [_as_hwc(load_image(path, mode=mode)) for path in batch["path"]]
    ids = list(batch["id"])
    rows: list[dict | None] = [None] * (len(ids) * copies)
    by_shape: dict[tuple, list[int]] = {}
    for index, array in enumerate(arrays):
        by_shape.setdefault(array.shape, []).append(index)
    for members in by_shape.values():  # one tensor per image size
        images = _stack([arrays[i] for i in members]).repeat_interleave(copies, dim=0)
        keys = [(ids[i], copy) for i in members for copy in range(1, copies + 1)]
        params = _params_per_sample(policy, tuple(images.shape),
                                    [sample_rng(seed, sid, copy) for sid, copy in keys])
        output, applied = policy._run(images, params)  # _run: also the resolved parameters
        pixels = output.permute(0, 2, 3, 1).contiguous().numpy()
        for k, (index, (sid, copy)) in enumerate(zip(np.repeat(members, copies), keys)):
            relpath = f"{sid[:2]}/{sid}-{copy}.png"
            _write_png(Path(folder) / relpath, pixels[k])
            rows[index * copies + copy - 1] = {"origin": sid, "copy": copy, "relpath": relpath,
                                               "record": {**applied.record(k), "copy": copy}}
    return {key: [row[key] for row in rows] for key in ("origin", "copy", "relpath", "record")}


def sample_rng(seed: int, sample_id: str, copy: int) -> np.random.Generator:
    """The generator of copy ``copy`` of sample ``sample_id`` under ``seed``: a function of
    those three alone (not of batches, engines or workers)."""
    key = int.from_bytes(hashlib.blake2b(str(sample_id).encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([int(seed), key, int(copy)])


def _params_per_sample(policy, batch_shape: tuple, rngs: list) -> PolicyParams:
    """Parameters for a batch of ``batch_shape``, sample ``i``'s drawn from ``rngs[i]``
    alone (slower than one generator for the batch: a draw per sample)."""
    one = (1, *batch_shape[1:])
    drawn = [policy.make_params(one, rng) for rng in rngs]
    steps = len(policy.leaves())
    return PolicyParams(policy, [Params.concat([d.params[j] for d in drawn])
                                 for j in range(steps)], len(rngs))


def _as_hwc(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))


def _write_png(target: Path, array: np.ndarray) -> None:
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
