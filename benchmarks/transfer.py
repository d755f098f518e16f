"""Transfer learning on photos: an ImageNet backbone (EfficientNet-Lite0) frozen with a new
linear head, and fine-tuned, beside the best model trained from scratch.

The 741 guns-smartphones photos (``--data``/guns-smartphones/train) are ingested into a
temporary workspace; for each seed (``--seeds``, 3) the hold-out of ``smartset train``
(``split_holdout``: a seeded stratified 80/20 that keeps exact duplicates together) and one
run per setting, through ``smartset.learn.study_transfer`` (what ``smartset study transfer``
runs):

- from scratch: ``--scratch`` models (default ``small_cnn``, the photo model of
  ``learn.py``; ``--scratch small_cnn,resnet`` adds the small ResNet, about five times the
  cost) at 64x64 px, 20 epochs (the best is marked);
- frozen Lite0 + new linear head: the backbone's features computed once (no augmentation),
  the head trained on them for 30 epochs;
- fine-tuned Lite0: the head alone for 1 epoch, then every block for 2 more
  (``--epochs``, 3 in all) with discriminative rates (each block 0.7x the one above it),
  batch norms of the trained blocks in training mode.

The backbone sees ``--size`` (128) px, chosen by measurement on this shared 2-core CPU with
1 torch thread: 128 px, 1 + 2 epochs, fine-tuned in 71-88 s per run under a load average
of 2-4 and reached 0.998 mean held-out accuracy over 3 seeds; 160 px, 1 + 3 epochs, took
16 minutes for one run with 2 threads under a load average of 7 (other processes on both
cores), past the 10-minute budget. Side measurements on
seed 0 (full mode): the frozen head trained by pushing images through the frozen network
every epoch instead of on cached features (``frozen_features=False``, 2 epochs,
extrapolated to 30), and a fine-tune with every batch norm kept in eval mode
(``freeze_bn``: the pretrained statistics; ``--bn-row`` runs it on every seed). Wall times
depend on the load of the machine (other processes share its two cores); the load average
(``os.getloadavg``) is recorded before and after; the recorded run used ``--threads 1``.

``--quick``: one seed, 80 of the photos, the backbone at 64 px, small_cnn at 32 px, fewer
epochs (about a minute).

Other sections join when their files exist: ``_transfer_oof.py`` (``oof_section``) and
``_embed_speed.py`` (``throughput_section``); their tables print here and their numbers
merge into the JSON. The last line of stdout is one line of JSON with the headline numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA  # noqa: E402

import smartset  # noqa: E402
from smartset.learn import ImageClassifier, load_version  # noqa: E402
from smartset.learn._workspace import duplicate_groups, split_holdout  # noqa: E402
from smartset.learn.study import study_transfer  # noqa: E402

BACKBONE = "efficientnet_lite0"


def _print_table(title, rows, columns):
    print(f"\n{title}")
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _load(photos: Path, work: Path, size: int, quick: bool):
    ws = smartset.init(work / "ws")
    if quick:  # 40 per class
        source = work / "subset"
        for folder in sorted(p for p in photos.iterdir() if p.is_dir()):
            (source / folder.name).mkdir(parents=True)
            for f in sorted(folder.iterdir())[:40]:
                (source / folder.name / f.name).symlink_to(f)
        photos = source
    ws.ingest(photos, show_progress=False)
    data = load_version(ws, size=size, mode="RGB", progress=False)
    return ws, data


def transfer_section(photos: Path, *, quick: bool, seeds: int, size: int, epochs: int,
                     scratch: list[str], side: bool, bn_row: bool) -> dict:
    options = dict(scratch_models=scratch, scratch_size=64, scratch_epochs=20,
                   frozen_epochs=30, finetune_epochs=epochs, head_epochs=1, lr_decay=0.7,
                   batch_size=32, lr=1e-3,
                   settings=("scratch", "frozen", "finetuned")
                   + (("finetuned-frozen-bn",) if bn_row else ()))
    if quick:
        options |= dict(scratch_models=["small_cnn"], scratch_size=32, scratch_epochs=5,
                        frozen_epochs=20, finetune_epochs=2,
                        settings=("scratch", "frozen", "finetuned"))
    with tempfile.TemporaryDirectory() as tmp:
        load_before = os.getloadavg()
        started = time.perf_counter()
        ws, data = _load(photos, Path(tmp), size, quick)
        groups = duplicate_groups(ws, data.ids)
        splits = []
        for seed in range(seeds):
            train, test, holdout = split_holdout(data, groups, test_fraction=0.2, seed=seed)
            splits.append((seed, train, test))
        result = study_transfer(data.images, data.labels, splits, backbone=BACKBONE,
                                progress=False, **options)
        table, runs = result["table"], result["runs"]
        rows = [{"setting": r.label + (" (best from scratch)" if r.best_scratch else ""),
                 "size": r.size, "epochs": r.epochs, "mean": r.mean, "std": r.std,
                 "best": r.best, "worst": r.worst, "seconds": r.seconds}
                for r in table.itertuples()]
        load_after = os.getloadavg()
        _print_table(f"Transfer on {len(data)} photos: {len(splits[0][1])} train / "
                     f"{len(splits[0][2])} held out ({holdout.split(' (')[0]}, duplicates "
                     f"together), {seeds} seed(s); held-out accuracy, training seconds per "
                     f"run (mean); load average {load_before[0]:.1f} before, "
                     f"{load_after[0]:.1f} after", rows,
                     ["setting", "size", "epochs", "mean", "std", "best", "worst", "seconds"])
        _print_table("per run", runs.to_dict("records"),
                     ["label", "seed", "accuracy", "seconds"])
        by = {r.setting: r for r in table.itertuples() if r.setting != "scratch"}
        frozen_bn = {}
        if "finetuned-frozen-bn" in by:
            row = by["finetuned-frozen-bn"]
            frozen_bn = {"finetuned_frozen_bn_acc_mean": float(row.mean),
                         "finetuned_frozen_bn_acc_std": float(row.std),
                         "finetuned_frozen_bn_seconds_mean": float(row.seconds)}
        best = table[table["best_scratch"]].iloc[0]
        out = {"n_photos": int(len(data)), "seeds": seeds, "size": size,
               "finetune_epochs": options["finetune_epochs"],
               "finetuned_acc_mean": float(by["finetuned"].mean),
               "finetuned_acc_std": float(by["finetuned"].std),
               "finetuned_acc_best": float(by["finetuned"].best),
               "finetuned_seconds_mean": float(by["finetuned"].seconds),
               "finetuned_seconds_max": float(runs.loc[runs["setting"] == "finetuned",
                                                       "seconds"].max()),
               "frozen_acc_mean": float(by["frozen"].mean),
               "frozen_acc_std": float(by["frozen"].std),
               "frozen_acc_best": float(by["frozen"].best),
               "frozen_seconds_mean": float(by["frozen"].seconds),
               "scratch_best_model": str(best["model"]),
               "scratch_acc_mean": float(best["mean"]), "scratch_acc_std": float(best["std"]),
               "scratch_acc_best": float(best["best"]),
               "scratch_seconds_mean": float(best["seconds"]),
               "targets_met": bool(by["finetuned"].mean >= 0.98 and by["frozen"].mean >= 0.98),
               "loadavg_before": round(load_before[0], 2),
               "loadavg_after": round(load_after[0], 2), **frozen_bn}
        if side and not quick:
            out |= side_section(data, splits[0], options["finetune_epochs"])
        out["transfer_wall_seconds"] = time.perf_counter() - started
        ws.close()
    return out


def side_section(data, split, epochs: int) -> dict:
    """Seed 0: the frozen head trained with and without the feature cache, and a fine-tune
    whose batch norms keep their pretrained statistics (``freeze_bn``)."""
    seed, train, test = split
    x, y = data.images, data.labels
    rows = []
    started = time.perf_counter()
    cached = ImageClassifier(BACKBONE, trainable_blocks=0, epochs=2, batch_size=32,
                             seed=seed, progress=False).fit(x[train], y[train])
    cached_seconds = time.perf_counter() - started
    started = time.perf_counter()
    plain = ImageClassifier(BACKBONE, trainable_blocks=0, epochs=2, batch_size=32, seed=seed,
                            frozen_features=False, progress=False).fit(x[train], y[train])
    plain_seconds = time.perf_counter() - started
    per_epoch = plain_seconds / 2
    rows.append({"setting": "frozen head, features cached (2 epochs)",
                 "accuracy": cached.score(x[test], y[test]), "seconds": cached_seconds})
    rows.append({"setting": "frozen head, images through the network each epoch (2 epochs)",
                 "accuracy": plain.score(x[test], y[test]), "seconds": plain_seconds})
    started = time.perf_counter()
    frozen_bn = ImageClassifier(BACKBONE, epochs=epochs, head_epochs=1, lr_decay=0.7,
                                batch_size=32, freeze_bn=True, seed=seed,
                                progress=False).fit(x[train], y[train])
    bn_seconds = time.perf_counter() - started
    rows.append({"setting": "fine-tuned, batch-norm statistics frozen",
                 "accuracy": frozen_bn.score(x[test], y[test]), "seconds": bn_seconds})
    _print_table(f"Side measurements, seed {seed} (load average {os.getloadavg()[0]:.1f})",
                 rows, ["setting", "accuracy", "seconds"])
    print(f"a frozen head for 30 epochs without the cache: about {30 * per_epoch:.0f} s "
          f"(measured {per_epoch:.1f} s per epoch); with it, 2 epochs took {cached_seconds:.1f} s "
          f"(the feature pass; 30 epochs: the frozen row above)")
    return {"frozen_uncached_seconds_per_epoch": per_epoch,
            "frozen_cached_seconds_2_epochs": cached_seconds,
            "finetuned_frozen_bn_acc_seed0": rows[-1]["accuracy"],
            "finetuned_frozen_bn_seconds_seed0": bn_seconds}


def _optional_section(module: str, function: str, quick: bool) -> dict:
    """``function(quick)`` of ``benchmarks/<module>.py`` when that file exists (other
    sections of this benchmark, written apart); it prints its own table."""
    path = Path(__file__).resolve().parent / f"{module}.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(module, path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return dict(getattr(loaded, function)(quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 80 photos (~1 min)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; 1 quick)")
    parser.add_argument("--size", type=int, default=None,
                        help="the backbone's input side (default 128; 64 quick)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="fine-tuning epochs, the first the head alone (default 3)")
    parser.add_argument("--bn-row", action="store_true",
                        help="add a row: fine-tuned with batch-norm statistics frozen, every "
                             "seed (the side measurement runs it on seed 0)")
    parser.add_argument("--scratch", default="small_cnn",
                        help="models trained from scratch at 64 px (comma-separated)")
    parser.add_argument("--no-side", action="store_true", help="skip the side measurements")
    parser.add_argument("--sections", default="transfer,oof,throughput")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    photos = args.data / "guns-smartphones" / "train"
    if not photos.is_dir():
        sys.exit(f"transfer.py: data not found: {photos}. Pass --data DIR, a folder holding "
                 f"guns-smartphones/train/ (default: {DEFAULT_DATA}).")
    sections = set(args.sections.split(","))
    started = time.perf_counter()
    import torch

    figures = {"quick": args.quick, "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads()}
    if "transfer" in sections:
        figures |= transfer_section(
            photos, quick=args.quick, seeds=args.seeds or (1 if args.quick else 3),
            size=args.size or (64 if args.quick else 128), epochs=args.epochs,
            bn_row=args.bn_row,
            scratch=[s for s in args.scratch.split(",") if s], side=not args.no_side)
    if "oof" in sections:
        figures |= _optional_section("_transfer_oof", "oof_section", args.quick)
    if "throughput" in sections:
        figures |= _optional_section("_embed_speed", "throughput_section", args.quick)
    figures["wall_seconds"] = time.perf_counter() - started
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                      for k, v in figures.items()}))


if __name__ == "__main__":
    main()
