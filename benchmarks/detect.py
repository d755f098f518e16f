"""Detection: the trained detector against the threshold baseline, the knife study
(plain vs DaCoT vs DaCoLT) and the whale study (scale) on simulated shapes with exact
ground truth.

Data: ``synth shapes --conditions --difficulty hard`` (default; ``--difficulty easy`` for
the first set): every scene written four times (high, medium, low = night: values x 0.3 +
N(0, 6) sensor noise in both sets, artificial = a warm lamp on the easy set, strong light
with glare on the hard one), a training set and a separate test set drawn with
other seeds; 128 x 128 pixels, up to 4 objects of side 6-110 pixels (COCO small, medium
and large), 10% empty images; the hard set adds unlabelled clutter, occluding bars and
motion blur. The detector learns from every condition of the training set (as the
knife study did; ``--train-conditions high,medium`` for day footage only) and is tested
on all four conditions of the test set; each arm of a seed shares its initial weights
and data. The scale table trains on the medium images at full resolution and tests on
the medium test images resized by 1, 0.5 and 0.25, plain vs ``whale-scale``.

Rows: the baseline (grey threshold + connected components) and, per arm, mAP@0.5
(COCO's rules), precision/recall/F1 at IoU 0.5 and score >= 0.3 (the baseline's scores
are used as they are), and counting F1, per condition, mean ± std over seeds; the
training wall and CPU time of each model, with the load average (other processes share
the machine: CPU seconds are the fairer number).

DaCoLT's learning half is the ``knife-light`` policy (darkening with 0-8 grey levels of
sensor noise, a lamp's uneven warm light and glare, CLAHE), its test half the
brightness-guided CLAHE + gamma of DaCoT (one CLAHE tile per 128 px), which also runs on
every training image. Plain learns with flips only. Measured for the README (easy set,
day-only training): ``--difficulty easy --train-scenes 80 --train-conditions high,medium
--epochs 15 --part dacolt --jobs 2``.

``--part dacolt|scale`` runs one half (the two can run side by side); ``--jobs 2`` trains
two of the DaCoLT study's models at once (the same models, in worker processes).
``--quick``: a tiny set, 2 epochs, one seed (a smoke test, under a minute on a quiet
machine). The last line of stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from smartset.detection.evaluation import coco_map, counting_f1, evaluate_detections  # noqa: E402
from smartset.detection.studies import study_dacolt, study_scale, summarise  # noqa: E402
from smartset.detection.synth import CONDITIONS, baseline_detector, synth_shapes  # noqa: E402
from smartset.detection.train import DetectionData, data_from_coco, predictions_frame  # noqa: E402

LOW_CONDITION = "values x 0.3 + N(0, 6) sensor noise (night)"


def _both(train: DetectionData, test: DetectionData) -> tuple[DetectionData, list]:
    """One data set holding train then test, with ``test`` as its test split."""
    import pandas as pd

    gt = pd.concat([train.gt.assign(image="train/" + train.gt["image"]),
                    test.gt.assign(image="test/" + test.gt["image"])], ignore_index=True)
    keys = [f"train/{k}" for k in train.keys] + [f"test/{k}" for k in test.keys]
    conditions = {**{f"train/{k}": v for k, v in train.conditions.items()},
                  **{f"test/{k}": v for k, v in test.conditions.items()}}
    return DetectionData(keys, train.images + test.images, gt, conditions,
                         [f"train/{g}" for g in train.groups] + [f"test/{g}" for g in test.groups],
                         keys, ["train"] * len(train.keys) + ["test"] * len(test.keys))


def baseline_rows(test: DetectionData, score_threshold: float) -> list[dict]:
    pred = predictions_frame(test.keys, [baseline_detector(i) for i in test.images])
    rows = []
    for condition in CONDITIONS:
        keys = [k for k in test.keys if test.conditions.get(k) == condition]
        g, p = test.gt[test.gt["image"].isin(set(keys))], pred[pred["image"].isin(set(keys))]
        m = evaluate_detections(g, p, score_threshold=score_threshold, with_map=False)
        rows.append({"arm": "baseline", "condition": condition,
                     "map50": coco_map(g, p, iou_thresholds=[0.5])["map50"],
                     "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                     "counting_f1": counting_f1(g, p, images=keys,
                                                score_threshold=score_threshold)["f1"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train-scenes", type=int, default=100)
    parser.add_argument("--test-scenes", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--difficulty", choices=["easy", "hard"], default="hard")
    parser.add_argument("--train-conditions", default="all",
                        help="'all' or a comma list, e.g. high,medium")
    parser.add_argument("--scales", default="1,0.5,0.25")
    parser.add_argument("--scale-epochs", type=int, default=None,
                        help="epochs of the scale study's models (default: --epochs)")
    parser.add_argument("--part", choices=["all", "dacolt", "scale"], default="all")
    parser.add_argument("--jobs", type=int, default=1,
                        help="DaCoLT-study models trained at once in worker processes (the "
                             "same models; 2 on 2 cores)")
    args = parser.parse_args()
    if args.quick:
        args.train_scenes, args.test_scenes, args.epochs, args.seeds, args.size = 12, 6, 2, 1, 64
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        side = (6, 110) if args.difficulty == "hard" else (8, 100)
        side = (side[0], min(side[1], args.size - 8))
        synth_shapes(Path(tmp) / "train", args.train_scenes, seed=100, side=side,
                     size=(args.size, args.size), conditions=True, difficulty=args.difficulty)
        synth_shapes(Path(tmp) / "test", args.test_scenes, seed=200, side=side,
                     size=(args.size, args.size), conditions=True, difficulty=args.difficulty)
        train = data_from_coco(Path(tmp) / "train" / "annotations.json")
        test = data_from_coco(Path(tmp) / "test" / "annotations.json")
    data = _both(train, test)
    learn = None if args.train_conditions == "all" else tuple(args.train_conditions.split(","))
    print(f"data: synth shapes --difficulty {args.difficulty}, side {side}; "
          f"{len(train.keys)} training images ({args.train_scenes} scenes x 4 "
          f"conditions; learning from {args.train_conditions}), {len(test.keys)} test images, "
          f"{len(test.gt)} test objects; {args.size} px; seeds 0..{args.seeds - 1}; "
          f"{args.epochs} epochs; low = {LOW_CONDITION}", flush=True)
    result = {"difficulty": args.difficulty, "train_conditions": args.train_conditions,
              "seeds": args.seeds, "epochs": args.epochs, "quick": args.quick,
              "train_scenes": args.train_scenes, "test_scenes": args.test_scenes,
              "size": args.size, "jobs": args.jobs, "low_condition": LOW_CONDITION,
              "dacolt_learning_policy": "knife-light", "plain_policy": "hflip"}
    if args.part in ("all", "dacolt"):
        result.update(dacolt_part(args, data, learn))
    if args.part in ("all", "scale"):
        result.update(scale_part(args, data))
    result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


def scale_part(args, data: DetectionData) -> dict:
    """The whale table: medium-light images, train at full size, test resized."""
    medium = data.subset([i for i, k in enumerate(data.keys)
                          if data.conditions.get(k) == "medium"])
    scales = [float(v) for v in args.scales.split(",")]
    epochs = args.scale_epochs or args.epochs
    cpu0 = time.process_time()
    frame = study_scale(medium, seeds=range(args.seeds), epochs=epochs, scales=scales,
                        test_fraction=0.0, score_threshold=args.score_threshold,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    summary = summarise(frame, ["arm", "scale"], ["presence_f1", "counting_f1", "count_mae",
                                                  "map50"])
    load = [round(v, 2) for v in os.getloadavg()]
    print(f"\nscale study: {sum(s == 'train' for s in medium.splits)} medium training images "
          f"at {args.size} px, {sum(s == 'test' for s in medium.splits)} test images resized; "
          f"{epochs} epochs; seeds 0..{args.seeds - 1}")
    print(f"{'arm':<10} {'scale':>6} {'presence F1':>15} {'counting F1':>15} "
          f"{'count MAE':>15} {'mAP@0.5':>15}")
    for r in summary.itertuples(index=False):
        print(f"{r.arm:<10} {r.scale:>6g} {r.presence_f1_mean:>7.3f} ± {r.presence_f1_std:.3f} "
              f"{r.counting_f1_mean:>7.3f} ± {r.counting_f1_std:.3f} "
              f"{r.count_mae_mean:>7.3f} ± {r.count_mae_std:.3f} "
              f"{r.map50_mean:>7.3f} ± {r.map50_std:.3f}")
    per_seed = frame.pivot_table(index="seed", columns=["arm", "scale"], values="counting_f1")
    print("counting F1 per seed:\n" + per_seed.round(3).to_string())
    models = 2 * args.seeds
    print(f"scale models: {models}, CPU {(time.process_time() - cpu0) / models:.0f} s per model "
          f"(training + testing); load average {load}")
    return {"scale": {f"{r.arm}@{r.scale:g}": {
        "presence_f1": round(r.presence_f1_mean, 4), "presence_f1_std": round(r.presence_f1_std, 4),
        "counting_f1": round(r.counting_f1_mean, 4), "counting_f1_std": round(r.counting_f1_std, 4)}
        for r in summary.itertuples(index=False)},
        "scale_cpu_s_per_model": round((time.process_time() - cpu0) / models, 1),
        "scale_load_average": load}


def dacolt_part(args, data: DetectionData, learn) -> dict:
    """The detector table, the baseline and the knife study (plain / DaCoT / DaCoLT)."""
    frame = study_dacolt(data, seeds=range(args.seeds), epochs=args.epochs,
                         train_conditions=learn, test_fraction=0.0,
                         score_threshold=args.score_threshold, jobs=args.jobs,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    rows = frame[(frame["size"] == "all") & frame["condition"].isin(CONDITIONS)]
    summary = summarise(rows, ["arm", "condition"], ["map50", "precision", "recall", "f1",
                                                     "counting_f1"])
    base = baseline_rows(data.subset([i for i, s in enumerate(data.splits) if s == "test"]),
                         args.score_threshold)
    print()
    print(f"{'arm':<9} {'condition':<11} {'mAP@0.5':>15} {'precision':>15} {'recall':>15} "
          f"{'F1':>15} {'counting F1':>15}")

    def cell(mean, std=None):
        if mean is None or (isinstance(mean, float) and np.isnan(mean)):
            return f"{'-':>15}"
        return f"{mean:>7.3f} ± {std:.3f}" if std is not None else f"{mean:>15.3f}"

    for r in base:
        print(f"{r['arm']:<9} {r['condition']:<11} {cell(r['map50'])} {cell(r['precision'])} "
              f"{cell(r['recall'])} {cell(r['f1'])} {cell(r['counting_f1'])}")
    for r in summary.itertuples(index=False):
        print(f"{r.arm:<9} {r.condition:<11} {cell(r.map50_mean, r.map50_std)} "
              f"{cell(r.precision_mean, r.precision_std)} {cell(r.recall_mean, r.recall_std)} "
              f"{cell(r.f1_mean, r.f1_std)} {cell(r.counting_f1_mean, r.counting_f1_std)}")
    times = frame.drop_duplicates(["seed", "arm"])
    times = times[times["arm"] != "DaCoT"]
    load = [round(v, 2) for v in os.getloadavg()]
    print(f"\ntraining per model ({len(times)} models): wall {times['train_seconds'].mean():.0f} s "
          f"(max {times['train_seconds'].max():.0f}), CPU {times['cpu_seconds'].mean():.0f} s; "
          f"load average {load}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")

    def mean(arm, condition, value, stat="mean"):
        sel = summary[(summary["arm"] == arm) & (summary["condition"] == condition)]
        return round(float(sel[f"{value}_{stat}"].iloc[0]), 4) if len(sel) else None

    def by_arm(value, stat="mean"):
        return {arm: {c: mean(arm, c, value, stat) for c in CONDITIONS}
                for arm in ("plain", "DaCoT", "DaCoLT")}

    per_seed = rows.pivot_table(index=["seed", "condition"], columns="arm", values="f1")
    wins = {c: int((per_seed.xs(c, level="condition")["DaCoLT"]
                    > per_seed.xs(c, level="condition")["plain"]).sum())
            for c in ("low", "artificial")}
    print("recall per seed:\n" + rows.pivot_table(index=["condition", "seed"], columns="arm",
                                                  values="recall").round(3).to_string())
    test_rows = rows[rows["arm"] == "plain"]
    print("F1 per seed:\n" + rows.pivot_table(index=["condition", "seed"], columns="arm",
                                                values="f1").round(3).to_string())
    return {
        "map50_high": mean("plain", "high", "map50"), "map50_medium": mean("plain", "medium", "map50"),
        "map50_plain": {c: mean("plain", c, "map50") for c in CONDITIONS},
        "f1_plain": {c: mean("plain", c, "f1") for c in CONDITIONS},
        "f1_dacot": {c: mean("DaCoT", c, "f1") for c in CONDITIONS},
        "f1_dacolt": {c: mean("DaCoLT", c, "f1") for c in CONDITIONS},
        "f1_baseline": {r["condition"]: round(r["f1"], 4) for r in base},
        "map50_baseline": {r["condition"]: round(r["map50"], 4) for r in base},
        "counting_f1_plain_high_medium": round(float(test_rows[test_rows["condition"].isin(
            ["high", "medium"])]["counting_f1"].mean()), 4),
        "counting_f1_plain_all": round(float(test_rows["counting_f1"].mean()), 4),
        "counting_f1_dacolt_all": round(float(rows[rows["arm"] == "DaCoLT"]["counting_f1"].mean()), 4),
        "counting_f1_baseline_all": round(float(np.mean([r["counting_f1"] for r in base])), 4),
        "f1_mean": by_arm("f1"), "f1_std": by_arm("f1", "std"),
        "recall_mean": by_arm("recall"), "recall_std": by_arm("recall", "std"),
        "dacolt_beats_plain_seeds": wins,
        "f1_per_seed": {f"{arm}/{c}": [round(float(v), 4) for v in
                                       rows[(rows["arm"] == arm) & (rows["condition"] == c)]
                                       .sort_values("seed")["f1"]]
                        for arm in ("plain", "DaCoT", "DaCoLT") for c in CONDITIONS},
        "recall_baseline": {r["condition"]: round(r["recall"], 4) for r in base},
        "train_wall_s": round(float(times["train_seconds"].mean()), 1),
        "train_cpu_s": round(float(times["cpu_seconds"].mean()), 1),
        "dacolt_load_average": load}


if __name__ == "__main__":
    main()
