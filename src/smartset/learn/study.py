"""Studies that measure what a data or training step is worth.

The augmentation study: for each named combination (``original``, ``rotation``,
``rotation-elastic``, ...), ``runs`` trainings with seeds ``seed .. seed + runs - 1`` on the
same training set and budget, then ensembles of the best runs. Reported as the source
study's table: combination, training instances, average and best test accuracy, epochs,
time (s); markdown, CSV and a plot.

The transfer study (:func:`study_transfer`): from scratch (each scratch model tried, the
best marked), a frozen pretrained backbone + a new linear head, and the backbone
fine-tuned; mean, std, best and worst held-out accuracy over seeds, and training time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._progress import progress_bar
from smartset.learn.errors import LearnError

__all__ = ["study_augment", "study_augment_workspace", "STUDY_COMBINATIONS", "study_transfer",
           "study_transfer_workspace", "TRANSFER_DEFAULTS"]

STUDY_COMBINATIONS = ("original", "centering", "elastic", "translation", "rotation",
                      "elastic-centering", "rotation-centering", "translation-elastic",
                      "translation-rotation", "rotation-elastic", "rotation-elastic-centering",
                      "elastic-elastic")


def _expand(images: np.ndarray, labels: np.ndarray, policy, factor: int, seed: int):
    """The originals plus ``factor - 1`` augmented copies of each (offline expansion)."""
    if factor <= 1 or policy is None:
        return images, labels
    from smartset.learn._arrays import as_image_tensor

    tensor = as_image_tensor(images)
    parts, part_labels = [images], [labels]
    for copy in range(1, factor):
        augmented = policy(tensor, seed=seed * 1000 + copy).numpy().transpose(0, 2, 3, 1)
        parts.append(augmented.reshape(images.shape))
        part_labels.append(labels)
    return np.concatenate(parts), np.concatenate(part_labels)


def study_augment(train_images, train_labels, test_images, test_labels, *,
                  combinations: Sequence[str] | None = None, runs: int = 3, epochs: int = 5,
                  model: str = "lenet", factor: int = 1, batch_size: int = 64,
                  lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                  ensembles: Sequence[int] = (3, 5), progress: bool | None = None,
                  **options) -> dict:
    """Run the study on arrays; returns ``{"table": DataFrame, "runs": DataFrame,
    "ensembles": list, "markdown": str}``.

    ``factor`` 1 augments online (fresh parameters every epoch); ``factor`` F > 1 expands
    the training set offline to F times its size (originals included), as the source study
    did, and trains without further augmentation. Ensembles average the probabilities of
    the ``k`` best runs overall (chosen by test accuracy, as in the source study, so they
    are an optimistic figure; the table says so).
    """
    from smartset.augment import named_policy
    from smartset.learn.estimator import ImageClassifier

    combinations = list(combinations or STUDY_COMBINATIONS)
    unknown = [c for c in combinations if c not in STUDY_COMBINATIONS]
    if unknown:
        raise LearnError(f"Unknown combination(s) {unknown}; the study's: "
                         f"{', '.join(STUDY_COMBINATIONS)}.")
    if runs < 1:
        raise LearnError(f"runs must be at least 1, got {runs}")
    test_labels = np.asarray(test_labels, dtype=object)
    records, fitted = [], []
    with progress_bar(len(combinations) * runs, "augmentation study", enabled=progress) as advance:
        for name in combinations:
            policy = None if name == "original" else named_policy(name)
            for run in range(runs):
                run_seed = seed + run
                images, labels = _expand(np.asarray(train_images), np.asarray(train_labels),
                                         policy, factor, run_seed)
                started = time.perf_counter()
                estimator = ImageClassifier(
                    model, epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, seed=run_seed, progress=False,
                    augment=policy if factor <= 1 else None, **options)
                estimator.fit(images, labels)
                seconds = time.perf_counter() - started
                probs = estimator.predict_proba(test_images)
                accuracy = float(np.mean(np.asarray(estimator.classes_, dtype=object)[
                    probs.argmax(1)] == test_labels))
                records.append({"combination": name, "run": run, "seed": run_seed,
                                "instances": int(len(images)), "epochs": epochs,
                                "accuracy": accuracy, "seconds": seconds})
                fitted.append((accuracy, name, run, probs, estimator.classes_))
                advance(1)
    per_run = pd.DataFrame(records)
    table = (per_run.groupby("combination", sort=False)
             .agg(instances=("instances", "first"), average=("accuracy", "mean"),
                  best=("accuracy", "max"), worst=("accuracy", "min"),
                  spread=("accuracy", "std"), epochs=("epochs", "first"),
                  seconds=("seconds", "sum"))
             .reset_index())
    table["spread"] = table["spread"].fillna(0.0)
    original = table.loc[table["combination"] == "original", "average"]
    table["vs_original"] = (table["average"] - float(original.iloc[0])) if len(original) else np.nan
    ensemble_rows = []
    ranked = sorted(fitted, key=lambda f: -f[0])
    for k in ensembles:
        if len(ranked) < k:
            continue
        members = ranked[:k]
        probs = np.mean([m[3] for m in members], axis=0)
        classes = np.asarray(members[0][4], dtype=object)
        accuracy = float(np.mean(classes[probs.argmax(1)] == test_labels))
        ensemble_rows.append({"ensemble": f"ensemble-{k}", "accuracy": accuracy,
                              "best_member": members[0][0],
                              "members": [f"{m[1]}#{m[2]}" for m in members]})
    return {"table": table, "runs": per_run, "ensembles": ensemble_rows,
            "markdown": _markdown(table, ensemble_rows, len(test_labels))}


def _markdown(table: pd.DataFrame, ensembles: list[dict], n_test: int) -> str:
    lines = ["| combination | training instances | average accuracy | best accuracy | spread "
             "(std) | vs original | epochs | time (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table.itertuples():
        lines.append(f"| {row.combination} | {row.instances} | {row.average:.4f} | "
                     f"{row.best:.4f} | {row.spread:.4f} | {row.vs_original:+.4f} | {row.epochs} "
                     f"| {row.seconds:.1f} |")
    for row in ensembles:
        lines.append(f"| {row['ensemble']} (best runs: {', '.join(row['members'])}) | | "
                     f"{row['accuracy']:.4f} | best member {row['best_member']:.4f} | | | | |")
    lines.append(f"\nAccuracy on {n_test} held-out images. Ensembles average the probabilities "
                 f"of the best runs, chosen on this same held-out set as in the source study, "
                 f"so they are optimistic.")
    return "\n".join(lines)


def plot_study(table: pd.DataFrame, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(table) + 1.5))
    y = np.arange(len(table))
    ax.barh(y, table["average"], color="#4c72b0")
    ax.errorbar(table["average"], y, xerr=[table["average"] - table["worst"],
                                           table["best"] - table["average"]],
                fmt="none", ecolor="black", capsize=3)
    ax.set_yticks(y, table["combination"])
    low = float(table["worst"].min())
    ax.set_xlim(max(0.0, low - 0.02), min(1.0, float(table["best"].max()) + 0.01))
    ax.set_xlabel("test accuracy (bar: average; whiskers: worst to best run)")
    ax.invert_yaxis()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_augment_workspace(ws, version: str | None = None, *, train_size: int | None = None,
                            test_size: int | None = None, size=None, mode: str | None = None,
                            seed: int = 0, progress: bool | None = None, **options) -> dict:
    """The study over a workspace version: a stratified ``train_size``/``test_size`` split
    (duplicates kept together), recorded as a run with markdown, CSV and plot files."""
    from smartset._atomic import write_text
    from smartset.learn._workspace import derived_mask, duplicate_groups, run_dir, split_holdout
    from smartset.learn.data import load_version

    data = load_version(ws, version, size=size, mode=mode, progress=progress)
    if data.targets is not None:
        raise LearnError("the augmentation study is for classification versions")
    derived = derived_mask(ws, data.ids)  # lineages kept together, only originals scored
    train_rows, test_rows, holdout = split_holdout(data, duplicate_groups(ws, data.ids),
                                                   test_fraction=0.2, seed=seed,
                                                   derived=derived)
    rng = np.random.default_rng(seed)
    train_rows = _stratified_take(train_rows, data.labels, train_size, rng)
    test_rows = _stratified_take(test_rows, data.labels, test_size, rng)
    config = {"stage": "study augment", "version": version, "holdout": holdout,
              "n_train": int(len(train_rows)), "n_test": int(len(test_rows)),
              "options": {k: v for k, v in options.items() if k != "progress"}}
    run_id = ws.catalog.start_run("study augment", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        result = study_augment(data.images[train_rows], data.labels[train_rows],
                               data.images[test_rows], data.labels[test_rows], seed=seed,
                               progress=progress, **options)
        out_dir = run_dir(ws, run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = out_dir / "study.csv", out_dir / "study.md"
        write_text(csv_path, result["table"].to_csv(index=False))
        write_text(md_path, result["markdown"] + "\n")
        plot = plot_study(result["table"], out_dir / "study.png")
        metrics = {"table": result["table"].to_dict("records"),
                   "ensembles": result["ensembles"], "csv": str(csv_path),
                   "markdown_file": str(md_path), "plot": str(plot)}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, **metrics, "markdown": result["markdown"]}


def _stratified_take(rows: np.ndarray, labels: np.ndarray, n: int | None, rng) -> np.ndarray:
    if n is None or n >= len(rows):
        return rows
    if n < 1:
        raise LearnError(f"sizes must be positive, got {n}")
    picked = []
    classes = sorted(set(labels[rows].tolist()), key=str)
    for c in classes:
        members = rows[labels[rows] == c]
        share = int(round(n * len(members) / len(rows)))
        picked.append(rng.choice(members, min(len(members), max(1, share)), replace=False))
    return np.sort(np.concatenate(picked))


# -- the transfer study ----------------------------------------------------------------------
TRANSFER_DEFAULTS = {
    # From scratch: small networks at a small size (what smartset trained before backbones).
    "scratch_models": ("small_cnn", "resnet"), "scratch_size": 64, "scratch_epochs": 20,
    # A frozen backbone + a new linear head: features computed once, the head trained on them.
    "frozen_epochs": 30,
    # Fine-tuned: the head alone for head_epochs, then every block at discriminative rates.
    "finetune_epochs": 4, "head_epochs": 1, "lr_decay": 0.7, "unfreeze": "all",
    "freeze_bn": False, "batch_size": 32, "lr": 1e-3,
}
TRANSFER_SETTINGS = ("scratch", "frozen", "finetuned", "finetuned-frozen-bn")
DEFAULT_TRANSFER_SETTINGS = ("scratch", "frozen", "finetuned")


def _resized(images: np.ndarray, size: int | None) -> np.ndarray:
    """``images`` (uint8 ``(N, H, W, C)``) resized to ``size`` x ``size`` (area
    interpolation); unchanged when ``size`` is None or already theirs."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    import cv2

    out = np.stack([cv2.resize(np.ascontiguousarray(image), (size, size),
                               interpolation=cv2.INTER_AREA) for image in images])
    return out.reshape(len(images), size, size, images.shape[3])


