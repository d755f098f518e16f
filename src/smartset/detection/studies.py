"""The two detection studies of the material, reproduced on any detection data set.

- :func:`study_dacolt` (the knife study): plain training, DaCoT (the plain model with
  brightness-guided CLAHE + gamma at test time only) and DaCoLT (at learning time the
  ``knife-light`` policy: darkening with a few grey levels of sensor noise, the uneven warm
  light and glare of a lamp, CLAHE; and the same preprocessing as DaCoT on every training
  and test image), scored per
  lighting condition x object size over seeds. The CLAHE grid follows the image size (one
  tile per 128 px): a 4 x 4 grid at 128 px cut the objects into differently equalised
  pieces and cost DaCoT and DaCoLT F1 in every condition.
- :func:`study_scale` (the whale study): train at one resolution, test at lower ones,
  without and with scale augmentation (``whale-scale``); presence F1 (is there an object?)
  and counting F1 (how many?).

Every arm of a seed shares the seed's split, training images and initial weights; only
the named step differs. F1, precision, recall and counts use detections scoring at least
``score_threshold`` (0.3, the same for every arm: looked at on the test set as a
diagnosis only, the threshold that maximised an arm's F1 was 0.2-0.4, its F1 within 0.02
of the one at 0.3, so one threshold treats the arms alike); mAP uses all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._atomic import atomic_path, write_text
from smartset.detection.train import (DetectionData, DetectorError, data_from_workspace,
                                      fit_detector, predictions_frame, split_groups)

__all__ = ["study_dacolt", "study_scale", "study_dacolt_workspace", "study_scale_workspace",
           "summarise"]

_PLAIN_POLICY = "hflip"      # every arm flips: the arms differ only by the step studied
_DACOLT_POLICY = "knife-light"


def _split(data: DetectionData, seed: int, test_fraction: float,
           train_conditions: Sequence[str] | None) -> tuple[DetectionData, DetectionData]:
    train_rows, test_rows = split_groups(data, test_fraction=test_fraction, seed=seed)
    if train_conditions:
        wanted = set(train_conditions)
        train_rows = np.array([i for i in train_rows
                               if data.conditions.get(data.keys[i]) in wanted], int)
    if not len(train_rows) or not len(test_rows):
        raise DetectorError(f"Seed {seed} leaves {len(train_rows)} training and "
                            f"{len(test_rows)} test images; give more images or other "
                            f"--train-conditions.")
    return data.subset(train_rows), data.subset(test_rows)


def _fit(job: tuple) -> object:
    """One model of a study (a top-level function, so a worker process can run it)."""
    train, options = job
    return fit_detector(train, **options)


def _fit_all(jobs: list[tuple], workers: int) -> list:
    """The models of ``jobs`` (``(data, fit_detector options)``), in order; with
    ``workers`` > 1 in that many fresh processes (each arm's training is independent and
    seeded, so the models are the same as one after the other)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_fit(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_fit, jobs))


