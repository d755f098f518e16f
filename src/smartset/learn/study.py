"""Studies that measure what a data or training step is worth.

The augmentation study: for each named combination (``original``, ``rotation``,
``rotation-elastic``, ...) and expansion factor (x1 online, x5/x25 offline), ``runs``
trainings with seeds ``seed .. seed + runs - 1`` on the same training set and budget (epochs,
or a fixed number of optimizer steps), then ensembles of the best runs. Reported as the
source study's table (combination, training instances, test accuracy) with its uncertainty:
mean ± std, min, max and n runs, a paired comparison with ``original`` on the same seeds
(mean difference, 95% paired t-interval, sign count) and a caution under 3 runs; markdown,
CSV and a bar chart whose axis starts at 0 or says it is cut.

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

__all__ = ["study_augment", "study_augment_workspace", "STUDY_COMBINATIONS", "paired_differences",
           "plot_study", "study_transfer",
           "study_transfer_workspace", "TRANSFER_DEFAULTS"]

STUDY_COMBINATIONS = ("original", "centering", "elastic", "translation", "rotation",
                      "elastic-centering", "rotation-centering", "translation-elastic",
                      "translation-rotation", "rotation-elastic", "rotation-elastic-centering",
                      "elastic-elastic")


EXPAND_CHUNK = 4096  # images augmented per call when expanding offline (bounds memory)


def _parse_factors(factor) -> list[int]:
    if isinstance(factor, str):
        factor = [part for part in factor.split(",") if part.strip()]
    factors = list(factor) if isinstance(factor, (list, tuple)) else [factor]
    try:
        factors = [int(f) for f in factors]
    except (TypeError, ValueError):
        raise LearnError(f"factor must be whole numbers such as 1,5,25, got {factor!r}") from None
    if not factors or any(f < 1 for f in factors):
        raise LearnError(f"factors must be at least 1, got {factors}")
    return list(dict.fromkeys(factors))


def _copy_seed(seed: int, copy: int, chunk: int) -> int:
    """The augmentation seed of copy ``copy`` of chunk ``chunk``: independent of the factor,
    so the x5 set's copies are the first copies of the x25 set."""
    return int(np.random.SeedSequence([int(seed), copy, chunk]).generate_state(1)[0])


def _expand(images: np.ndarray, labels: np.ndarray, policy, factor: int, seed: int):
    """The originals plus ``factor - 1`` augmented copies of each (offline expansion, in
    memory). Each copy comes from :func:`smartset.augment.augment` with a seed made of
    ``seed``, the copy number and the chunk of :data:`EXPAND_CHUNK` images, so the same
    call rebuilds the same set (and ``augment``'s records replay any copy). Only the
    training arrays given here are expanded: held-out images are never augmented."""
    if factor <= 1 or policy is None:
        return images, labels
    from smartset.augment import augment
    from smartset.learn._arrays import as_image_tensor

    tensor = as_image_tensor(images)
    parts, part_labels = [images], [labels]
    for copy in range(1, factor):
        chunks = []
        for chunk, first in enumerate(range(0, len(tensor), EXPAND_CHUNK)):
            out = augment(tensor[first:first + EXPAND_CHUNK], policy,
                          seed=_copy_seed(seed, copy, chunk)).output
            chunks.append(out.numpy().transpose(0, 2, 3, 1))
        parts.append(np.concatenate(chunks).reshape(images.shape))
        part_labels.append(labels)
    return np.concatenate(parts), np.concatenate(part_labels)


