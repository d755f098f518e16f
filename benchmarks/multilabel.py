"""Multi-label training on a real multi-tag set built from MNIST pairs.

The set: two MNIST digits side by side on a 28x56 canvas (tags: both digits; 80% of the
images, the two digits distinct) or one digit and an empty half (one tag; 20%), the digit
on a random side. Every source digit of ``mnist10k.npz`` is used at most once and the
training and test images are built from disjoint source digits, so nothing is shared
between them (held out by lineage: an image's lineage is its two source digits). The
construction is seeded; a seed changes the pairing, the split and the training.

Rows, each fitted on the training images and scored on the held-out ones, per-class
thresholds chosen to maximise F1 on a held-out share of the training images (20%) for every
row alike:

- ``cnn-multilabel``: :class:`smartset.learn.multilabel.MultiLabelClassifier` (LeNet at
  28x56, sigmoid head, binary cross-entropy, Adam 3e-3, batch 32, cosine schedule; the
  epoch with the lowest loss on the held-out share is kept). On the quick set small_cnn
  (global pooling) reached mAP 0.53 where LeNet reached 0.75, both 6 epochs, seed 0;
- ``logistic-ovr``: scikit-learn's one-vs-rest logistic regression on the pixels (/255);
- ``knn``: k=10 nearest neighbours on the pixels, a class's probability the share of the
  neighbours tagged with it.

Reported per row over the seeds (mean +- std): mAP (mean average precision over the 10
digits), macro F1, subset accuracy (the whole tag set right), hamming loss, and fit time.
``--clean``: the cleaning stage on the same kind of set: in ``--clean-n`` (800) training
images, one of the two tags of 10% of the two-digit images is dropped (a missing tag);
out-of-fold probabilities from LeNet per fold (4 folds, 8 epochs) go to
:func:`smartset.clean.find_multilabel_issues`; reported: how many of the dropped tags it
finds and how many of its "missing" flags are dropped tags, for both filters, per seed.
Timings depend on the load of the shared machine: the load average is recorded.
Defaults: 2,000 training / 600 held-out images, 3 seeds, 6 epochs.
``--quick``: 600 training / 300 test images, 1 seed, 3 epochs (under a minute).
The last line of stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist10k.npz"


def build_pairs(images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator,
                *, single_share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x56 images and their ``(n, 10)`` tag matrix, each source digit used once
    (``images`` and ``labels`` are the pool, consumed in order)."""
    out = np.zeros((n, 28, 56), dtype=np.uint8)
    tags = np.zeros((n, 10), dtype=np.uint8)
    pool = list(range(len(images)))
    cursor = 0
    for i in range(n):
        if rng.random() < single_share:
            a = pool[cursor]
            cursor += 1
            side = int(rng.integers(2))
            out[i, :, side * 28:(side + 1) * 28] = images[a]
            tags[i, labels[a]] = 1
            continue
        a = pool[cursor]
        cursor += 1
        j = cursor  # the next digit of another class (skipped ones stay for later)
        while labels[pool[j]] == labels[a]:
            j += 1
        b = pool.pop(j)
        out[i, :, :28], out[i, :, 28:] = images[a], images[b]
        tags[i, labels[a]] = tags[i, labels[b]] = 1
    return out, tags


def make_split(data: Path, n_train: int, n_test: int, seed: int):
    archive = np.load(data)
    images, labels = archive["images"], archive["labels"].astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    half = len(order) // 2  # disjoint source digits for training and test
    train = build_pairs(images[order[:half]], labels[order[:half]], n_train, rng)
    test = build_pairs(images[order[half:]], labels[order[half:]], n_test, rng)
    return train, test