def study_dacolt(data: DetectionData, *, seeds: Sequence[int] = (0, 1, 2), epochs: int = 20,
                 train_conditions: Sequence[str] | None = None,
                 size: int | None = None, test_fraction: float = 0.25,
                 score_threshold: float = 0.3, batch_size: int = 16, lr: float = 2e-3,
                 jobs: int = 1, progress=None) -> pd.DataFrame:
    """Per seed, arm (``plain``, ``DaCoT``, ``DaCoLT``), condition and object size: the knife
    table's ``frames``, ``gt``, ``tp``, ``fp``, ``precision``, ``recall``, ``f1``, plus the
    condition's ``map50`` on its ``all`` row. ``train_conditions``: the lighting the models
    learn from (default ``None``: every condition, as the knife study trained and tested per
    condition; ``("high", "medium")`` for footage collected by day); the test holds every
    condition. ``jobs``: models trained at once in worker processes (the same models).
    Returns the long table (one row per seed x arm x condition x size)."""
    from smartset.detection.evaluation import coco_map, counting_f1, knife_table

    if not any(data.conditions.values()):
        raise DetectorError("The images have no lighting conditions: import a set whose images "
                            "carry a 'condition' (smartset synth shapes --conditions), or "
                            "measured ones (detect evaluate --conditions pixels).")
    rows, splits, fits = [], {}, []
    for seed in seeds:
        train, test = splits[seed] = _split(data, seed, test_fraction, train_conditions)
        common = dict(epochs=epochs, size=size, seed=seed, batch_size=batch_size, lr=lr,
                      classes=sorted(set(data.gt["category"])))
        fits += [(train, dict(policy=_PLAIN_POLICY, **common)),
                 (train, dict(policy=_DACOLT_POLICY, preprocess="dacolt", **common))]
    models = iter(_fit_all(fits, jobs))
    for seed in seeds:
        train, test = splits[seed]
        plain, dacolt = next(models), next(models)
        arms = {"plain": (plain, "none"), "DaCoT": (plain, "dacolt"),
                "DaCoLT": (dacolt, "dacolt")}
        for arm, (model, preprocess) in arms.items():
            pred = predictions_frame(test.keys, model.predict(test.images,
                                                              preprocess=preprocess))
            table = knife_table(test.gt, pred, test.conditions, score_threshold=score_threshold,
                                images=test.keys)
            for condition in table["condition"].unique():
                keys = [k for k in test.keys if test.conditions.get(k) == condition] \
                    if condition not in ("all", "average") else test.keys
                g = test.gt[test.gt["image"].isin(set(keys))]
                p = pred[pred["image"].isin(set(keys))]
                where = (table["condition"] == condition) & table["size"].isin(["all", "cells"])
                table.loc[where, "map50"] = coco_map(g, p, iou_thresholds=[0.5])["map50"]
                table.loc[where, "counting_f1"] = counting_f1(
                    g, p, images=keys, score_threshold=score_threshold)["f1"]
            table["train_seconds"] = round(model.train_seconds_, 2)
            table["cpu_seconds"] = round(model.cpu_seconds_, 2)
            table.insert(0, "arm", arm)
            table.insert(0, "seed", seed)
            rows.append(table)
            if progress:
                progress(f"seed {seed} {arm}: F1 " + ", ".join(
                    f"{r.condition} {r.f1:.3f}" for r in table[table["size"] == "all"]
                    .itertuples()))
    return pd.concat(rows, ignore_index=True)