def study_transfer(images, labels, splits, *, backbone: str = "efficientnet_lite0",
                   settings: Sequence[str] = DEFAULT_TRANSFER_SETTINGS,
                   scratch_models: Sequence[str] = TRANSFER_DEFAULTS["scratch_models"],
                   scratch_size: int | None = TRANSFER_DEFAULTS["scratch_size"],
                   scratch_epochs: int = TRANSFER_DEFAULTS["scratch_epochs"],
                   frozen_epochs: int = TRANSFER_DEFAULTS["frozen_epochs"],
                   finetune_epochs: int = TRANSFER_DEFAULTS["finetune_epochs"],
                   head_epochs: int = TRANSFER_DEFAULTS["head_epochs"],
                   lr_decay: float = TRANSFER_DEFAULTS["lr_decay"],
                   unfreeze: str = TRANSFER_DEFAULTS["unfreeze"],
                   freeze_bn: bool = TRANSFER_DEFAULTS["freeze_bn"],
                   batch_size: int = TRANSFER_DEFAULTS["batch_size"],
                   lr: float = TRANSFER_DEFAULTS["lr"], progress: bool | None = None) -> dict:
    """The transfer table on arrays: from scratch vs a frozen backbone + new head vs the
    backbone fine-tuned (``settings``; ``finetuned-frozen-bn`` adds a fine-tune whose
    batch norms keep their pretrained statistics).

    ``images``: uint8 ``(N, H, W, C)`` at the backbone's input size (scratch models get
    them resized to ``scratch_size``); ``splits``: ``[(seed, train_rows, test_rows), ...]``,
    one training run per setting and split, seeded with its ``seed``. Returns
    ``{"table": DataFrame (one row per setting: mean, std, best, worst held-out accuracy,
    mean training seconds), "runs": DataFrame (one row per run), "best_scratch": name,
    "markdown": str}``. Training time is the wall time of ``fit`` (for the frozen head: the
    one feature pass included).
    """
    from smartset.learn.estimator import ImageClassifier

    unknown = [s for s in settings if s not in TRANSFER_SETTINGS]
    if unknown or not settings:
        raise LearnError(f"Unknown transfer setting(s) {unknown}; choose from "
                         f"{', '.join(TRANSFER_SETTINGS)}.")
    if not splits:
        raise LearnError("the transfer study needs at least one seed")
    if unfreeze not in ("all", "gradual"):
        raise LearnError(f"unfreeze must be 'all' or 'gradual', got {unfreeze!r}")
    if any(s.startswith("finetuned") for s in settings) and finetune_epochs < 2:
        raise LearnError("fine-tuning needs at least 2 epochs (the head alone, then all)")
    from smartset.learn.models import MODELS, UnknownModelError
    from smartset.learn.pretrained import check_model

    if "scratch" in settings:
        for name in scratch_models:
            if name not in MODELS or MODELS[name].pretrained:
                raise UnknownModelError(f"{name!r} is not a from-scratch model; choose from "
                                        f"{', '.join(n for n, m in MODELS.items() if not m.pretrained)}.")
    check_model(backbone)
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=object)
    size = int(images.shape[1])
    plans = []  # (setting, label, model, size, epochs, options)
    if "scratch" in settings:
        for name in scratch_models:
            plans.append(("scratch", f"from scratch: {name}", name, scratch_size or size,
                          scratch_epochs, {}))
    if "frozen" in settings:
        plans.append(("frozen", f"frozen {backbone} + new head", backbone, size, frozen_epochs,
                      {"trainable_blocks": 0}))
    if "finetuned" in settings:
        plans.append(("finetuned", f"fine-tuned {backbone}", backbone, size, finetune_epochs,
                      {"head_epochs": min(head_epochs, finetune_epochs - 1),
                       "lr_decay": lr_decay, "unfreeze": unfreeze, "freeze_bn": freeze_bn}))
    if "finetuned-frozen-bn" in settings:
        plans.append(("finetuned-frozen-bn",
                      f"fine-tuned {backbone}, batch-norm statistics frozen", backbone, size,
                      finetune_epochs,
                      {"head_epochs": min(head_epochs, finetune_epochs - 1),
                       "lr_decay": lr_decay, "unfreeze": unfreeze, "freeze_bn": True}))
    small = _resized(images, scratch_size) if "scratch" in settings else None
    records = []
    with progress_bar(len(plans) * len(splits), "transfer study", enabled=progress) as advance:
        for seed, train_rows, test_rows in splits:
            for setting, label, model, side, epochs, options in plans:
                data = small if setting == "scratch" else images
                started = time.perf_counter()
                estimator = ImageClassifier(model, epochs=epochs, batch_size=batch_size, lr=lr,
                                            seed=int(seed), progress=False, **options)
                estimator.fit(data[train_rows], labels[train_rows])
                seconds = time.perf_counter() - started
                accuracy = estimator.score(data[test_rows], labels[test_rows])
                records.append({"setting": setting, "label": label, "model": model,
                                "size": side, "epochs": epochs, "seed": int(seed),
                                "n_train": int(len(train_rows)), "n_test": int(len(test_rows)),
                                "accuracy": accuracy, "seconds": seconds})
                advance(1, f"{label} (seed {seed}): {accuracy:.4f}")
    per_run = pd.DataFrame(records)
    table = (per_run.groupby("label", sort=False)
             .agg(setting=("setting", "first"), model=("model", "first"), size=("size", "first"),
                  epochs=("epochs", "first"), seeds=("seed", "count"),
                  mean=("accuracy", "mean"), std=("accuracy", "std"),
                  best=("accuracy", "max"), worst=("accuracy", "min"),
                  seconds=("seconds", "mean"))
             .reset_index())
    table["std"] = table["std"].fillna(0.0)
    scratch = table[table["setting"] == "scratch"]
    best_scratch = (str(scratch.loc[scratch["mean"].idxmax(), "label"])
                    if len(scratch) else None)
    table["best_scratch"] = table["label"] == best_scratch
    return {"table": table, "runs": per_run, "best_scratch": best_scratch,
            "markdown": _transfer_markdown(table, per_run)}


