"""Out-of-fold probabilities from frozen backbone features vs today's small CNN.

On the pistol/smartphone photos (``guns-smartphones/train``: all 741, or a stratified 120
with ``--quick``), in a fresh workspace each:

- ``predict_oof`` with the default for photos (a frozen EfficientNet-Lite0 + a linear head
  per fold, 5 duplicate-aware stratified folds): out-of-fold accuracy and log loss; seconds
  cold (an empty embedding cache: the network load and the embedding pass included; ingest
  not), then again with the embeddings cached (in this process, and as the command
  ``smartset predict --oof`` in a new process, its start-up included);
- beside it ``predict_oof --model small_cnn`` (64x64, 8 epochs a fold: the command's
  defaults) on the same photos, unless ``--no-cnn``.

The machine's load average (``os.getloadavg``) is recorded before and after: on a shared
machine the seconds are upper bounds. The table goes to stdout; its last line is one line
of JSON. ``benchmarks/transfer.py`` imports :func:`oof_section`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA  # noqa: E402

import smartset  # noqa: E402

QUICK_PER_CLASS = 60
EXAMPLE_PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos"


def _photos_dir(data: Path) -> Path:
    found = data / "guns-smartphones" / "train"
    return found if found.is_dir() else EXAMPLE_PHOTOS


def _subset(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` files of each class folder (sorted), copied."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(p for p in folder.iterdir() if p.is_file())[:per_class]:
            shutil.copy(f, target / folder.name / f.name)
    return target


def _table(title: str, rows: list[dict], columns: list[str]) -> None:
    def fmt(column, v):
        if isinstance(v, float):
            return f"{v:.2f}" if column.endswith("_s") else f"{v:.4f}"
        return "" if v is None else str(v)

    print(f"\n{title}")
    widths = [max(len(c), *(len(fmt(c, r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(fmt(c, row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cli_seconds(ws_path: Path) -> tuple[float, dict]:
    """``smartset predict --oof`` in a new process (cached embeddings): wall seconds."""
    command = [sys.executable, "-c", "from smartset.cli import app; app()", "predict", "-w",
               str(ws_path), "--oof", "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"smartset predict --oof failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return seconds, json.loads(done.stdout)


def oof_section(quick: bool, *, data: Path = DEFAULT_DATA, cnn: bool = True,
                work: Path | None = None) -> dict:
    """Run the comparison, print its table, return the headline numbers (keys ``oof_*``).

    ``quick``: a stratified subset of ``QUICK_PER_CLASS`` photos per class (else all);
    ``cnn``: also the small CNN's out-of-fold accuracy; ``work``: scratch folder (default:
    a temporary one, removed).
    """
    import torch

    from smartset.learn import predict_oof

    load_before = _load()
    photos = _photos_dir(data)
    scratch = tempfile.TemporaryDirectory(prefix="smartset-oof-") if work is None else None
    root = Path(scratch.name if scratch else work)
    try:
        source = _subset(photos, root / "photos", QUICK_PER_CLASS) if quick else photos
        rows, out = [], {}
        ws = smartset.init(root / "ws-backbone")
        started = time.perf_counter()
        ws.ingest(source, show_progress=False)
        ingest_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cold = predict_oof(ws, folds=5, progress=False)
        cold_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cached = predict_oof(ws, folds=5, progress=False)
        cached_seconds = time.perf_counter() - started
        cli_seconds, cli = _cli_seconds(ws.path)
        assert cached["embedding"]["computed"] == 0 and cli["embedding"]["computed"] == 0
        assert cached["oof"]["accuracy"] == cold["oof"]["accuracy"]
        n = cold["oof"]["n"]
        rows.append({"model": f"{cold['config']['backbone']} + linear head",
                     "n": n, "oof_accuracy": cold["oof"]["accuracy"],
                     "log_loss": cold["oof"]["log_loss"], "cold_s": round(cold_seconds, 1),
                     "embed_s": cold["embedding"]["seconds"],
                     "cached_s": round(cached_seconds, 2),
                     "cli_cached_s": round(cli_seconds, 2)})
        out |= {"oof_n": n, "oof_backbone": cold["config"]["backbone"],
                "oof_backbone_acc": cold["oof"]["accuracy"],
                "oof_backbone_log_loss": cold["oof"]["log_loss"],
                "oof_backbone_cold_s": round(cold_seconds, 2),
                "oof_backbone_embed_s": cold["embedding"]["seconds"],
                "oof_backbone_cached_s": round(cached_seconds, 3),
                "oof_backbone_cli_cached_s": round(cli_seconds, 2),
                "oof_ingest_s": round(ingest_seconds, 2),
                "oof_chosen": cold["chosen"]["reason"]}
        ws.close()
        if cnn:
            cnn_ws = smartset.init(root / "ws-cnn")
            cnn_ws.ingest(source, show_progress=False)
            started = time.perf_counter()
            result = predict_oof(cnn_ws, model="small_cnn", folds=5, progress=False)
            seconds = time.perf_counter() - started
            rows.append({"model": f"small_cnn ({result['config']['size'][0]} px, 8 epochs)",
                         "n": result["oof"]["n"], "oof_accuracy": result["oof"]["accuracy"],
                         "log_loss": result["oof"]["log_loss"], "cold_s": round(seconds, 1)})
            out |= {"oof_cnn_acc": result["oof"]["accuracy"],
                    "oof_cnn_log_loss": result["oof"]["log_loss"],
                    "oof_cnn_s": round(seconds, 2)}
            cnn_ws.close()
    finally:
        if scratch is not None:
            scratch.cleanup()
    load_after = _load()
    out |= {"oof_quick": quick, "oof_torch_threads": torch.get_num_threads(),
            "oof_loadavg_before": load_before, "oof_loadavg_after": load_after}
    _table(f"Out-of-fold probabilities, {n} photos from {photos} (5 folds; cold: empty "
           f"embedding cache; load average {load_before} -> {load_after} on "
           f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()})", rows,
           ["model", "n", "oof_accuracy", "log_loss", "cold_s", "embed_s", "cached_s",
            "cli_cached_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PER_CLASS} photos per class instead of all")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-cnn", action="store_true", help="skip the small CNN")
    args = parser.parse_args()
    result = oof_section(args.quick, data=args.data, cnn=not args.no_cnn)
    print(json.dumps(result, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    main()
