"""The augmentation study: the same model trained on each augmentation combination.

For each named combination (``original``, ``rotation``, ``rotation-elastic``, ...), ``runs``
trainings with seeds ``seed .. seed + runs - 1`` on the same training set and budget, then
ensembles of the best runs. Reported as the source study's table: combination, training
instances, average and best test accuracy, epochs, time (s); markdown, CSV and a plot.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._progress import progress_bar
from smartset.learn.errors import LearnError

__all__ = ["study_augment", "study_augment_workspace", "STUDY_COMBINATIONS"]

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
    from smartset.learn._workspace import duplicate_groups, run_dir, split_holdout
    from smartset.learn.data import load_version

    data = load_version(ws, version, size=size, mode=mode, progress=progress)
    if data.targets is not None:
        raise LearnError("the augmentation study is for classification versions")
    train_rows, test_rows, holdout = split_holdout(data, duplicate_groups(ws, data.ids),
                                                   test_fraction=0.2, seed=seed)
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
