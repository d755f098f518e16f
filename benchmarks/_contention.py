"""Speed under shared cores (issue #23): the settings of ``benchmarks/augment.py
--settings`` and the training table of ``python benchmarks/_contention.py --train``.

Settings, each with its thread budget chosen on purpose and printed:

- ``idle``: nothing else started by the benchmark;
- ``competing``: one CPU-bound process (``python -c "while True: pass"``, pinned to no core)
  that this module starts before the setting and kills after it;
- ``dataloader``: online augmentation in a ``torch.utils.data.DataLoader`` feeding a
  consumer loop; each library inside the worker the way its docs show (smartset:
  ``AugmentedDataset(mode="batch")`` with its ``collate_fn`` and ``worker_init_fn``;
  albumentations: the pipeline in ``__getitem__`` on HWC ``uint8``; kornia: the
  ``AugmentationSequential`` on the float32 batch in ``collate_fn``). Every loader: the
  same shuffled order of the same images (seeded), the same batch size (``--batch``, at
  most an eighth of the images so that 2 workers share the work), persistent workers of
  1 torch and 1 OpenCV thread each; smartset and albumentations deliver ``uint8``, kornia
  ``float32``; the consumer reads every batch as float32.

Budgets: ``per-core`` gives every library 1 thread (``torch.set_num_threads(1)``,
``cv2.setNumThreads(1)``; in the DataLoader setting, 1 worker of 1 thread); ``per-machine``
gives every library every core its docs allow (torch and OpenCV threads = cores, smartset
its own choice from the free cores as shipped; in the DataLoader setting, one worker per
core, 1 thread each, and 1 thread in the consuming process). The load average is read
before and after each setting and budget; a 1-minute load that moved by more than 1.0
marks the row (``*``). Under each row a second
line gives images per CPU-second (user + system of this process and its children, the
DataLoader workers included, fewest over the rounds): on a loaded machine wall time
stretches with the load, the CPU a library needs per image much less.

Why a module of its own: the process that competes must be started and stopped around
each setting whatever happens inside it (a ``finally``), and training (goal 6) uses it too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

LOAD_MOVED = 1.0  # a setting whose 1-minute load moved by more than this is marked


@contextlib.contextmanager
def competing_process(count: int = 1):
    """Run ``count`` CPU-bound Python processes for the block, then kill them."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        time.sleep(0.5)  # let them take their core
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def set_threads(threads: int) -> None:
    """torch and OpenCV threads for this process (the per-core / per-machine budget)."""
    torch.set_num_threads(threads)
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:
        pass


def load() -> float:
    return round(os.getloadavg()[0], 2)


# -- the DataLoader setting ------------------------------------------------------------------
class _AlbumentationsSet(torch.utils.data.Dataset):
    """albumentations' documented use in a Dataset: the pipeline on one HWC array."""

    def __init__(self, images: np.ndarray, pipeline):
        self.images, self.pipeline = images, pipeline

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        out = self.pipeline(image=self.images[index])["image"]
        return torch.from_numpy(np.ascontiguousarray(out)), 0


class _KorniaCollate:
    """kornia on a float32 batch, in the collate function of the workers."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __call__(self, items):
        batch = torch.stack([im for im, _ in items]).float() / 255
        with torch.no_grad():
            return self.pipeline(batch), torch.zeros(len(items), dtype=torch.long)


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, chw: torch.Tensor):
        self.chw = chw

    def __len__(self):
        return len(self.chw)

    def __getitem__(self, index):
        return self.chw[index], 0


def one_thread_worker(worker_id: int) -> None:
    """Every library's DataLoader workers: 1 torch and 1 OpenCV thread (torch sets its
    own count in workers, OpenCV keeps the parent's)."""
    set_threads(1)