def _step_stream(n: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows for exactly ``steps`` batches of ``batch_size``: seeded passes over the ``n``
    training instances (each a permutation), cut at ``steps * batch_size`` rows, so every
    instance is seen ``k`` or ``k + 1`` times and a larger set is not trained longer."""
    need = steps * batch_size
    rng = np.random.default_rng([int(seed), 1])
    passes = [rng.permutation(n) for _ in range(-(-need // n))]
    return np.concatenate(passes)[:need]


def study_augment(train_images, train_labels, test_images, test_labels, *,
                  combinations: Sequence[str] | None = None, runs: int = 3, epochs: int = 5,
                  model: str = "lenet", factor: int | Sequence[int] | str = 1,
                  steps: int | None = None, batch_size: int = 64,
                  lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                  ensembles: Sequence[int] = (3, 5), progress: bool | None = None,
                  **options) -> dict:
    """Run the study on arrays; returns ``{"table": DataFrame, "runs": DataFrame,
    "ensembles": list, "markdown": str, "cautions": list}``.

    Every combination trains ``runs`` times with the seeds ``seed .. seed + runs - 1`` (the
    same seeds for every combination, so each is compared with ``original`` seed by seed).

    ``factor`` (an int, a list, or ``"1,5,25"``): 1 augments online (fresh parameters every
    batch); F > 1 expands the training set offline to F times its size (originals included,
    copies from the seeded, replayable :func:`smartset.augment.augment`), as the source
    study did (60k -> 300k -> 1.5M), and trains without further augmentation. Each
    combination runs at each factor; ``original`` (nothing to augment) runs once, at x1.
    Only the training arrays are expanded; the test images are never augmented.

    ``steps``: a fixed budget of optimizer steps for every combination and factor (a x25
    set is not trained 25 times longer); ``epochs`` is then ignored and each run records
    the passes over its set the budget makes (``steps * batch_size / instances``). The run
    trains on exactly ``steps * batch_size`` rows drawn as seeded passes over its set (held
    in memory). Without ``steps``, every run trains ``epochs`` epochs.

    The table: per combination and factor, mean ("average"), std ("spread", NaN with one
    run: unknown, not 0), min ("worst"), max ("best") and number of runs; and the paired
    comparison with ``original`` on the seeds both ran: mean of the per-seed differences
    ("vs_original"), their std, a 95% paired t-interval (Student's t with n - 1 degrees of
    freedom; none with one shared seed) and the sign count (wins, ties, losses). Fewer
    than 3 runs add a caution. Ensembles average the probabilities of the ``k`` best runs
    overall (chosen by test accuracy, as in the source study, so they are an optimistic
    figure; the markdown says so).
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
    if steps is not None and int(steps) < 1:
        raise LearnError(f"steps must be at least 1, got {steps}")
    factors = _parse_factors(factor)
    show_factor = factors != [1]
    plans = []  # (combination, factor)
    for name in combinations:
        for f in ([1] if name == "original" else factors):
            plans.append((name, f))
    train_images, train_labels = np.asarray(train_images), np.asarray(train_labels)
    test_labels = np.asarray(test_labels, dtype=object)
    records, fitted = [], []
    with progress_bar(len(plans) * runs, "augmentation study", enabled=progress) as advance:
        for name, f in plans:
            policy = None if name == "original" else named_policy(name)
            for run in range(runs):
                run_seed = seed + run
                images, labels = _expand(train_images, train_labels, policy, f, run_seed)
                instances = int(len(images))
                if steps is not None:
                    rows = _step_stream(instances, int(steps), batch_size, run_seed)
                    fit_images, fit_labels, fit_epochs = images[rows], labels[rows], 1
                else:
                    fit_images, fit_labels, fit_epochs = images, labels, epochs
                started = time.perf_counter()
                estimator = ImageClassifier(
                    model, epochs=fit_epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, seed=run_seed, progress=False,
                    augment=policy if f <= 1 else None, **options)
                estimator.fit(fit_images, fit_labels)
                seconds = time.perf_counter() - started
                taken = len(estimator.history_) * -(-len(fit_images) // batch_size)
                probs = estimator.predict_proba(test_images)
                accuracy = float(np.mean(np.asarray(estimator.classes_, dtype=object)[
                    probs.argmax(1)] == test_labels))
                records.append({"combination": name, "factor": f, "run": run,
                                "seed": run_seed, "instances": instances, "steps": int(taken),
                                "epochs": round(taken * batch_size / instances, 4)
                                if steps is not None else epochs,
                                "accuracy": accuracy, "seconds": seconds})
                fitted.append((accuracy, _row_label(name, f, show_factor), run, probs,
                               estimator.classes_))
                advance(1, f"{name} x{f} (seed {run_seed}): {accuracy:.4f}")
                del fit_images, fit_labels, images, labels
    per_run = pd.DataFrame(records)
    table = _augment_table(per_run, show_factor=show_factor)
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
    cautions = _cautions(table, runs)
    return {"table": table, "runs": per_run, "ensembles": ensemble_rows, "cautions": cautions,
            "markdown": _markdown(table, ensemble_rows, len(test_labels), cautions,
                                  steps=steps, batch_size=batch_size)}


def _row_label(name: str, factor: int, show_factor: bool) -> str:
    return f"{name} x{factor}" if show_factor and name != "original" else name


def paired_differences(runs: pd.DataFrame, combination: str, factor: int = 1, *,
                       baseline: str = "original") -> dict:
    """The paired comparison of ``combination`` at ``factor`` with ``baseline`` (x1) in a
    study's per-run frame: the per-seed differences on the seeds both ran, their mean, std,
    a 95% paired t-interval (Student's t, n - 1 degrees of freedom; NaN for n < 2) and
    the sign count."""
    base = runs[(runs["combination"] == baseline) & (runs["factor"] == 1)]
    other = runs[(runs["combination"] == combination) & (runs["factor"] == factor)]
    merged = other.merge(base, on="seed", suffixes=("", "_base"))
    diffs = (merged["accuracy"] - merged["accuracy_base"]).to_numpy(dtype=float)
    n = len(diffs)
    out = {"paired_seeds": n, "diffs": diffs.tolist(),
           "diff_mean": float(diffs.mean()) if n else np.nan,
           "diff_std": float(diffs.std(ddof=1)) if n >= 2 else np.nan,
           "ci_low": np.nan, "ci_high": np.nan,
           "wins": int((diffs > 0).sum()), "ties": int((diffs == 0).sum()),
           "losses": int((diffs < 0).sum())}
    if n >= 2:
        from scipy import stats

        half = float(stats.t.ppf(0.975, n - 1)) * out["diff_std"] / np.sqrt(n)
        out["ci_low"], out["ci_high"] = out["diff_mean"] - half, out["diff_mean"] + half
    return out


def _augment_table(per_run: pd.DataFrame, *, show_factor: bool) -> pd.DataFrame:
    table = (per_run.groupby(["combination", "factor"], sort=False)
             .agg(instances=("instances", "first"), steps=("steps", "first"),
                  epochs=("epochs", "first"), runs=("accuracy", "count"),
                  average=("accuracy", "mean"), spread=("accuracy", "std"),
                  worst=("accuracy", "min"), best=("accuracy", "max"),
                  seconds=("seconds", "sum"))
             .reset_index())
    table.insert(0, "label", [_row_label(c, f, show_factor)
                              for c, f in zip(table["combination"], table["factor"])])
    # one run has no spread: NaN ("unknown"), never 0
    has_original = bool(((per_run["combination"] == "original")).any())
    paired = [paired_differences(per_run, c, f) if has_original and c != "original"
              else {"diff_mean": 0.0} if c == "original" else {}
              for c, f in zip(table["combination"], table["factor"])]
    table["vs_original"] = [p.get("diff_mean", np.nan) for p in paired]
    for key in ("diff_std", "ci_low", "ci_high", "paired_seeds", "wins", "ties", "losses"):
        table[key] = [p.get(key, np.nan) for p in paired]
    table["caution"] = [("spread unknown with 1 run" if n == 1 else
                         f"spread from {n} runs only" if n < 3 else "")
                        for n in table["runs"]]
    return table


def _cautions(table: pd.DataFrame, runs: int) -> list[str]:
    notes = []
    if runs < 3:
        notes.append(f"Caution: {runs} run(s) per combination; "
                     + ("spread unknown with 1 run and no paired interval"
                        if runs == 1 else "the spread and the paired interval rest on 2 "
                        "seeds (the t-interval is very wide)")
                     + ": use --runs 3 or more before trusting a difference.")
    if "original" not in set(table["combination"]):
        notes.append("No 'original' in the study: no paired comparison.")
    return notes


def _fmt(value, spec: str = ".4f", missing: str = "n/a") -> str:
    return missing if value is None or (isinstance(value, float) and np.isnan(value)) \
        else format(value, spec)


def _markdown(table: pd.DataFrame, ensembles: list[dict], n_test: int,
              cautions: Sequence[str] = (), *, steps: int | None = None,
              batch_size: int | None = None) -> str:
    lines = ["| combination | factor | training instances | steps | epochs | runs | "
             "accuracy: mean ± std | min | max | vs original (paired, mean) | "
             "95% paired t-interval | wins/ties/losses | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table.itertuples():
        spread = (f"± {row.spread:.4f}" if row.runs >= 2 and not np.isnan(row.spread)
                  else "(spread unknown with 1 run)")
        if row.combination == "original":
            paired, interval, signs = "baseline", "", ""
        else:
            paired = _fmt(row.vs_original, "+.4f")
            interval = ("n/a (1 seed)" if row.paired_seeds == 1 else
                        f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
                        if not np.isnan(row.ci_low) else "n/a")
            signs = ("" if np.isnan(row.paired_seeds) else
                     f"{int(row.wins)}/{int(row.ties)}/{int(row.losses)}")
        epochs = row.epochs if isinstance(row.epochs, (int, np.integer)) else f"{row.epochs:.2f}"
        lines.append(f"| {row.label} | x{row.factor} | {row.instances} | {row.steps} | "
                     f"{epochs} | {row.runs} | {row.average:.4f} {spread} | {row.worst:.4f} | "
                     f"{row.best:.4f} | {paired} | {interval} | {signs} | {row.seconds:.1f} |")
    for row in ensembles:
        lines.append(f"| {row['ensemble']} (best runs: {', '.join(row['members'])}) | | | | "
                     f"| | {row['accuracy']:.4f} | | best member {row['best_member']:.4f} "
                     f"| | | | |")
    budget = (f"a fixed budget of {steps} optimizer steps of {batch_size} images for every "
              f"row (epochs: passes over that row's training set)" if steps is not None
              else "the same number of epochs for every row (a larger factor trains longer)")
    lines.append(f"\nAccuracy on {n_test} held-out images (never augmented), {budget}. "
                 f"Each combination runs on the same seeds as 'original'; 'vs original' is "
                 f"the mean of the per-seed differences, with a 95% paired t-interval and "
                 f"the count of seeds where it won/tied/lost. Factor x1 augments online; "
                 f"xF expands the training set offline to F times its size (originals "
                 f"included); 'original' runs at x1. Ensembles average the probabilities "
                 f"of the best runs, chosen on this same held-out set as in the source "
                 f"study, so they are optimistic.")
    lines.extend(f"\n**{note}**" for note in cautions)
    return "\n".join(lines)


def _study_figure(table: pd.DataFrame):
    """The bar chart: mean accuracy per row, error bars of the std over runs (else the
    worst-to-best whiskers; a row of one run says its spread is unknown). The value axis
    starts at 0 unless that hides the differences; then it is cut and says so (title,
    axis label and break marks on the axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = table["label"] if "label" in table else table["combination"]
    fig, ax = plt.subplots(figsize=(8.5, 0.38 * len(table) + 1.9))
    y = np.arange(len(table))
    mean = table["average"].to_numpy(dtype=float)
    ax.barh(y, mean, color="#4c72b0")
    if "spread" in table:
        std = np.nan_to_num(table["spread"].to_numpy(dtype=float), nan=0.0)
        ax.errorbar(mean, y, xerr=std, fmt="none", ecolor="black", capsize=3)
        whiskers = "error bars: std over runs"
        unknown = [i for i, n in enumerate(table.get("runs", [])) if n < 2]
        for i in unknown:
            ax.annotate("1 run: spread unknown", (mean[i], i), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7, color="#aa3333")
        low = float(np.nanmin(np.minimum(table["worst"], mean - std)))
    else:
        ax.errorbar(mean, y, xerr=[mean - table["worst"], table["best"] - mean],
                    fmt="none", ecolor="black", capsize=3)
        whiskers = "whiskers: worst to best run"
        low = float(table["worst"].min())
    high = min(1.0, float(np.nanmax(np.maximum(table["best"], mean + (std if "spread" in table
                                                                     else 0.0)))) + 0.01)
    start = 0.0
    if low > 0.25:  # the differences would be invisible from 0: cut the axis, visibly
        start = np.floor((low - 0.02) * 50) / 50
    ax.set_xlim(start, high)
    ax.set_yticks(y, labels)
    if start > 0:
        ax.set_title(f"axis cut: accuracy starts at {start:.2f}, not 0", fontsize=9,
                     color="#aa3333")
        ax.set_xlabel(f"test accuracy (bar: mean; {whiskers}) — axis cut at {start:.2f}")
        kwargs = dict(transform=ax.transAxes, color="#aa3333", clip_on=False, lw=1.2)
        for yy in (0.0, 1.0):  # break marks on the left end of the value axis
            ax.plot([-0.012, 0.012], [yy - 0.02, yy + 0.02], **kwargs)
            ax.plot([0.008, 0.032], [yy - 0.02, yy + 0.02], **kwargs)
    else:
        ax.set_xlabel(f"test accuracy (bar: mean; {whiskers})")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig, ax


def plot_study(table: pd.DataFrame, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig, _ = _study_figure(table)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_augment_workspace(ws, version: str | None = None, *, train_size: int | None = None,
                            test_size: int | None = None, size=None, mode: str | None = None,
                            seed: int = 0, progress: bool | None = None, **options) -> dict:
    """The study over a workspace version: a stratified ``train_size``/``test_size`` split
    (duplicates and lineages kept together; only the training rows are ever expanded),
    recorded as a run; writes ``study.csv`` (the table), ``runs.csv`` (one row per run),
    ``study.md`` and ``study.png`` under ``reports/study/augment-run-N/``. ``options``: the
    keywords of :func:`study_augment` (``factor``, ``steps``, ``runs``, ...)."""
    from smartset._atomic import write_text
    from smartset.learn._workspace import derived_mask, duplicate_groups, split_holdout
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
              "options": {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in options.items() if k != "progress"}}
    run_id = ws.catalog.start_run("study augment", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        result = study_augment(data.images[train_rows], data.labels[train_rows],
                               data.images[test_rows], data.labels[test_rows], seed=seed,
                               progress=progress, **options)
        out_dir = ws.path / "reports" / "study" / f"augment-run-{run_id}"
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path, runs_path, md_path = (out_dir / "study.csv", out_dir / "runs.csv",
                                        out_dir / "study.md")
        write_text(csv_path, result["table"].to_csv(index=False))
        write_text(runs_path, result["runs"].to_csv(index=False))
        write_text(md_path, result["markdown"] + "\n")
        plot = plot_study(result["table"], out_dir / "study.png")
        table = result["table"].astype(object).where(result["table"].notna(), None)
        metrics = {"table": table.to_dict("records"),
                   "runs": result["runs"].to_dict("records"),
                   "ensembles": result["ensembles"], "cautions": result["cautions"],
                   "csv": str(csv_path), "runs_csv": str(runs_path),
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
