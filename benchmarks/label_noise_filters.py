"""Label-noise detection against cleanlab's *best* filter, on fresh noise seeds (issue #23
goals 1 and 5): smartset's consensus and every ``filter_by`` cleanlab offers, on the same
out-of-fold probabilities and features, uniform and class-conditional noise.

Data: ``mnist10k.npz`` shuffled with seed 0; 8,000 digits after the first 2,000 (the same
labeled set as ``label_noise.py``; ``--n``), 2,000 with ``--quick``. Settings (``--settings``):

- ``uniform10`` / ``uniform20``: that share of labels flipped uniformly to another class;
- ``asym10`` / ``asym20``: class-conditional, every class flipped with that probability to
  one look-alike (0->6, 1->7, 2->7, 3->8, 4->9, 5->6, 6->5, 7->1, 8->3, 9->4).

Seeds: ``--seeds`` evaluation noise seeds (default 100..104; never used to choose anything)
and ``--calibration-seeds`` (default 200, 201: the seeds any hyper-parameter of the
consensus was chosen on; printed in their own table, not in the headline).

Inputs (computed once per setting and seed, cached under ``benchmarks/.cache/``):
``smartset.learn.cross_val_predict(model="small_cnn", folds=5, return_features=True)``
(``--source cnn``) or the PCA-50 + logistic regression stand-in (``--source lr``, default
here: the CNN's 5x8,000 trainings per seed do not fit a shared 2-core machine; ``--source
cnn`` runs the same table on CNN probabilities).

Detectors, all on the same arrays:

- cleanlab ``filter.find_label_issues`` with each ``filter_by`` (``prune_by_noise_rate`` its
  default, ``prune_by_class``, ``both``, ``confident_learning``, ``predicted_neq_given``,
  ``low_normalized_margin``, ``low_self_confidence``); "cleanlab best" is, per setting, the
  filter with the highest mean F1 over the evaluation seeds (an oracle choice, in
  cleanlab's favour);
- cleanlab given the features too: every ``filter_by`` on the same combined posterior the
  consensus starts from (model probabilities averaged with the kNN posterior of the
  features, within folds, with the weight the consensus fitted), and cleanlab's ``Datalab`` label issues from the features alone
  (its kNN-based ``pred_probs``; run within each fold, as the features are per fold);
- smartset: ``consensus`` (default options), and ``confident_learning``.

Printed: per setting the table of detectors (precision, recall, F1 mean ± std over seeds,
(1-F1) ratio against cleanlab best and against cleanlab's default), every seed's F1 of the
consensus and of cleanlab best, load averages before and after. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA  # noqa: E402
from label_noise import oof, prf, table  # noqa: E402

from smartset import clean  # noqa: E402

PAIRS = {0: 6, 1: 7, 2: 7, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}
SETTINGS = ("uniform10", "uniform20", "asym10", "asym20")
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence")
CONSENSUS = "smartset consensus"
DEFAULT = "cleanlab prune_by_noise_rate"
CEILING = "ceiling: best cut of "


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true",
                        help="2,000 digits, uniform10 and asym20, 2 seeds, LR stand-in")
    parser.add_argument("--source", choices=["cnn", "lr"], default="lr")
    parser.add_argument("--n", type=int, default=None, help="labeled digits (default 8000)")
    parser.add_argument("--epochs", type=int, default=4, help="CNN epochs (--source cnn)")
    parser.add_argument("--settings", default=None,
                        help=f"comma-separated, of {', '.join(SETTINGS)} (default all)")
    parser.add_argument("--seeds", default=None,
                        help="evaluation noise seeds, comma-separated (default 100,101,102,103,104)")
    parser.add_argument("--calibration-seeds", default=None,
                        help="calibration noise seeds (default 200,201; none with --quick)")
    parser.add_argument("--no-datalab", action="store_true",
                        help="skip cleanlab's Datalab row (the slowest peer row)")
    args = parser.parse_args(argv)
    if args.quick:
        args.source = "lr"
    args.n = args.n or (2000 if args.quick else 8000)
    args.settings = (args.settings.split(",") if args.settings else
                     ["uniform10", "asym20"] if args.quick else list(SETTINGS))
    for s in args.settings:
        if s not in SETTINGS:
            parser.error(f"unknown setting {s!r}; choose from {', '.join(SETTINGS)}")
    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    args.seeds = ints(args.seeds) if args.seeds else ([100, 101] if args.quick
                                                      else [100, 101, 102, 103, 104])
    args.calibration_seeds = (ints(args.calibration_seeds) if args.calibration_seeds is not None
                              else [] if args.quick else [200, 201])
    return args


def add_noise(labels: np.ndarray, setting: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, truth mask)``: the setting's noise drawn with ``seed``."""
    rng = np.random.default_rng([seed, 23])
    rate = int(setting.lstrip("uniformasym")) / 100
    noisy = labels.copy()
    flip = rng.random(len(labels)) < rate
    if setting.startswith("uniform"):
        noisy[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    else:
        noisy[flip] = np.array([PAIRS[int(c)] for c in labels[flip]], dtype=labels.dtype)
    return noisy, noisy != labels


def combined_posterior(noisy, probs, features, groups, *, model_weight, k=20):
    """The consensus's starting point (model probabilities averaged with the leave-one-out
    kNN posterior of the features, cosine, within folds, with the consensus's fitted
    ``model_weight``), for cleanlab's feature rows."""
    knn = clean.knn_posterior(noisy, features, n_classes=probs.shape[1], k=k,
                              metric="cosine", groups=groups)
    mixed = model_weight * probs + (1 - model_weight) * knn
    return mixed / mixed.sum(axis=1, keepdims=True)


def datalab_flags(noisy, features, folds, k=10):
    """cleanlab Datalab's label issues from the features alone, within each fold. Datalab
    (``find_issues(features=..., issue_types={"label": {}})``) needs the optional
    ``cleanlab[datalab]`` dependencies; without them its documented path is run directly:
    ``KNeighborsClassifier(k + 1)`` probabilities made leave-one-out, then
    ``filter.find_label_issues`` (Datalab's label issue manager, cleanlab 2.9)."""
    from cleanlab.filter import find_label_issues

    try:
        from cleanlab import Datalab
        Datalab(data={"label": noisy[:2]}, label_name="label", verbosity=0)
    except ImportError:
        Datalab = None
    flagged = np.zeros(len(noisy), dtype=bool)
    for f in np.unique(folds):
        rows = np.flatnonzero(folds == f)
        x = np.ascontiguousarray(features[rows], np.float32)
        if Datalab is not None:
            lab = Datalab(data={"label": noisy[rows]}, label_name="label", verbosity=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lab.find_issues(features=x, issue_types={"label": {"k": k}})
            flagged[rows] = lab.get_issues("label")["is_label_issue"].to_numpy()
            continue
        from sklearn.neighbors import KNeighborsClassifier

        y = noisy[rows]
        knn = KNeighborsClassifier(n_neighbors=k + 1).fit(x, y)
        pred = knn.predict_proba(x)
        onehot = np.eye(pred.shape[1])[np.searchsorted(knn.classes_, y)]
        pred = np.clip((pred - onehot / (k + 1)) * (k + 1) / k, 0, None)
        pred = pred / np.maximum(pred.sum(axis=1, keepdims=True), 1e-12)
        pred = np.where(pred.sum(axis=1, keepdims=True) > 0, pred, 1 / pred.shape[1])
        flagged[rows] = find_label_issues(y, pred, n_jobs=1)
    return flagged


def best_cut_f1(score: np.ndarray, truth: np.ndarray, given: np.ndarray) -> float:
    """The highest F1 that cutting the ranking ``score`` (higher = more suspicious) can reach
    when the cut is chosen *with the true labels*, separately in each given class (which
    includes every single global cut, and the consensus's per-class cuts). Not a detector:
    the ceiling of a ranking, which no estimate of how many to flag can beat.

    Maximising F1 = 2 TP / (flagged + wrong) over per-class cuts is done by Dinkelbach's
    iteration: for a fixed ``lam`` every class independently keeps the prefix of its ranking
    that maximises ``TP - lam * flagged``; ``lam = F1 / 2`` of that choice, until it stops
    rising (it rises monotonically and the choices are finite)."""
    prefix = []
    for c in np.unique(given):
        rows = np.flatnonzero(given == c)
        hits = truth[rows[np.argsort(-score[rows], kind="stable")]]
        prefix.append(np.concatenate([[0], np.cumsum(hits)]))
    wrong, lam, best = int(truth.sum()), 0.0, 0.0
    for _ in range(100):
        tp = flagged = 0
        for cum in prefix:
            k = int(np.argmax(cum - lam * np.arange(len(cum))))
            tp, flagged = tp + int(cum[k]), flagged + k
        f1 = 2 * tp / (flagged + wrong) if flagged + wrong else 0.0
        if f1 <= best + 1e-12:
            break
        best, lam = f1, f1 / 2
    return float(best)


def detect(noisy, probs, features, folds, *, datalab=True, rankings=None):
    """{detector: flags} on one set of inputs; ``rankings`` (a dict), when given, receives
    the scores whose best cut is the information ceiling (:func:`best_cut_f1`)."""
    from cleanlab.filter import find_label_issues

    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    groups = folds if len(np.unique(folds)) > 1 else None
    flags = {}
    found = clean.consensus(noisy, probs, features=features, groups=groups)
    mixed = combined_posterior(noisy, probs, features, groups,
                               model_weight=found.params["model_weight_used"])
    for filter_by in FILTERS:
        flags[f"cleanlab {filter_by}"] = find_label_issues(noisy, probs, filter_by=filter_by,
                                                           n_jobs=1)
        flags[f"cleanlab {filter_by} +kNN"] = find_label_issues(noisy, mixed,
                                                                filter_by=filter_by, n_jobs=1)
    if datalab:
        flags["cleanlab Datalab (features, kNN)"] = datalab_flags(noisy, features, folds)
    flags["smartset confident_learning"] = clean.confident_learning(noisy, probs)
    flags[CONSENSUS] = found.is_issue
    if rankings is not None:
        rows = np.arange(len(noisy))
        rankings["consensus ranking"] = found.score
        rankings["consensus ranking, model only"] = clean.consensus(noisy, probs).score
        rankings["kNN posterior of the features"] = 1 - clean.knn_posterior(
            noisy, features, n_classes=probs.shape[1], k=20, metric="cosine",
            groups=groups)[rows, noisy]
        rankings["model self-confidence"] = 1 - probs[rows, noisy]
        rankings["model + kNN self-confidence"] = 1 - mixed[rows, noisy]
        with np.errstate(divide="ignore"):
            other = np.where(np.eye(probs.shape[1], dtype=bool)[noisy], 0, probs).max(axis=1)
            rankings["model log-odds"] = np.log(other + 1e-12) - np.log(probs[rows, noisy] + 1e-12)
    return flags


def run_seeds(args, images, true, setting, seeds, source):
    """{detector: [(p, r, f1, flagged), ...]} over ``seeds``."""
    out: dict[str, list] = {}
    for seed in seeds:
        noisy, truth = add_noise(true, setting, seed)
        key = {"bench": "label_noise_filters", "n": args.n, "setting": setting, "seed": seed,
               "source": source, "epochs": args.epochs if source == "cnn" else None,
               "model": "small_cnn", "folds": 5}
        probs, features, folds, _ = oof(images, noisy, source=source, seed=seed,
                                        epochs=args.epochs, key=key)
        # folds: the fold of each sample (CNN: features per fold model); all zeros for the
        # stand-in, whose PCA embedding is shared
        rankings: dict[str, np.ndarray] = {}
        flags = detect(noisy, probs, features, folds, datalab=not args.no_datalab,
                       rankings=rankings)
        for name, mask in flags.items():
            out.setdefault(name, []).append((*prf(mask, truth), int(mask.sum())))
        for name, score in rankings.items():
            out.setdefault(CEILING + name, []).append(best_cut_f1(score, truth, noisy))
        print(f"  {setting} seed {seed}: true wrong {int(truth.sum())}, consensus F1 "
              f"{out[CONSENSUS][-1][2]:.4f}, cleanlab default F1 {out[DEFAULT][-1][2]:.4f}, "
              f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return out


def summarise(by_name):
    """Per detector: mean precision, recall, F1, F1 std, per-seed F1."""
    return {name: {"precision": float(np.mean([v[0] for v in vals])),
                   "recall": float(np.mean([v[1] for v in vals])),
                   "f1": float(np.mean([v[2] for v in vals])),
                   "f1_std": float(np.std([v[2] for v in vals])),
                   "f1_seeds": [round(v[2], 4) for v in vals]}
            for name, vals in by_name.items() if not name.startswith(CEILING)}


def ceilings(by_name):
    """Per ranking: the mean and std of its best-cut F1 over the seeds, and every seed's."""
    return {name[len(CEILING):]: {"f1": float(np.mean(vals)), "f1_std": float(np.std(vals)),
                                  "f1_seeds": [round(v, 4) for v in vals]}
            for name, vals in by_name.items() if name.startswith(CEILING)}


def best_of(summary, suffix=""):
    names = [f"cleanlab {f}{suffix}" for f in FILTERS if f"cleanlab {f}{suffix}" in summary]
    return max(names, key=lambda n: summary[n]["f1"])


def ratio(ours, theirs):
    return (1 - ours) / (1 - theirs) if theirs < 1 else float("nan")


def report_ceiling(setting, seeds, summary, ceiling):
    """The information ceiling: what the best cut of each ranking would reach."""
    best = best_of(summary)
    rows = [(name, f"{c['f1']:.4f} ± {c['f1_std']:.4f}",
             f"{ratio(c['f1'], summary[best]['f1']):.3f}",
             " ".join(f"{v:.4f}" for v in c["f1_seeds"]))
            for name, c in sorted(ceiling.items(), key=lambda kv: -kv[1]["f1"])]
    table(f"{setting}: information ceiling, the best cut of each ranking in each given class, "
          f"chosen WITH the true labels (not a detector: no count estimate can beat it; seeds {seeds})",
          ["ranking", "best-cut F1 ± std", "(1-F1)/best", "per seed"], rows)


def report(setting, seeds, summary, title_extra=""):
    best = best_of(summary)
    best_knn = best_of(summary, " +kNN")
    rows = []
    for name, s in sorted(summary.items(), key=lambda kv: -kv[1]["f1"]):
        rows.append((name, f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                     f"{s['f1']:.4f} ± {s['f1_std']:.4f}",
                     f"{ratio(s['f1'], summary[best]['f1']):.3f}",
                     f"{ratio(s['f1'], summary[DEFAULT]['f1']):.3f}"))
    table(f"{setting}{title_extra}: mean over noise seeds {seeds}; cleanlab best = {best}, "
          f"with features = {best_knn}",
          ["detector", "precision", "recall", "F1 ± std", "(1-F1)/best", "(1-F1)/default"],
          rows)
    per_seed = [(seed, f"{a:.4f}", f"{b:.4f}", f"{c:.4f}", f"{ratio(a, b):.3f}",
                 f"{ratio(a, c):.3f}")
                for seed, a, b, c in zip(seeds, summary[CONSENSUS]["f1_seeds"],
                                         summary[best]["f1_seeds"],
                                         summary[best_knn]["f1_seeds"])]
    table(f"{setting}{title_extra}: per seed",
          ["seed", "consensus F1", f"{best} F1", f"{best_knn} F1", "ratio vs best",
           "ratio vs best +kNN"], per_seed)
    return best, best_knn


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        import cleanlab
    except ImportError:
        sys.exit("label_noise_filters.py: cleanlab is not installed. Run it with the benchmark "
                 "venv (.venv-bench/bin/python) or pip install cleanlab.")
    npz = args.data / "mnist10k.npz"
    if not npz.exists():
        sys.exit(f"label_noise_filters.py: data not found: {npz}. Pass --data DIR holding "
                 f"mnist10k.npz (default: {DEFAULT_DATA}).")
    with np.load(npz) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    rows = order[2000:2000 + args.n]
    images, true = images[rows], labels[rows]
    load_before = os.getloadavg()
    started = time.perf_counter()
    source = args.source
    print(f"label_noise_filters: {args.n} digits, settings {args.settings}, evaluation seeds "
          f"{args.seeds}, calibration seeds {args.calibration_seeds}, probabilities "
          f"{'small_cnn OOF (5 folds, ' + str(args.epochs) + ' epochs)' if source == 'cnn' else 'PCA-50 + logistic regression OOF (stand-in)'}; "
          f"cleanlab {cleanlab.__version__}; load before {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f}")
    out = {"source": source, "n": args.n, "seeds": args.seeds,
           "calibration_seeds": args.calibration_seeds, "settings": {}}
    for setting in args.settings:
        by_name = run_seeds(args, images, true, setting, args.seeds, source)
        summary, ceiling = summarise(by_name), ceilings(by_name)
        best, best_knn = report(setting, args.seeds, summary)
        report_ceiling(setting, args.seeds, summary, ceiling)
        top = max(ceiling, key=lambda n: ceiling[n]["f1"])
        cons = summary[CONSENSUS]
        out["settings"][setting] = {
            "f1_consensus": round(cons["f1"], 4), "f1_consensus_std": round(cons["f1_std"], 4),
            "f1_consensus_seeds": cons["f1_seeds"],
            "cleanlab_best": best, "f1_cleanlab_best": round(summary[best]["f1"], 4),
            "f1_cleanlab_best_seeds": summary[best]["f1_seeds"],
            "f1_cleanlab_default": round(summary[DEFAULT]["f1"], 4),
            "cleanlab_best_with_features": best_knn,
            "f1_cleanlab_best_with_features": round(summary[best_knn]["f1"], 4),
            "ratio_vs_best": round(ratio(cons["f1"], summary[best]["f1"]), 4),
            "ratio_vs_default": round(ratio(cons["f1"], summary[DEFAULT]["f1"]), 4),
            "ratio_vs_best_with_features": round(ratio(cons["f1"], summary[best_knn]["f1"]), 4),
            "detectors": {n: {k: (round(v, 4) if isinstance(v, float) else v)
                              for k, v in s.items()} for n, s in summary.items()},
            "ceiling": {n: round(c["f1"], 4) for n, c in ceiling.items()},
            "ceiling_ratio_vs_best": round(ratio(ceiling[top]["f1"], summary[best]["f1"]), 4),
        }
        if "cleanlab Datalab (features, kNN)" in summary:
            out["settings"][setting]["f1_datalab_features"] = round(
                summary["cleanlab Datalab (features, kNN)"]["f1"], 4)
    if args.calibration_seeds:
        out["calibration"] = {}
        for setting in args.settings:
            summary = summarise(run_seeds(args, images, true, setting, args.calibration_seeds,
                                          source))  # ceilings: evaluation seeds only
            best, _ = report(setting, args.calibration_seeds, summary,
                             " (CALIBRATION seeds, not the result)")
            out["calibration"][setting] = {
                "f1_consensus": round(summary[CONSENSUS]["f1"], 4),
                "ratio_vs_best": round(ratio(summary[CONSENSUS]["f1"], summary[best]["f1"]), 4)}
    load_after = os.getloadavg()
    ratios = {s: v["ratio_vs_best"] for s, v in out["settings"].items()}
    floor = {s: v["ceiling_ratio_vs_best"] for s, v in out["settings"].items()}
    out.update({"ratios_vs_best": ratios, "goal": 0.6, "ceiling_ratios_vs_best": floor,
                "goal_met": {s: r <= 0.6 for s, r in ratios.items()},
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in load_after],
                "seconds": round(time.perf_counter() - started, 1)})
    print(f"\n(1-F1) of the consensus / (1-F1) of cleanlab's best filter: "
          + ", ".join(f"{s} {r:.3f}" for s, r in ratios.items())
          + " (goal <= 0.6); the best any cut of the best ranking reaches: "
          + ", ".join(f"{s} {r:.3f}" for s, r in floor.items())
          + f"; load before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{out['seconds']} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
