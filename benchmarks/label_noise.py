"""Label noise: smartset's cleaning detectors against cleanlab and imbalanced-learn, on the
same out-of-fold probabilities and embeddings, in one run.

Data: ``mnist10k.npz`` (from ``--data``; sorted by class, so shuffled with seed 0 first):
2,000 digits are a held-out test set with clean labels, the other 8,000 the labeled set
whose labels get noise (2,000 of them with ``--quick``). Noise (the true mask is kept): ``uniform10`` (10% of labels flipped uniformly to
another class), ``uniform20``, and ``asym`` (class-conditional: 30% of the 7s -> 1, 4s -> 9,
3s -> 5, 2s -> 7). Seeds: 2 for uniform10 (the headline), 1 for the others
(``--seeds``, ``--extra-seeds``). ``--quick``: uniform10 only, one seed, 2 epochs.

Probabilities and embeddings: ``smartset.learn.cross_val_predict(model="small_cnn",
folds=5, return_features=True)``: out-of-fold probabilities and the out-of-fold
penultimate-layer features (each fold's model embeds its own held-out samples, so kNN runs
within folds: ``groups=fold``). Cached under ``benchmarks/.cache/`` by parameters. Without
the learning stage (or with ``--source lr``) a stand-in: PCA-50 + logistic regression
(scikit-learn ``cross_val_predict``), embeddings = the PCA-50 projection.

Every detector gets the same arrays:

- cleanlab ``find_label_issues`` with each ``filter_by`` (its default is
  ``prune_by_noise_rate``; the fresh-seed comparison against cleanlab's best filter, with
  cleanlab also given the features, is ``label_noise_filters.py``);
- imbalanced-learn ``EditedNearestNeighbours(sampling_strategy='all', kind_sel='mode')``,
  ``kind_sel='all'``, ``RepeatedEditedNearestNeighbours`` and ``AllKNN`` as noise filters
  (a sample they remove is flagged), run within each fold as smartset's kNN filters are;
- smartset: ``confident_learning`` (must equal cleanlab's default), ENN, RENN, All-kNN,
  the kNN posterior, and the ``consensus``.

Then: downstream accuracy, on the ``asym`` noise by default (``--downstream``: with 10%
uniform noise and a few epochs the CNN trained on noisy labels is as accurate as on true
ones, so there is no gap to close). The sets are cleaned as the docs recommend: out-of-fold
probabilities from fold models trained with online augmentation
(``--downstream-augment``, default ``translation-rotation``: they fit the wrong labels
less), and every downstream detector runs on those. The same small CNN (no augmentation)
is trained on the noisy labels; on the labels the consensus's plan proposes
(``clean.label_actions``: a flagged label relabeled where the suggestion is likely enough,
else excluded: ``gap_closed``); on the labels of a second round (out-of-fold predictions
again on the version the plan made, then its plan: ``gap_closed_two_rounds``; not with
``--quick``); on the plan made from the detection tables' probabilities (no augmentation:
``gap_closed_without_augmentation``); on each detector's cleaned set (flagged samples
removed); and on the true labels. Each is scored on the clean held-out 2,000 and averaged
over ``--downstream-seeds`` training seeds. Last, the data reduction curve (held-out 1-NN
accuracy on PCA-50 against subset size: random, FCNN, CNN).

Last line of stdout: one JSON object (``f1_consensus``, ``f1_cleanlab``,
``err_ratio_vs_cleanlab``, ``gap_closed``, each detector's precision/recall/F1, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA  # noqa: E402

from smartset import clean  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
ASYM = {7: 1, 4: 9, 3: 5, 2: 7}
PLAN_SET = "smartset consensus (as the plan proposes: relabel or exclude)"
PLAN_PLAIN_SET = "smartset consensus, plan from fold models trained without augmentation"
TWO_ROUNDS_SET = "smartset consensus, 2 rounds (plan, out-of-fold again, plan)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true",
                        help="2,000 digits, uniform 10%% noise, 1 seed, 2 epochs, short downstream")
    parser.add_argument("--seeds", type=int, default=None,
                        help="noise seeds of uniform10, the headline (default 2; 1 quick)")
    parser.add_argument("--extra-seeds", type=int, default=1,
                        help="noise seeds of uniform20 and asym (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="CNN epochs (default 4; 2 quick)")
    parser.add_argument("--downstream", default=None,
                        help="scenario of the downstream experiment (default: asym, where "
                             "label errors hurt a trained model; uniform10 with --quick)")
    parser.add_argument("--downstream-seeds", type=int, default=None,
                        help="training seeds each downstream accuracy is averaged over "
                             "(default 3; 1 quick): one run's spread is as large as the gap")
    parser.add_argument("--downstream-augment", default=None,
                        help="online augmentation policy of the fold models whose out-of-fold "
                             "probabilities the downstream sets are cleaned with (default "
                             "translation-rotation; none with --quick; 'none': the detection "
                             "tables' probabilities)")
    parser.add_argument("--source", choices=["auto", "cnn", "lr"], default="auto",
                        help="probabilities: small_cnn OOF (auto when smartset.learn exists) "
                             "or the PCA-50 + logistic regression stand-in")
    args = parser.parse_args(argv)
    args.n = 2000 if args.quick else 8000
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.epochs = args.epochs or (2 if args.quick else 4)
    args.downstream_seeds = args.downstream_seeds or (1 if args.quick else 3)
    if args.downstream_augment is None:
        args.downstream_augment = None if args.quick else "translation-rotation"
    elif args.downstream_augment.lower() == "none":
        args.downstream_augment = None
    args.scenarios = ["uniform10"] if args.quick else ["uniform10", "uniform20", "asym"]
    args.downstream = args.downstream or ("uniform10" if args.quick else "asym")
    if args.downstream not in args.scenarios:
        parser.error(f"--downstream must be one of {args.scenarios}")
    return args


def add_noise(labels: np.ndarray, scenario: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 7])
    noisy = labels.copy()
    if scenario.startswith("uniform"):
        rate = int(scenario[len("uniform"):]) / 100
        flip = rng.random(len(labels)) < rate
        noisy[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    elif scenario == "asym":
        draw = rng.random(len(labels))
        for src, dst in ASYM.items():
            chosen = (labels == src) & (draw < 0.3)
            noisy[chosen] = dst
    else:
        raise ValueError(scenario)
    return noisy, noisy != labels


def source_of(args) -> str:
    if args.source != "auto":
        return args.source
    try:
        import smartset.learn  # noqa: F401
        return "cnn"
    except ImportError:
        return "lr"


def oof_key(args, source: str, scenario: str, seed: int, **extra) -> dict:
    """The parameters an out-of-fold run is cached under."""
    return {"n": args.n, "scenario": scenario, "seed": seed, "epochs": args.epochs,
            "source": source, "model": "small_cnn", "folds": 5, **extra}


def oof(images, noisy, *, source: str, seed: int, epochs: int, key: dict,
        augment: str | None = None):
    """(probs, features, folds), cached by parameters and a digest of the labels.
    ``augment``: the online augmentation policy the fold models train with (CNN only)."""
    if augment is not None:
        key = {**key, "augment": augment}
    digest = hashlib.sha256(noisy.tobytes() + images[:50].tobytes()).hexdigest()[:12]
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"oof-{name}-{digest}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["probs"], data["features"], data["folds"], True
    started = time.perf_counter()
    if source == "cnn":
        from smartset.learn import cross_val_predict, fold_ids

        folds = fold_ids(noisy, 5, seed)
        probs, features = cross_val_predict(images, noisy, model="small_cnn", folds=5,
                                            epochs=epochs, seed=seed, return_features=True,
                                            fold=folds, augment=augment)
    else:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        flat = images.reshape(len(images), -1) / 255.0
        features = PCA(50, random_state=0).fit_transform(flat).astype(np.float32)
        splitter = StratifiedKFold(5, shuffle=True, random_state=seed)
        folds = np.zeros(len(noisy), dtype=np.int64)
        for f, (_, held) in enumerate(splitter.split(features, noisy)):
            folds[held] = f
        probs = cross_val_predict(LogisticRegression(max_iter=300), features, noisy,
                                  cv=splitter, method="predict_proba")
        folds = np.zeros(len(noisy), dtype=np.int64)  # one shared embedding: no groups
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, probs=np.asarray(probs, np.float32), features=features, folds=folds)
    print(f"  OOF {key} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return np.asarray(probs, np.float32), features, folds, False


def imblearn_filters(noisy, features, folds):
    """imbalanced-learn's cleaning rules as noise filters, fitted within each fold."""
    try:
        from imblearn.under_sampling import AllKNN, EditedNearestNeighbours, RepeatedEditedNearestNeighbours
    except ImportError:
        return {}
    makers = {
        "imblearn ENN (mode)": lambda: EditedNearestNeighbours(sampling_strategy="all", kind_sel="mode"),
        "imblearn ENN (all)": lambda: EditedNearestNeighbours(sampling_strategy="all", kind_sel="all"),
        "imblearn RENN": lambda: RepeatedEditedNearestNeighbours(sampling_strategy="all", kind_sel="mode"),
        "imblearn AllKNN": lambda: AllKNN(sampling_strategy="all", kind_sel="mode"),
    }
    out = {}
    for name, make in makers.items():
        flagged = np.zeros(len(noisy), dtype=bool)
        for f in np.unique(folds):
            rows = np.flatnonzero(folds == f)
            sampler = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sampler.fit_resample(features[rows], noisy[rows])
            kept = np.zeros(len(rows), dtype=bool)
            kept[sampler.sample_indices_] = True
            flagged[rows[~kept]] = True
        out[name] = flagged
    return out


