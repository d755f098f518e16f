"""Segmentation on simulated shapes: the trained segmenter against the threshold baseline.

Data: ``smartset synth shapes --conditions`` (exact masks; circles, squares, triangles of
side 8-100 px on 128 x 128 textured images, each scene also brightened, darkened and lit by
a warm lamp). Training scenes come from seed 100, held-out scenes from seed 200, so no
scene is both trained on and scored. The baseline (``detect evaluate-masks --baseline``:
grey threshold + connected components classed by fill) is scored on the same held-out
images. The segmenter (:class:`smartset.detection.segmenter.Segmenter`, EfficientNet-Lite0
+ U-Net decoder, pretrained on ImageNet) trains once per seed; the table shows each seed,
then the mean and standard deviation over seeds, with training wall and CPU time and the
load average (other processes share the CPU: wall times are inflated by that load).

    .venv/bin/python benchmarks/segment.py            # 30 training scenes x 4 conditions, 3 seeds
    .venv/bin/python benchmarks/segment.py --quick    # under a minute: a smoke run, not a result

The last line of stdout is JSON: ``mean_iou`` (mean over seeds), ``mean_iou_std``,
``mean_iou_per_seed``, ``baseline_mean_iou``, ``per_condition``, ``train_wall_s``,
``train_cpu_s``, ``loadavg_before``/``loadavg_after``, and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np


def _load(folder: Path, n: int, seed: int, conditions: bool):
    from PIL import Image

    from smartset.detection.synth import synth_shapes

    synth_shapes(folder, n, seed=seed, conditions=conditions)
    coco = json.loads((folder / "annotations.json").read_text())
    condition = {im["file_name"]: im.get("condition", "medium") for im in coco["images"]}
    files = sorted((folder / "images").glob("*.png"))
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    masks = [np.asarray(Image.open(folder / "masks" / f.name)) for f in files]
    return images, masks, [condition[f.name] for f in files]


def _per_condition(truth, predicted, conditions, classes) -> dict:
    from smartset.detection.evaluation import segmentation_metrics

    out = {}
    for name in dict.fromkeys(conditions):
        rows = [i for i, c in enumerate(conditions) if c == name]
        out[name] = segmentation_metrics([truth[i] for i in rows], [predicted[i] for i in rows],
                                         classes=classes)["mean_iou"]
    return out


def _train_one(seed, *, train, test, classes, epochs, lr, augment, threads) -> dict:
    import torch

    from smartset.detection.evaluation import segmentation_metrics
    from smartset.detection.segmenter import Segmenter

    torch.set_num_threads(threads)
    model = Segmenter(epochs=epochs, lr=lr, seed=seed, augment=augment, progress=False)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(train[0], train[1], classes)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    predicted = model.predict(test[0])
    metrics = segmentation_metrics(test[1], predicted, classes=classes)
    print(f"seed {seed}: mean IoU {metrics['mean_iou']:.4f} ({wall:.0f} s wall, "
          f"{cpu:.0f} s CPU, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return {"method": "segmenter (Lite0 + U-Net decoder)", "seed": seed,
            "mean_iou": metrics["mean_iou"], "mean_dice": metrics["mean_dice"],
            "per_class": {k: v["iou"] for k, v in metrics["per_class"].items()},
            "per_condition": _per_condition(test[1], predicted, test[2], classes),
            "wall": wall, "cpu": cpu, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run under a minute.")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--train-scenes", type=int, default=None)
    parser.add_argument("--test-scenes", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--augment", default=None, help="A policy applied while training.")
    parser.add_argument("--lr", type=float, default=1e-2, help="Decoder learning rate.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Seeds trained at once, one process each (default 1).")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from smartset.detection.evaluation import segmentation_metrics
    from smartset.detection.synth import baseline_segmenter

    quick = args.quick
    seeds = args.seeds or ([0] if quick else [0, 1, 2])
    n_train = args.train_scenes or (4 if quick else 30)
    n_test = args.test_scenes or (4 if quick else 40)
    epochs = args.epochs or (2 if quick else 24)  # 12 left one seed of 3 without "square"
    classes = {1: "circle", 2: "square", 3: "triangle"}
    with tempfile.TemporaryDirectory(prefix="smartset-segment-") as tmp:
        train = _load(Path(tmp, "train"), n_train, 100, True)
        test = _load(Path(tmp, "test"), n_test, 200, True)
    numbers = {v: k for k, v in classes.items()}
    base_pred = [baseline_segmenter(image, numbers) for image in test[0]]
    base = segmentation_metrics(test[1], base_pred, classes=classes)
    rows = [{"method": "baseline (threshold + components)", "seed": "-",
             "mean_iou": base["mean_iou"], "mean_dice": base["mean_dice"],
             "per_class": {k: v["iou"] for k, v in base["per_class"].items()},
             "per_condition": _per_condition(test[1], base_pred, test[2], classes),
             "wall": None, "cpu": None}]
    load_before = os.getloadavg()
    job = partial(_train_one, train=train, test=test, classes=classes, epochs=epochs,
                  lr=args.lr, augment=args.augment, threads=args.threads)
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(seeds))) as pool:
            rows += pool.map(job, seeds)
    else:
        rows += [job(seed) for seed in seeds]
    load_after = os.getloadavg()
    trained = rows[1:]
    ious = np.array([r["mean_iou"] for r in trained])
    conditions = list(rows[0]["per_condition"])
    header = ["method", "seed", "mean IoU", "mean Dice", *[f"IoU {c}" for c in classes.values()],
              *[f"mIoU {c}" for c in conditions], "train wall s", "train CPU s"]
    print(f"Held-out: {len(test[0])} images ({n_test} scenes x 4 conditions, seed 200); "
          f"training: {len(train[0])} images ({n_train} scenes, seed 100), {epochs} epochs, "
          f"batch 8, lr {args.lr}, 128 x 128, torch threads {args.threads} x {args.jobs} "
          f"jobs, augment {args.augment}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    def fmt(v, digits=3):
        return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    for r in rows:
        print("| " + " | ".join([r["method"], str(r["seed"]), fmt(r["mean_iou"]),
                                 fmt(r["mean_dice"]),
                                 *[fmt(r["per_class"].get(c)) for c in classes.values()],
                                 *[fmt(r["per_condition"].get(c)) for c in conditions],
                                 fmt(r["wall"], 0), fmt(r["cpu"], 0)]) + " |")
    print(f"| segmenter, mean ± sd over {len(seeds)} seeds | - | {ious.mean():.3f} ± "
          f"{ious.std(ddof=1) if len(ious) > 1 else 0:.3f} | | | | | | | | | "
          f"{np.mean([r['wall'] for r in trained]):.0f} | "
          f"{np.mean([r['cpu'] for r in trained]):.0f} |")
    print(f"load average before {tuple(round(v, 2) for v in load_before)}, after "
          f"{tuple(round(v, 2) for v in load_after)} (2 cores; wall times grow with it)")
    print(json.dumps({
        "mean_iou": float(ious.mean()),
        "mean_iou_std": float(ious.std(ddof=1)) if len(ious) > 1 else 0.0,
        "mean_iou_per_seed": [float(v) for v in ious],
        "mean_iou_min": float(ious.min()),
        "baseline_mean_iou": float(base["mean_iou"]),
        "per_condition": {c: float(np.mean([r["per_condition"][c] for r in trained]))
                          for c in conditions},
        "baseline_per_condition": rows[0]["per_condition"],
        "train_wall_s": [round(r["wall"], 1) for r in trained],
        "train_cpu_s": [round(r["cpu"], 1) for r in trained],
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "seeds": seeds, "train_images": len(train[0]), "test_images": len(test[0]),
        "epochs": epochs, "lr": args.lr, "augment": args.augment, "threads": args.threads,
        "jobs": args.jobs,
        "quick": quick}))


if __name__ == "__main__":
    main()