def _downscale(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def study_scale(data: DetectionData, *, seeds: Sequence[int] = (0, 1, 2), epochs: int = 20,
                scales: Sequence[float] = (1.0, 0.5), size: int | None = None,
                test_fraction: float = 0.25, score_threshold: float = 0.3,
                batch_size: int = 16, lr: float = 2e-3, progress=None) -> pd.DataFrame:
    """Per seed, arm (``plain``: flips only; ``scale-aug``: the ``whale-scale`` policy) and
    test ``scale`` (the test images resized by it before detection, as a satellite sees
    what a plane saw; boxes mapped back to the original pixels): ``presence_f1``,
    ``counting_f1``, ``count_mae``, ``map50``. Returns the long table."""
    from smartset.detection.evaluation import coco_map, counting_f1

    rows = []
    for seed in seeds:
        train, test = _split(data, seed, test_fraction, None)
        common = dict(epochs=epochs, size=size, seed=seed, batch_size=batch_size, lr=lr,
                      classes=sorted(set(data.gt["category"])))
        arms = {"plain": fit_detector(train, policy=_PLAIN_POLICY, **common),
                "scale-aug": fit_detector(train, policy="whale-scale", **common)}
        for arm, model in arms.items():
            for scale in scales:
                images = [_downscale(i, scale) for i in test.images]
                found = model.predict(images, size="native")
                for dets, small, image in zip(found, images, test.images):
                    fx, fy = image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]
                    for d in dets:
                        x, y, w, h = d["bbox"]
                        d["bbox"] = [x * fx, y * fy, w * fx, h * fy]
                pred = predictions_frame(test.keys, found)
                counts = counting_f1(test.gt, pred, images=test.keys,
                                     score_threshold=score_threshold)
                rows.append({"seed": seed, "arm": arm, "scale": scale,
                             "presence_f1": counts["presence"]["f1"],
                             "counting_f1": counts["f1"], "count_mae": counts["mae"],
                             "map50": coco_map(test.gt, pred, iou_thresholds=[0.5])["map50"],
                             "images": len(test.keys)})
                if progress:
                    progress(f"seed {seed} {arm} x{scale}: presence F1 "
                             f"{counts['presence']['f1']:.3f}, counting F1 {counts['f1']:.3f}")
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, by: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1; 0 for one seed) of ``values`` over seeds, per
    ``by`` group, columns ``NAME_mean`` / ``NAME_std`` and ``seeds``."""
    grouped = frame.groupby(list(by), sort=False)
    out = grouped[list(values)].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out = out.fillna({c: 0.0 for c in out.columns if c.endswith("_std")})
    out["seeds"] = grouped.size()
    return out.reset_index()


def _pm(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "-"
    return f"{mean:.3f} ± {std:.3f}"


def dacolt_markdown(summary: pd.DataFrame) -> str:
    """The knife table over seeds: per condition x size x arm, mean counts and mean ± std
    precision, recall, F1."""
    lines = ["| condition | size | arm | frames | gt | TP | FP | precision | recall | F1 | "
             "mAP@0.5 | counting F1 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples(index=False):
        lines.append(f"| {r.condition} | {r.size} | {r.arm} | {r.frames_mean:.0f} | "
                     f"{r.gt_mean:.0f} | {r.tp_mean:.1f} | {r.fp_mean:.1f} | "
                     f"{_pm(r.precision_mean, r.precision_std)} | "
                     f"{_pm(r.recall_mean, r.recall_std)} | {_pm(r.f1_mean, r.f1_std)} | "
                     f"{_pm(r.map50_mean, r.map50_std)} | "
                     f"{_pm(r.counting_f1_mean, r.counting_f1_std)} |")
    return "\n".join(lines)


def scale_markdown(summary: pd.DataFrame) -> str:
    """The whale table over seeds: per arm x test scale, presence and counting F1."""
    lines = ["| arm | test scale | presence F1 | counting F1 | count MAE | mAP@0.5 |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples(index=False):
        lines.append(f"| {r.arm} | {r.scale:g} | {_pm(r.presence_f1_mean, r.presence_f1_std)} | "
                     f"{_pm(r.counting_f1_mean, r.counting_f1_std)} | "
                     f"{_pm(r.count_mae_mean, r.count_mae_std)} | "
                     f"{_pm(r.map50_mean, r.map50_std)} |")
    return "\n".join(lines)


def _bar_plot(path: Path, summary: pd.DataFrame, group: str, arm: str, value: str,
              title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(summary[group]))
    arms = list(dict.fromkeys(summary[arm]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(groups), 3.2))
    width = 0.8 / max(1, len(arms))
    for j, a in enumerate(arms):
        sub = summary[summary[arm] == a].set_index(group).reindex(groups)
        ax.bar(np.arange(len(groups)) + j * width, sub[f"{value}_mean"], width,
               yerr=sub[f"{value}_std"], capsize=3, label=str(a))
    ax.set_xticks(np.arange(len(groups)) + width * (len(arms) - 1) / 2)
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(value.replace("_", " "))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_dacolt_report(frame: pd.DataFrame, out_dir: str | Path) -> dict:
    """``runs.csv`` (per seed), ``summary.csv``, ``table.md`` and ``f1.png`` (F1 per
    condition and arm, error bars one std over seeds) in ``out_dir``."""
    out_dir = Path(out_dir)
    values = ["frames", "gt", "tp", "fp", "precision", "recall", "f1", "map50", "counting_f1"]
    frame = frame.copy()
    for column in ("map50", "counting_f1"):
        frame[column] = frame.get(column, np.nan)
    summary = summarise(frame, ["condition", "size", "arm"], values)
    write_text(out_dir / "runs.csv", frame.to_csv(index=False))
    write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    markdown = dacolt_markdown(summary)
    write_text(out_dir / "table.md", markdown + "\n")
    rows = summary[(summary["size"] == "all") & ~summary["condition"].isin(["all", "average"])]
    plot = _bar_plot(out_dir / "f1.png", rows, "condition", "arm", "f1",
                     f"F1 by condition, mean ± std over {int(summary['seeds'].max())} seeds")
    return {"summary": summary, "markdown": markdown, "csv": str(out_dir / "summary.csv"),
            "runs_csv": str(out_dir / "runs.csv"), "plot": str(plot)}


def write_scale_report(frame: pd.DataFrame, out_dir: str | Path) -> dict:
    """``runs.csv``, ``summary.csv``, ``table.md`` and ``counting.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    summary = summarise(frame, ["arm", "scale"],
                        ["presence_f1", "counting_f1", "count_mae", "map50"])
    write_text(out_dir / "runs.csv", frame.to_csv(index=False))
    write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    markdown = scale_markdown(summary)
    write_text(out_dir / "table.md", markdown + "\n")
    plot = _bar_plot(out_dir / "counting.png", summary, "scale", "arm", "counting_f1",
                     "Counting F1 by test scale, mean ± std over seeds")
    return {"summary": summary, "markdown": markdown, "csv": str(out_dir / "summary.csv"),
            "runs_csv": str(out_dir / "runs.csv"), "plot": str(plot)}