def loader_batch(n: int, batch: int) -> int:
    """The DataLoader batch: ``batch``, but small enough that 2 workers get 4 batches each
    of ``n`` images (with one batch in all, one worker would do all the work)."""
    return max(1, min(batch, n // 8))


def _consume(loader) -> int:
    """The consumer loop: what a training step would read of each batch."""
    done = 0
    for images, _ in loader:
        done += len(images)
        images.float().mean()
    return done


def _task_seconds(pid: int) -> float | None:
    """CPU seconds of the live threads of process ``pid`` from the scheduler's nanosecond
    counters (``/proc/PID/task/*/schedstat``); None where the OS does not keep them."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total / 1e9


def tree_cpu_seconds(exclude=()) -> float:
    """User + system CPU seconds of this process and its live children (the DataLoader
    workers) but the processes ``exclude`` (the competing one); NaN without psutil.

    This process counts with ``time.process_time`` and each child with the scheduler's
    nanosecond counters of its threads where Linux keeps them: psutil's user and system
    times tick in 10 ms, several per cent of a quick run's 0.2 CPU-s at 224 x 224, and the
    fewest of a few rounds then picks whichever library rounded down (issue #23)."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    me = psutil.Process()
    total = time.process_time()
    for proc in me.children(recursive=True):
        if proc.pid in exclude:
            continue
        precise = _task_seconds(proc.pid)
        if precise is not None:
            total += precise
            continue
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # a worker that just ended
            pass
    return total


def with_cpu(runs: dict, spent: dict, exclude=()) -> dict:
    """Wrap ``name -> run()`` so that ``spent[name]`` keeps the fewest CPU seconds (process
    tree) of a run: a machine's load stretches wall time more than the CPU a run needs."""
    def wrap(name, run):
        def timed():
            before = tree_cpu_seconds(exclude)
            out = run()
            spent[name] = min(spent.get(name, float("inf")), tree_cpu_seconds(exclude) - before)
            return out
        return timed
    return {name: wrap(name, run) for name, run in runs.items()}


def dataloader_runs(images: np.ndarray, *, workers: int, batch: int, policy, albu, kornia,
                    seed: int = 0, shuffle: bool = True) -> dict:
    """``name -> run()`` for the DataLoader setting (persistent workers, made here; the
    sampler shuffles with ``seed``, as training does). Every library gets the same batch
    size, workers and threads (1 torch and 1 OpenCV thread per worker); smartset and
    albumentations deliver ``uint8`` batches, kornia ``float32`` (its native form); the
    consumer converts to float32 either way."""
    from smartset.augment import AugmentedDataset

    chw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    common = {"batch_size": loader_batch(len(images), batch), "num_workers": workers,
              "persistent_workers": True, "multiprocessing_context": "fork",
              "shuffle": shuffle, "generator": torch.Generator().manual_seed(seed)}
    smart = AugmentedDataset(_Tensors(chw), policy, seed=seed, mode="batch")
    loaders = {"smartset": torch.utils.data.DataLoader(
        smart, collate_fn=smart.collate_fn, worker_init_fn=AugmentedDataset.worker_init_fn,
        **common)}
    common["worker_init_fn"] = one_thread_worker  # the same threads for the peers
    if albu is not None:
        hwc = images[..., 0] if images.shape[-1] == 1 else images
        loaders["albumentations"] = torch.utils.data.DataLoader(
            _AlbumentationsSet(np.ascontiguousarray(hwc), albu), **common)
    if kornia is not None:
        loaders["kornia"] = torch.utils.data.DataLoader(
            _Tensors(chw), collate_fn=_KorniaCollate(kornia), **common)
    return {name: (lambda loader=loader: _consume(loader)) for name, loader in loaders.items()}


# -- the settings table ------------------------------------------------------------------------
def settings_table(data: dict, *, settings, repeat: int, batch: int, make_runs, make_loader_runs,
                   interleaved) -> dict:
    """Every setting x budget x data set: img/s of smartset and the peers, ratios, load.

    ``make_runs(images, budget)`` gives the in-process runs, ``make_loader_runs(images,
    workers)`` the DataLoader ones, ``interleaved(repeat, runs)`` the best time of each.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = {}
    print(f"Settings (issue #23): {cores} cores; best of {repeat}, libraries interleaved; "
          f"'*' marks a row whose 1-minute load moved by more than {LOAD_MOVED}.")
    print(f"{'setting':<11}| {'budget':<12}| {'data':<9}| {'threads':<40}| {'smartset':>9} | "
          f"{'albument.':>9} | {'kornia':>9} | {'x best':>7} | load before>after")
    for setting in settings:
        for budget in ("per-core", "per-machine"):
            threads = 1 if budget == "per-core" else cores
            workers = 1 if budget == "per-core" else cores
            with (competing_process() if setting == "competing"
                  else contextlib.nullcontext(())) as competing:
                for name, images in data.items():
                    # the DataLoader's consumer takes 1 thread: the workers hold the cores
                    # (with 2, its OpenMP threads spin between batches on the workers' cores)
                    set_threads(1 if setting == "dataloader" else threads)
                    before = load()
                    if setting == "dataloader":
                        runs = make_loader_runs(images, workers)
                        plan = (f"{workers} worker(s) x 1 + consumer 1, batch "
                                f"{loader_batch(len(images), batch)}")
                    else:
                        runs = make_runs(images, budget)
                        plan = (f"all: {threads} torch/cv2" if budget == "per-machine"
                                else "all: 1 torch/cv2")
                    spent: dict[str, float] = {}
                    measured = interleaved(repeat, with_cpu(runs, spent, set(competing)))
                    after = load()
                    rate = {k: len(images) / v for k, v in measured.items()}
                    per_cpu = {k: len(images) / v for k, v in spent.items() if v > 0}
                    peers = {k: v for k, v in rate.items() if k != "smartset"}
                    best = max(peers.values()) if peers else None
                    ratio = rate["smartset"] / best if best else None
                    moved = abs(after - before) > LOAD_MOVED
                    cells = [f"{rate[k]:>9.0f}" if k in rate else f"{'-':>9}"
                             for k in ("smartset", "albumentations", "kornia")]
                    print(f"{setting:<11}| {budget:<12}| {name:<9}| {plan:<40}| "
                          + " | ".join(cells)
                          + (f" | {ratio:>6.2f}x" if ratio else f" | {'-':>7}")
                          + f" | {before:.1f}>{after:.1f}{' *' if moved else ''}")
                    cpu_ratio = None
                    if per_cpu.get("smartset") and len(per_cpu) > 1:
                        cpu_ratio = per_cpu["smartset"] / max(v for k, v in per_cpu.items()
                                                              if k != "smartset")
                        print(f"{'':<11}| {'':<12}| {'':<9}| {'img per CPU-second':<40}| "
                              + " | ".join(f"{per_cpu[k]:>9.0f}" if k in per_cpu
                                           else f"{'-':>9}"
                                           for k in ("smartset", "albumentations", "kornia"))
                              + f" | {cpu_ratio:>6.2f}x |")
                    result[f"{setting}_{budget}_{name}"] = {
                        **{k: round(v, 1) for k, v in rate.items()},
                        "ratio_vs_best_peer": round(ratio, 3) if ratio else None,
                        "img_per_cpu_s": {k: round(v, 1) for k, v in per_cpu.items()},
                        "cpu_ratio_vs_best_peer": round(cpu_ratio, 3) if cpu_ratio else None,
                        "threads": plan, "load_before": before, "load_after": after,
                        "load_moved": moved}
                    del runs
    set_threads(cores)
    return result


# -- training under shared cores (goal 6) --------------------------------------------------------
def training_table(data_path, *, n: int = 2000, epochs: int = 2, models=("lenet", "small_cnn"),
                   seed: int = 0) -> dict:
    """Wall and CPU seconds per epoch of smartset's training, 1 vs 2 threads and smartset's
    own choice, idle and with the competing process."""
    from smartset.learn.estimator import ImageClassifier

    with np.load(data_path / "mnist10k.npz") as archive:
        images, labels = archive["images"][:n], archive["labels"][:n]
    result = {}
    print(f"Training under shared cores: {n} MNIST digits, {epochs} epochs, seed {seed}; "
          f"wall and CPU (user+sys of this process) seconds per epoch.")
    print(f"{'setting':<10}| {'model':<10}| {'threads':<14}| {'wall s/ep':>9} | "
          f"{'CPU s/ep':>9} | {'CPU/wall':>8} | {'train acc':>9} | load before>after")
    for setting in ("idle", "competing"):
        with (competing_process() if setting == "competing" else contextlib.nullcontext()):
            for model in models:
                for threads in (1, 2, None):
                    before = load()
                    estimator = ImageClassifier(model, epochs=epochs, batch_size=64, seed=seed,
                                                progress=False, threads=threads)
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    estimator.fit(images, labels)
                    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                    after = load()
                    acc = float((estimator.predict(images) == labels).mean())
                    label = f"{estimator.threads_}" + (" (chosen)" if threads is None else "")
                    print(f"{setting:<10}| {model:<10}| {label:<14}| {wall / epochs:>9.2f} | "
                          f"{cpu / epochs:>9.2f} | {cpu / wall:>8.2f} | {acc:>9.3f} | "
                          f"{before:.1f}>{after:.1f}"
                          f"{' *' if abs(after - before) > LOAD_MOVED else ''}")
                    result[f"{setting}_{model}_{'chosen' if threads is None else threads}"] = {
                        "threads": estimator.threads_, "wall_s_per_epoch": round(wall / epochs, 3),
                        "cpu_s_per_epoch": round(cpu / epochs, 3), "train_acc": round(acc, 4),
                        "load_before": before, "load_after": after}
    return result


def main(argv=None) -> None:
    from _data import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="the training table (goal 6)")
    parser.add_argument("--data", type=os.fspath, default=os.fspath(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=2000, help="MNIST digits to train on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.train:
        parser.error("nothing to do: pass --train (the augmentation settings run from "
                     "benchmarks/augment.py --settings)")
    from pathlib import Path

    result = training_table(Path(args.data), n=args.n, epochs=args.epochs, seed=args.seed)
    print(json.dumps({"training_threads": result, "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
