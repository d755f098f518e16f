"""Ingest throughput: smartset against a plain single-process loop, on real data.

Data sets (from ``--data``, default ``shared/data`` beside the repository):

- photos: the 741 JPEGs of ``guns-smartphones/train`` (class folders pistol/, smartphone/);
- mnist: the digits of ``mnist10k.npz`` (10,000; 2,000 with ``--quick``), written once,
  before any timing, as PNG class folders ``<label>/<index>.png`` in a temporary folder.

Rows per data set:

- smartset cold: ``ws.ingest(folder)`` into a fresh workspace (one per repetition);
- smartset warm: the same ingest again on that workspace; it must read 0 files;
- smartset serial: cold, with ``engine="serial"`` (no worker processes to start);
- plain loop, full decode: list the files, then per file read the bytes, sha256 them and
  ``Image.open(...).load()``; the checks smartset makes, in one process;
- plain loop, JPEG draft 1/8 (photos only): the same, with Pillow's draft mode for JPEGs
  as smartset uses (every byte still read, less IDCT work): the like-for-like baseline;
- plain loop, header only: sha256 and ``Image.open`` without ``load()``; LESS work than
  smartset (no truncation or corruption check), shown as a lower bound on the cost;
- smartset npz (mnist): ingesting the ``.npz`` itself, PNG writing included.

Each row is the best (minimum) wall time of ``--repeat`` runs. One untimed pass reads every
file first, so all rows read from the OS page cache alike. The last line of stdout is one
line of JSON with the headline numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import smartset
from smartset.imageio import IMAGE_EXTENSIONS

from _data import DEFAULT_DATA, locate

QUICK_MNIST = 2_000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder holding guns-smartphones/ and mnist10k.npz "
                             f"(default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true",
                        help=f"photos plus the first {QUICK_MNIST:,} MNIST digits, repeat 1")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per measurement, best kept (default 3; 1 with --quick)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes for smartset ingest (default: all cores)")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


def list_images(root: Path) -> list[str]:
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                  for name in names if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def plain_loop(root: Path, mode: str) -> int:
    """Hash and check every image under ``root`` in this process; ``mode``: full/draft/header."""
    count = 0
    for path in list_images(root):
        with open(path, "rb") as handle:
            data = handle.read()
        hashlib.sha256(data).hexdigest()
        image = Image.open(io.BytesIO(data))
        if mode == "draft" and image.format in ("JPEG", "MPO"):
            width, height = image.size
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        if mode != "header":
            image.load()
        count += 1
    return count


def warm_page_cache(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def best_of(repeat: int, run) -> float:
    """The minimum wall time of ``repeat`` calls of ``run()``, which may time itself."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        measured = run()
        times.append(measured if isinstance(measured, float) else time.perf_counter() - started)
    return min(times)


def smartset_times(source: Path, expected: int, repeat: int, scratch: Path,
                   **options) -> tuple[float, float]:
    """Best cold and best warm ingest seconds of ``source``, a fresh workspace per repetition."""
    cold, warm = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            with smartset.init(Path(tmp) / "ws") as ws:
                started = time.perf_counter()
                report = ws.ingest(source, show_progress=False, **options)
                cold.append(time.perf_counter() - started)
                assert report.files_read == expected and report.new == expected, report
                assert not report.issues, report.issues
                started = time.perf_counter()
                report = ws.ingest(source, show_progress=False, **options)
                warm.append(time.perf_counter() - started)
                assert report.files_read == 0, f"warm ingest read {report.files_read} files"
                assert report.unchanged == expected, report
    return min(cold), min(warm)


def npz_time(npz: Path, expected: int, repeat: int, workers: int | None, scratch: Path) -> float:
    def run() -> float:
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            with smartset.init(Path(tmp) / "ws") as ws:
                started = time.perf_counter()
                report = ws.ingest(npz, workers=workers, show_progress=False)
                seconds = time.perf_counter() - started
                assert report.files_read == expected, report
        return seconds
    return best_of(repeat, run)


def write_mnist_pngs(npz: Path, limit: int | None, folder: Path) -> tuple[int, Path]:
    """Write the digits as ``folder/<label>/<index>.png``; also a subset .npz when limited."""
    with np.load(npz) as archive:
        images, labels = archive["images"][:limit], archive["labels"][:limit]
    for label in np.unique(labels):
        (folder / str(label)).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / str(label) / f"{index:05d}.png")
    if limit is not None:
        npz = folder.parent / "mnist-subset.npz"
        np.savez(npz, images=images, labels=labels)
    return len(images), npz