def detect(noisy, probs, features, folds):
    """{detector name: flags}, plus the consensus result."""
    probs64 = probs.astype(np.float64)
    probs64 /= probs64.sum(axis=1, keepdims=True)
    groups = folds if len(np.unique(folds)) > 1 else None
    flags, times = {}, {}
    try:
        from cleanlab.filter import find_label_issues
        for filter_by in ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                          "predicted_neq_given", "low_normalized_margin", "low_self_confidence"):
            started = time.perf_counter()
            flags[f"cleanlab {filter_by}"] = find_label_issues(noisy, probs64, filter_by=filter_by,
                                                               n_jobs=1)
            times[f"cleanlab {filter_by}"] = time.perf_counter() - started
    except ImportError:
        print("NOTE: cleanlab is not installed (.venv-bench has it): its rows are empty.")
    started = time.perf_counter()
    imb = imblearn_filters(noisy, features, folds)
    for name in imb:
        times[name] = (time.perf_counter() - started) / max(len(imb), 1)
    flags.update(imb)
    ours = {
        "smartset confident_learning": lambda: clean.confident_learning(noisy, probs64),
        "smartset ENN (k=3, mode)": lambda: clean.edited_nearest_neighbours(noisy, features, k=3, groups=groups),
        "smartset RENN (k=3)": lambda: clean.repeated_edited_nearest_neighbours(noisy, features, k=3, groups=groups),
        "smartset All-kNN (k=3)": lambda: clean.all_knn(noisy, features, k=3, kind="mode", groups=groups),
        "smartset kNN posterior (k=10)": lambda: clean.find_label_issues(
            noisy, probs64, features=features, groups=groups, method="knn_posterior",
            metric="cosine"),
    }
    for name, fn in ours.items():
        started = time.perf_counter()
        flags[name] = fn()
        times[name] = time.perf_counter() - started
    started = time.perf_counter()
    found = clean.consensus(noisy, probs64, features=features, groups=groups)
    times["smartset consensus"] = time.perf_counter() - started
    flags["smartset consensus"] = found.is_issue
    return flags, times, found