def _transfer_markdown(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    lines = ["| setting | model | size (px) | epochs | held-out accuracy: mean ± std | best | "
             "worst | seeds | training time (s, mean) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table.itertuples():
        mark = " (best from scratch)" if row.best_scratch else ""
        lines.append(f"| {row.label}{mark} | {row.model} | {row.size} | {row.epochs} | "
                     f"{row.mean:.4f} ± {row.std:.4f} | {row.best:.4f} | {row.worst:.4f} | "
                     f"{row.seeds} | {row.seconds:.1f} |")
    n_test = sorted(set(runs["n_test"].tolist()))
    n_train = sorted(set(runs["n_train"].tolist()))
    lines.append(f"\nHeld-out accuracy over {runs['seed'].nunique()} seed(s) (seeds "
                 f"{', '.join(str(s) for s in sorted(set(runs['seed'])))}), each with its own "
                 f"split and initialisation: {'/'.join(map(str, n_train))} training and "
                 f"{'/'.join(map(str, n_test))} held-out images.")
    return "\n".join(lines)


def plot_transfer(table: pd.DataFrame, path: str | Path) -> Path:
    """Bars of mean held-out accuracy per setting, whiskers from worst to best seed."""
    frame = pd.DataFrame({"combination": table["label"], "average": table["mean"],
                          "best": table["best"], "worst": table["worst"]})
    return plot_study(frame, path)


def study_transfer_workspace(ws, version: str | None = None, *,
                             backbone: str = "efficientnet_lite0", seeds: int = 3,
                             seed: int = 0, size: int | None = None, mode: str | None = None,
                             test_fraction: float = 0.2, progress: bool | None = None,
                             **options) -> dict:
    """The transfer study over a workspace version, recorded as a run.

    For each seed ``seed .. seed + seeds - 1``: the hold-out of ``smartset train``
    (:func:`~smartset.learn._workspace.split_holdout`: the version's test split, else a
    seeded stratified ``test_fraction`` with duplicates kept together), then every setting
    of :func:`study_transfer` (``options``: its keywords). Images load at ``size`` (default:
    the backbone's own input size). Writes ``study.csv`` (the table), ``runs.csv``,
    ``study.md`` and ``study.png`` under ``reports/study/transfer-run-N/``.
    """
    from smartset._atomic import write_text
    from smartset.learn._workspace import derived_mask, duplicate_groups, split_holdout
    from smartset.learn.data import load_version
    from smartset.learn.pretrained import check_model, default_size

    if seeds < 1:
        raise LearnError(f"seeds must be at least 1, got {seeds}")
    check_model(backbone)
    size, size_note = default_size(backbone, size)
    data = load_version(ws, version, size=size, mode=mode, progress=progress)
    if data.targets is not None:
        raise LearnError("the transfer study is for classification versions")
    groups = duplicate_groups(ws, data.ids)
    splits, holdout = [], None
    for run_seed in range(seed, seed + seeds):
        train_rows, test_rows, holdout = split_holdout(data, groups,
                                                       test_fraction=test_fraction,
                                                       seed=run_seed,
                                                       derived=derived_mask(ws, data.ids))
        if not len(test_rows):
            raise LearnError("Nothing held out to measure on: add samples or a test split.")
        splits.append((run_seed, train_rows, test_rows))
    config = {"stage": "study transfer", "version": version, "backbone": backbone,
              "size": list(data.size), "size_note": size_note, "mode": data.mode,
              "seeds": list(range(seed, seed + seeds)), "holdout": holdout,
              "options": {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in options.items()}}
    run_id = ws.catalog.start_run("study transfer", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        result = study_transfer(data.images, data.labels, splits, backbone=backbone,
                                progress=progress, **options)
        out_dir = ws.path / "reports" / "study" / f"transfer-run-{run_id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path, runs_path, md_path = (out_dir / "study.csv", out_dir / "runs.csv",
                                        out_dir / "study.md")
        write_text(csv_path, result["table"].to_csv(index=False))
        write_text(runs_path, result["runs"].to_csv(index=False))
        markdown = result["markdown"] + (f"\n{size_note}." if size_note else "")
        write_text(md_path, markdown + "\n")
        plot = plot_transfer(result["table"], out_dir / "study.png")
        metrics = {"table": result["table"].to_dict("records"),
                   "runs": result["runs"].to_dict("records"),
                   "best_scratch": result["best_scratch"], "holdout": holdout,
                   "csv": str(csv_path), "runs_csv": str(runs_path),
                   "markdown_file": str(md_path), "plot": str(plot)}
        ws.catalog.finish_run(run_id, metrics)
    return {"run_id": run_id, "config": config, **metrics, "markdown": markdown}