def measure(name: str, root: Path, args, scratch: Path, npz: Path | None = None) -> list[dict]:
    paths = list_images(root)
    warm_page_cache(paths)  # untimed: every row below reads from the page cache
    n = len(paths)
    cold, warm = smartset_times(root, n, args.repeat, scratch, workers=args.workers)
    serial, _ = smartset_times(root, n, args.repeat, scratch, engine="serial")
    rows = [("smartset ingest, cold (fresh workspace)", cold),
            ("smartset ingest, warm (re-run, 0 files read)", warm),
            ("smartset ingest, cold, serial engine (1 process)", serial),
            ("plain loop, full decode (1 process)",
             best_of(args.repeat, lambda: plain_loop(root, "full")))]
    if name == "photos":
        rows.append(("plain loop, JPEG draft 1/8 as smartset (1 process)",
                     best_of(args.repeat, lambda: plain_loop(root, "draft"))))
    rows.append(("plain loop, header only: no truncation check",
                 best_of(args.repeat, lambda: plain_loop(root, "header"))))
    if npz is not None:
        rows.append(("smartset ingest of the .npz, PNG writing included",
                     npz_time(npz, n, args.repeat, args.workers, scratch)))
    return [{"dataset": name, "method": method, "files": n, "seconds": seconds,
             "files_per_s": n / seconds} for method, seconds in rows]


def print_table(rows: list[dict]) -> None:
    widths = [max(len(r["dataset"]) for r in rows + [{"dataset": "dataset"}]),
              max(len(r["method"]) for r in rows)]
    header = (f"{'dataset':<{widths[0]}} | {'method':<{widths[1]}} | {'files':>6} | "
              f"{'seconds':>8} | {'files/s':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['dataset']:<{widths[0]}} | {r['method']:<{widths[1]}} | {r['files']:>6} | "
              f"{r['seconds']:>8.3f} | {r['files_per_s']:>9.0f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    photos, npz = locate(args.data, "benchmarks/ingest.py")
    workers = args.workers or "all"
    print(f"smartset {smartset.__version__} ingest benchmark: {os.cpu_count()} cores, "
          f"ingest workers={workers}, best of {args.repeat}{', quick' if args.quick else ''}.")
    print("Every file is read once, untimed, before timing: all rows read from the OS page "
          "cache, so disk speed is not measured. Plain loops run in one process.")
    with tempfile.TemporaryDirectory(prefix="smartset-bench-") as tmp:
        scratch = Path(tmp)
        started = time.perf_counter()
        n_mnist, mnist_npz = write_mnist_pngs(npz, QUICK_MNIST if args.quick else None,
                                              scratch / "mnist")
        print(f"Wrote {n_mnist:,} MNIST PNGs in {time.perf_counter() - started:.1f} s (untimed).\n")
        rows = measure("photos", photos, args, scratch)
        rows += measure("mnist", scratch / "mnist", args, scratch, npz=mnist_npz)
    print_table(rows)

    def rate(dataset: str, prefix: str) -> float:
        return next(r["files_per_s"] for r in rows
                    if r["dataset"] == dataset and r["method"].startswith(prefix))

    result = {"cores": os.cpu_count(), "quick": args.quick, "repeat": args.repeat,
              "workers": args.workers}
    for dataset, suffix in (("photos", ""), ("mnist", "_mnist")):
        cold, plain = rate(dataset, "smartset ingest, cold"), rate(dataset, "plain loop, full")
        result |= {f"files{suffix}": next(r["files"] for r in rows if r["dataset"] == dataset),
                   f"files_per_s_cold{suffix}": round(cold, 1),
                   f"files_per_s_warm{suffix}": round(rate(dataset, "smartset ingest, warm"), 1),
                   f"files_per_s_serial{suffix}":
                       round(rate(dataset, "smartset ingest, cold, serial"), 1),
                   f"files_per_s_plain_loop{suffix}": round(plain, 1),
                   f"files_per_s_plain_header{suffix}":
                       round(rate(dataset, "plain loop, header"), 1),
                   f"ratio_vs_plain_loop{suffix}": round(cold / plain, 3)}
    result["ratio_vs_plain_draft"] = round(
        rate("photos", "smartset ingest, cold") / rate("photos", "plain loop, JPEG draft"), 3)
    result["files_per_s_npz_mnist"] = round(rate("mnist", "smartset ingest of the .npz"), 1)
    print()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