def planned(labels, probs, features, folds, found=None):
    """``(kept rows, their labels)``: what 'smartset clean' proposes for each flagged label
    (``clean.label_actions``): relabel, exclude, or multi-label (trained here with its
    given label, one of the two). ``found``: the consensus of these inputs, if known."""
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    groups = folds if len(np.unique(folds)) > 1 else None
    if found is None:
        found = clean.consensus(labels, probs, features=features, groups=groups)
    ambiguity = clean.find_ambiguous(probs, labels=labels, features=features, groups=groups,
                                     k=20)
    proposed = labels.copy()
    excluded = np.zeros(len(labels), dtype=bool)
    for i, action, value in clean.label_actions(labels, found, ambiguity):
        if action == "relabel":
            proposed[i] = value
        elif action == "exclude":
            excluded[i] = True
    keep = np.flatnonzero(~excluded)
    return keep, proposed[keep]


def prf(mask, truth):
    tp = int((mask & truth).sum())
    p = tp / max(int(mask.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def train_eval(images, labels, test_images, test_labels, *, source, epochs, seed):
    if source == "cnn":
        from smartset.learn import ImageClassifier

        model = ImageClassifier("small_cnn", epochs=epochs, seed=seed, progress=False)
        model.fit(images, labels)
        return float(np.mean(np.asarray(model.predict(test_images)) == test_labels))
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    pca = PCA(50, random_state=0).fit(images.reshape(len(images), -1) / 255.0)
    lr = LogisticRegression(max_iter=300).fit(pca.transform(images.reshape(len(images), -1) / 255.0), labels)
    return float(lr.score(pca.transform(test_images.reshape(len(test_images), -1) / 255.0), test_labels))


def table(title, header, rows):
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    npz = args.data / "mnist10k.npz"
    if not npz.exists():
        sys.exit(f"label_noise.py: data not found: {npz}. Pass --data DIR holding mnist10k.npz "
                 f"(default: {DEFAULT_DATA}).")
    with np.load(npz) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    # the archive is sorted by class: a fixed shuffle, then 2,000 held out, the rest labeled
    order = np.random.default_rng(0).permutation(len(labels))
    test_rows, train_rows = order[:2000], order[2000:2000 + args.n]
    train_images, train_true = images[train_rows], labels[train_rows]
    test_images, test_true = images[test_rows], labels[test_rows]
    source = source_of(args)
    if source == "lr":
        args.downstream_augment = None  # the stand-in trains no network
    started = time.perf_counter()
    print(f"label_noise: {args.n} digits, scenarios {args.scenarios}, {args.seeds} seed(s), "
          f"probabilities from {'small_cnn OOF (smartset.learn.cross_val_predict, 5 folds, ' + str(args.epochs) + ' epochs)' if source == 'cnn' else 'PCA-50 + logistic regression OOF (stand-in)'}")
    results: dict[str, dict[str, list]] = {}
    agreement = []
    estimates = []
    keep_for_downstream = None
    for scenario in args.scenarios:
        for seed in range(args.seeds if scenario == "uniform10" else args.extra_seeds):
            noisy, truth = add_noise(train_true, scenario, seed)
            probs, features, folds, cached = oof(train_images, noisy, source=source, seed=seed,
                                                 epochs=args.epochs,
                                                 key=oof_key(args, source, scenario, seed))
            flags, times, found = detect(noisy, probs, features, folds)
            if "cleanlab prune_by_noise_rate" in flags:
                agreement.append(bool(np.array_equal(flags["cleanlab prune_by_noise_rate"],
                                                     flags["smartset confident_learning"])))
            estimates.append((scenario, seed, int(truth.sum()), found.n_estimated,
                              float((probs.argmax(1) == train_true).mean())))
            for name, mask in flags.items():
                results.setdefault(scenario, {}).setdefault(name, []).append(
                    (*prf(mask, truth), int(mask.sum()), times.get(name, 0.0)))
            if scenario == args.downstream and seed == 0:
                keep_for_downstream = (noisy, truth, flags, found, probs, features, folds)
    # -- detection tables
    summary = {}
    for scenario, by_name in results.items():
        rows = []
        for name, values in by_name.items():
            arr = np.array(values)
            mean = arr.mean(axis=0)
            summary.setdefault(scenario, {})[name] = {"precision": round(mean[0], 4),
                                                      "recall": round(mean[1], 4),
                                                      "f1": round(mean[2], 4),
                                                      "f1_std": round(arr[:, 2].std(), 4)}
            rows.append((name, f"{mean[0]:.3f}", f"{mean[1]:.3f}", f"{mean[2]:.4f}",
                         f"{arr[:, 2].std():.4f}", f"{mean[3]:.0f}", f"{mean[4]:.2f}"))
        rows.sort(key=lambda r: -float(r[3]))
        seeds = len(next(iter(by_name.values())))
        table(f"Detection, {scenario} noise (mean over {seeds} seed(s); same OOF "
              f"probabilities and embeddings for all)",
              ["detector", "precision", "recall", "F1", "F1 std", "flagged", "seconds"], rows)
    table("Noise counts: true vs the consensus's estimate; OOF accuracy against true labels",
          ["scenario", "seed", "true wrong", "estimated", "OOF acc (true)"],
          [(s, d, t, e, f"{a:.4f}") for s, d, t, e, a in estimates])
    # -- downstream
    downstream, downstream_runs, wrong_left = {}, {}, {}
    downstream_detection = None
    if keep_for_downstream is not None:
        (noisy, truth, flags, found, probs_downstream, features_downstream,
         folds_downstream) = keep_for_downstream
        sets = {"noisy labels": (np.arange(args.n), noisy),
                "true labels": (np.arange(args.n), train_true)}
        if args.downstream_augment:
            # the plan from the detection tables' probabilities, for reference; then the
            # cleaning workflow the docs recommend: fold models trained with augmentation
            # (they fit the wrong labels less), every downstream detector on their output
            keep, proposed = planned(noisy, probs_downstream, features_downstream,
                                     folds_downstream, found)
            sets[PLAN_PLAIN_SET] = (keep, proposed)
            probs_downstream, features_downstream, folds_downstream, _ = oof(
                train_images, noisy, source=source, seed=0, epochs=args.epochs,
                key=oof_key(args, source, args.downstream, 0), augment=args.downstream_augment)
            flags, _, found = detect(noisy, probs_downstream, features_downstream,
                                     folds_downstream)
        downstream_detection = {name: round(prf(mask, truth)[2], 4)
                                for name, mask in flags.items()}
        keep, proposed = planned(noisy, probs_downstream, features_downstream, folds_downstream,
                                 found)
        sets[PLAN_SET] = (keep, proposed)
        if not args.quick:
            # the workflow's second round: out-of-fold predictions again on the version the
            # plan made, and the plan of those
            probs2, features2, folds2, _ = oof(train_images[keep], proposed, source=source,
                                               seed=0, epochs=args.epochs,
                                               key=oof_key(args, source, args.downstream, 0,
                                                           round=2),
                                               augment=args.downstream_augment)
            kept2, proposed2 = planned(proposed, probs2, features2, folds2)
            sets[TWO_ROUNDS_SET] = (keep[kept2], proposed2)
        names = ([] if args.quick else
                 ["smartset consensus", "cleanlab prune_by_noise_rate", "cleanlab prune_by_class",
                  "imblearn ENN (mode)"])
        for name in names:
            if name in flags:
                keep = np.flatnonzero(~flags[name])
                sets[f"{name} (removed)"] = (keep, noisy[keep])
        for name, (rows, y) in sets.items():
            runs = [train_eval(train_images[rows], y, test_images, test_true, source=source,
                               epochs=args.epochs, seed=seed)
                    for seed in range(args.downstream_seeds)]
            downstream[name] = float(np.mean(runs))
            downstream_runs[name] = runs
            wrong_left[name] = int((y != train_true[rows]).sum())
        low, high = downstream["noisy labels"], downstream["true labels"]
        rows = []
        for name, acc in sorted(downstream.items(), key=lambda kv: -kv[1]):
            closed = (acc - low) / (high - low) if high > low else float("nan")
            rows.append((name, len(sets[name][0]), wrong_left[name], f"{acc:.4f}",
                         " ".join(f"{a:.4f}" for a in downstream_runs[name]), f"{closed:.2f}"))
        probabilities = (f"out-of-fold probabilities of fold models trained with "
                         f"'{args.downstream_augment}' augmentation"
                         if args.downstream_augment else "the detection tables' probabilities")
        table(f"Downstream: small CNN trained on each set, accuracy on the clean held-out "
              f"{len(test_true)} ({args.downstream} noise, seed 0; {probabilities}; mean of "
              f"{args.downstream_seeds} training seed(s))",
              ["training set", "n", "wrong labels", "accuracy", "per seed", "gap closed"], rows)
    # -- reduction curve
    from sklearn.decomposition import PCA

    pca = PCA(50, random_state=0).fit(train_images.reshape(args.n, -1) / 255.0)
    train_f = pca.transform(train_images.reshape(args.n, -1) / 255.0).astype(np.float32)
    test_f = pca.transform(test_images.reshape(len(test_images), -1) / 255.0).astype(np.float32)
    curve = clean.reduction_curve(train_true, train_f, test_true, test_f,
                                  fractions=(1.0, 0.5, 0.2, 0.1, 0.05, 0.02),
                                  methods=("random", "fcnn") if args.quick else
                                  ("random", "fcnn", "cnn"), seed=0)
    table("Data reduction: held-out 1-NN accuracy (PCA-50) against subset size (true labels)",
          ["method", "n", "fraction", "accuracy", "selection s"],
          [(r.method, r.n, f"{r.fraction:.3f}", f"{r.accuracy:.4f}", f"{r.seconds:.1f}")
           for r in curve.itertuples()])
    # -- headline
    head = summary["uniform10"]
    f1_cons = head["smartset consensus"]["f1"]
    f1_cl = head.get("cleanlab prune_by_noise_rate", {}).get("f1")
    peers = {n: v["f1"] for n, v in head.items() if n.startswith(("cleanlab", "imblearn"))}
    out = {
        "source": "small_cnn_oof" if source == "cnn" else "pca50_logreg_oof",
        "n": args.n, "seeds": args.seeds, "extra_seeds": 0 if args.quick else args.extra_seeds,
        "epochs": args.epochs, "quick": args.quick,
        "f1_consensus": f1_cons, "f1_cleanlab": f1_cl,
        "err_ratio_vs_cleanlab": (round((1 - f1_cons) / (1 - f1_cl), 4)
                                  if f1_cl is not None and f1_cl < 1 else None),
        "beats_every_peer": bool(peers) and all(f1_cons > v for v in peers.values()),
        "best_peer": max(peers, key=peers.get) if peers else None,
        "cl_agrees_with_cleanlab": all(agreement) if agreement else None,
        "gap_closed": None, "gap_closed_two_rounds": None, "gap_closed_removed": None,
        "downstream_scenario": args.downstream,
        "downstream_seeds": args.downstream_seeds,
        "downstream_augment": args.downstream_augment,
        "downstream_accuracy": {k: round(v, 4) for k, v in downstream.items()},
        "downstream_wrong_labels": wrong_left,
        "downstream_detection_f1": downstream_detection,
        "detectors": {scenario: by_name for scenario, by_name in summary.items()},
        "reduction_curve": curve[["method", "n", "accuracy"]].round(4).to_dict("records"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    for scenario, by_name in summary.items():
        if scenario != "uniform10":
            out[f"f1_consensus_{scenario}"] = by_name["smartset consensus"]["f1"]
            out[f"f1_cleanlab_{scenario}"] = by_name.get("cleanlab prune_by_noise_rate", {}).get("f1")
    if downstream:
        low, high = downstream["noisy labels"], downstream["true labels"]
        if high > low:
            out["gap_closed"] = round((downstream[PLAN_SET] - low) / (high - low), 4)
            if TWO_ROUNDS_SET in downstream:
                out["gap_closed_two_rounds"] = round(
                    (downstream[TWO_ROUNDS_SET] - low) / (high - low), 4)
            if PLAN_PLAIN_SET in downstream:
                out["gap_closed_without_augmentation"] = round(
                    (downstream[PLAN_PLAIN_SET] - low) / (high - low), 4)
            if "smartset consensus (removed)" in downstream:
                out["gap_closed_removed"] = round(
                    (downstream["smartset consensus (removed)"] - low) / (high - low), 4)
    print(f"\nconsensus F1 {f1_cons} vs cleanlab {f1_cl}: error ratio "
          f"{out['err_ratio_vs_cleanlab']} (goal <= 0.6); gap closed {out['gap_closed']} "
          f"(goal >= 0.9); {out['seconds']} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