def _holdout(n: int, seed: int, share: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    held = np.zeros(n, dtype=bool)
    held[rng.permutation(n)[:int(round(n * share))]] = True
    return held


def run_cnn(train, test, seed: int, epochs: int) -> dict:
    from smartset.learn.multilabel import MultiLabelClassifier

    (x, y), (xt, yt) = train, test
    started = time.perf_counter()
    model = MultiLabelClassifier("lenet", epochs=epochs, batch_size=32, lr=3e-3, seed=seed,
                                 threshold_fraction=0.2, progress=False)
    model.fit(x, y)
    seconds = time.perf_counter() - started
    probs = model.predict_proba(xt)
    return {"probs": probs, "thresholds": model.thresholds_, "seconds": seconds}


def _pixels(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def run_logistic(train, test, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from smartset.learn.multilabel_metrics import choose_thresholds

    (x, y), (xt, yt) = train, test
    held = _holdout(len(x), seed)
    started = time.perf_counter()
    model = OneVsRestClassifier(LogisticRegression(C=0.05, max_iter=300))
    model.fit(_pixels(x[~held]), y[~held])
    thresholds = choose_thresholds(y[held], model.predict_proba(_pixels(x[held])))
    seconds = time.perf_counter() - started
    return {"probs": model.predict_proba(_pixels(xt)), "thresholds": thresholds,
            "seconds": seconds}


def run_knn(train, test, seed: int, k: int = 10) -> dict:
    from sklearn.neighbors import NearestNeighbors

    from smartset.learn.multilabel_metrics import choose_thresholds

    (x, y), (xt, yt) = train, test
    held = _holdout(len(x), seed)
    started = time.perf_counter()
    index = NearestNeighbors(n_neighbors=k).fit(_pixels(x[~held]))
    fit_y = y[~held].astype(np.float32)

    def probs(images):
        _, rows = index.kneighbors(_pixels(images))
        return fit_y[rows].mean(1)

    thresholds = choose_thresholds(y[held], probs(x[held]))
    seconds = time.perf_counter() - started
    return {"probs": probs(xt), "thresholds": thresholds, "seconds": seconds}


ROWS = ("cnn-multilabel", "logistic-ovr", "knn")
METRICS = ("mAP", "macro_f1", "subset_accuracy", "hamming_loss", "seconds")


def clean_section(args) -> int:
    """Dropped tags found by per-class confident learning on out-of-fold probabilities."""
    from smartset.clean import find_multilabel_issues
    from smartset.learn.multilabel import cross_val_predict_multilabel
    from smartset.learn.multilabel_metrics import multilabel_report

    load_before = os.getloadavg()
    n = 300 if args.quick else args.clean_n
    epochs = 2 if args.quick else args.clean_epochs
    folds = 3 if args.quick else args.clean_folds
    rows, summary = [], {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        (x, truth), _ = make_split(args.data, n, 10, seed)
        rng = np.random.default_rng(seed + 2000)
        pairs = np.flatnonzero(truth.sum(1) == 2)
        chosen = rng.choice(pairs, int(round(0.1 * len(pairs))), replace=False)
        given = truth.copy()
        dropped = set()
        for row in chosen:
            k = int(rng.choice(np.flatnonzero(truth[row])))
            given[row, k] = 0
            dropped.add((int(row), k))
        started = time.perf_counter()
        probs, _, _ = cross_val_predict_multilabel(
            x, given, classes=[str(d) for d in range(10)], model="lenet", folds=folds,
            epochs=epochs, batch_size=32, lr=3e-3, seed=seed, progress=False)
        seconds = time.perf_counter() - started
        oof = multilabel_report(truth, probs, [str(d) for d in range(10)])["mAP"]
        print(f"seed {seed}: out-of-fold mAP against the true tags {oof:.3f}", file=sys.stderr)
        for filter_by in ("prune_by_noise_rate", "confident_joint"):
            table = find_multilabel_issues(given, probs, filter_by=filter_by).table()
            missing = {(r["row"], r["class"]) for r in table if r["kind"] == "missing"}
            hits = len(missing & dropped)
            rows.append({"seed": seed, "filter_by": filter_by, "dropped": len(dropped),
                         "flagged_missing": len(missing), "found": hits,
                         "recall": hits / len(dropped), "precision": hits / max(len(missing), 1),
                         "flagged_extra": sum(r["kind"] == "extra" for r in table),
                         "oof_seconds": round(seconds, 1), "oof_map": round(oof, 4)})
            print(f"seed {seed} {filter_by}: {hits}/{len(dropped)} dropped tags found, "
                  f"{len(missing)} flagged missing ({seconds:.0f} s)", file=sys.stderr)
    load_after = os.getloadavg()
    print(f"Cleaning: {n} MNIST-pair training images, one tag of 10% of the two-digit images "
          f"dropped; out-of-fold LeNet ({folds} folds, {epochs} epochs); load average "
          f"{load_before[0]:.1f} -> {load_after[0]:.1f}")
    print("| filter | seed | dropped | flagged missing | found | recall | precision | flagged extra |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['filter_by']} | {r['seed']} | {r['dropped']} | {r['flagged_missing']} | "
              f"{r['found']} | {r['recall']:.2f} | {r['precision']:.2f} | {r['flagged_extra']} |")
    for filter_by in ("prune_by_noise_rate", "confident_joint"):
        mine = [r for r in rows if r["filter_by"] == filter_by]
        summary[filter_by] = {m: [round(r[m], 4) for r in mine] for m in ("recall", "precision")}
    print(json.dumps({"benchmark": "multilabel-clean", "n": n, "seeds": args.seeds,
                      "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
                      "rows": rows, "summary": summary}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clean", action="store_true", help="only the cleaning section")
    parser.add_argument("--clean-n", type=int, default=800)
    parser.add_argument("--clean-folds", type=int, default=4)
    parser.add_argument("--clean-epochs", type=int, default=8)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"No MNIST archive at {args.data}: pass --data PATH (an .npz with images, "
              f"labels).", file=sys.stderr)
        return 1
    if args.quick:
        args.seeds, args.train, args.test, args.epochs = 1, 600, 300, 3
    import torch

    from smartset.learn.multilabel_metrics import multilabel_report

    torch.set_num_threads(args.threads)
    if args.clean:
        return clean_section(args)
    load_before = os.getloadavg()
    classes = [str(d) for d in range(10)]
    results = {row: {m: [] for m in METRICS} for row in ROWS}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        train, test = make_split(args.data, args.train, args.test, seed)
        for row, fn in (("cnn-multilabel", lambda: run_cnn(train, test, seed, args.epochs)),
                        ("logistic-ovr", lambda: run_logistic(train, test, seed)),
                        ("knn", lambda: run_knn(train, test, seed))):
            out = fn()
            report = multilabel_report(test[1], out["probs"], classes,
                                       thresholds=out["thresholds"])
            for m in METRICS[:-1]:
                results[row][m].append(report[m])
            results[row]["seconds"].append(out["seconds"])
            print(f"seed {seed} {row:<15} mAP {report['mAP']:.3f} macro F1 "
                  f"{report['macro_f1']:.3f} subset acc {report['subset_accuracy']:.3f} "
                  f"({out['seconds']:.1f} s)", file=sys.stderr)
    load_after = os.getloadavg()
    print(f"MNIST pairs: {args.train} training / {args.test} held-out images (28x56, 1-2 tags,"
          f" disjoint source digits), {args.seeds} seed(s), CNN {args.epochs} epochs; load "
          f"average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"| model | mAP | macro F1 | subset accuracy | hamming loss | fit s |")
    print(f"|---|---:|---:|---:|---:|---:|")
    summary = {}
    for row in ROWS:
        cells, summary[row] = [], {}
        for m in METRICS:
            values = np.asarray(results[row][m], dtype=float)
            mean, std = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None
            summary[row][m] = {"mean": round(mean, 4), "std": None if std is None else round(std, 4),
                               "runs": [round(v, 4) for v in values]}
            fmt = ".1f" if m == "seconds" else ".3f" if m != "hamming_loss" else ".4f"
            cells.append(f"{mean:{fmt}}" + ("" if std is None else f" ± {std:{fmt}}"))
        print(f"| {row} | " + " | ".join(cells) + " |")
    print(json.dumps({"benchmark": "multilabel", "train": args.train, "test": args.test,
                      "seeds": args.seeds, "epochs": args.epochs,
                      "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
                      "rows": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