def _run_study(ws, name: str, config: dict, work) -> dict:
    run_id = ws.catalog.start_run(f"study {name}", config, seed=config["seeds"][0])
    with ws.catalog.failing_run(run_id):
        result = work(ws.reports_dir / f"study-{name}")
        summary = result.pop("summary")
        result["table"] = summary.to_dict("records")
        result["load_average"] = [round(v, 2) for v in os.getloadavg()]
        ws.catalog.finish_run(run_id, {k: v for k, v in result.items() if k != "markdown"})
    return {"run_id": run_id, **result}


def study_dacolt_workspace(ws, version: str | None = None, **options) -> dict:
    """:func:`study_dacolt` on a workspace version; the report under
    ``reports/study-dacolt/``; recorded as a ``study dacolt`` run."""
    data = data_from_workspace(ws, version)
    config = {"version": version, **{k: v for k, v in options.items() if k != "progress"}}
    config["seeds"] = list(options.get("seeds", (0, 1, 2)))
    return _run_study(ws, "dacolt", config, lambda out: write_dacolt_report(
        study_dacolt(data, **_with_printer(options)), out))


def study_scale_workspace(ws, version: str | None = None, **options) -> dict:
    """:func:`study_scale` on a workspace version; the report under
    ``reports/study-scale/``; recorded as a ``study scale`` run."""
    data = data_from_workspace(ws, version)
    config = {"version": version, **{k: v for k, v in options.items() if k != "progress"}}
    config["seeds"] = list(options.get("seeds", (0, 1, 2)))
    return _run_study(ws, "scale", config, lambda out: write_scale_report(
        study_scale(data, **_with_printer(options)), out))


def _with_printer(options: dict) -> dict:
    options = dict(options)
    if options.get("progress") is True:
        import sys

        options["progress"] = lambda line: print(line, file=sys.stderr, flush=True)
    elif not callable(options.get("progress")):
        options["progress"] = None
    return options
