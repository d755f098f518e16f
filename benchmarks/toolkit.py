"""The training toolkit's measured effects (issue #22): the lr finder's suggestion against
the default learning rate, and test-time augmentation against the plain score.

``mnist``: LeNet on MNIST digits (a seeded stratified draw of ``--train`` training and
``--test`` held-out digits per seed); per seed: the default lr (1e-3, cosine), the range
test's valley suggestion (cosine) and one-cycle at the suggestion; each model is scored
plain and under TTA (``shift``: 5 views; a mirror is no digit, so no flip).
``photos``: the 741 pistol/smartphone photos, a seeded stratified 80/20 split per seed;
a frozen EfficientNet-Lite0 + new head (``--size``), and optionally small_cnn from scratch
(``--scratch``), scored plain and under ``flip`` and ``flip+shift`` TTA.

Seeds 0..S-1; mean ± std over seeds; the load average is recorded with every fit (the
machine is shared). One JSON document on stdout.

    OMP_NUM_THREADS=1 python benchmarks/toolkit.py mnist --seeds 3
    OMP_NUM_THREADS=1 python benchmarks/toolkit.py photos --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _split(labels, n_train, n_test, seed):
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    train, test = train_test_split(rows, train_size=n_train, test_size=n_test,
                                   stratify=labels, random_state=seed)
    return train, test


def _score(model, images, labels, tta, n=None):
    from smartset.learn.tta import tta_proba

    probs = tta_proba(model.predict_proba, images, tta, n=n)
    predicted = np.asarray(model.classes_, dtype=object)[probs.argmax(1)]
    return float(np.mean(predicted == np.asarray(labels, dtype=object)))


def _summary(rows, key):
    values = np.array([r[key] for r in rows], dtype=float)
    return {"mean": round(float(values.mean()), 4),
            "std": round(float(values.std(ddof=1)) if len(values) > 1 else float("nan"), 4),
            "values": [round(float(v), 4) for v in values]}


def mnist(args) -> dict:
    from smartset.learn import ImageClassifier
    from smartset.learn.schedule import lr_find

    d = np.load(DATA / "mnist10k.npz")
    images, labels = d["images"], d["labels"]
    rows = []
    for seed in range(args.seeds):
        train, test = _split(labels, args.train, args.test, seed)
        x, y, tx, ty = images[train], labels[train], images[test], labels[test]
        found = lr_find(ImageClassifier("lenet", batch_size=64, seed=seed), x, y)
        record = {"seed": seed, "suggestion": {k: found[k] for k in ("lr", "steep", "minimum")}}
        for name, options in (("default", {"lr": 1e-3}),
                              ("lr_find", {"lr": found["lr"]}),
                              ("lr_find_one_cycle", {"lr": found["lr"],
                                                     "schedule": "one-cycle"})):
            load = os.getloadavg()[0]
            started = time.perf_counter()
            model = ImageClassifier("lenet", epochs=args.epochs, batch_size=64, seed=seed,
                                    progress=False, **options).fit(x, y)
            record[name] = {"seconds": round(time.perf_counter() - started, 2),
                            "load": round(load, 2), "plain": _score(model, tx, ty, None)}
            if name == "default":
                record[name]["tta_shift"] = _score(model, tx, ty, "shift")
            print(seed, name, record[name], file=sys.stderr, flush=True)
        rows.append(record)
    summary = {f"{name}.{key}": _summary([r[name] for r in rows], key)
               for name in ("default", "lr_find", "lr_find_one_cycle") for key in ("plain",)}
    summary["default.tta_shift"] = _summary([r["default"] for r in rows], "tta_shift")
    return {"data": "mnist10k", "model": "lenet", "epochs": args.epochs, "n_train": args.train,
            "n_test": args.test, "seeds": args.seeds, "summary": summary, "runs": rows}


def photos(args) -> dict:
    from smartset.learn import ImageClassifier
    from smartset.learn.data import _decode

    root = DATA / "guns-smartphones" / "train"
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    labels = np.array([p.parent.name for p in paths], dtype=object)
    images = np.stack([_decode(str(p), "RGB", (args.size, args.size), "stretch")
                       for p in paths])
    settings = [("frozen_lite0", "efficientnet_lite0",
                 dict(trainable_blocks=0, epochs=30, batch_size=32))]
    if args.scratch:
        settings.append(("small_cnn", "small_cnn", dict(epochs=args.scratch, batch_size=32)))
    rows = []
    for seed in range(args.seeds):
        n_test = int(round(0.2 * len(labels)))
        train, test = _split(labels, len(labels) - n_test, n_test, seed)
        record = {"seed": seed}
        for name, model_name, options in settings:
            load = os.getloadavg()[0]
            started = time.perf_counter()
            model = ImageClassifier(model_name, seed=seed, progress=False, **options).fit(
                images[train], labels[train])
            record[name] = {"seconds": round(time.perf_counter() - started, 2),
                            "load": round(load, 2),
                            **{view: _score(model, images[test], labels[test],
                                            None if view == "plain" else view)
                               for view in ("plain", "flip", "flip+shift")}}
            print(seed, name, record[name], file=sys.stderr, flush=True)
        rows.append(record)
    summary = {f"{name}.{view}": _summary([r[name] for r in rows], view)
               for name, _, _ in settings for view in ("plain", "flip", "flip+shift")}
    return {"data": "guns-smartphones (741)", "size": args.size, "split": "stratified 80/20",
            "seeds": args.seeds, "summary": summary, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("mnist", "photos"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scratch", type=int, default=0,
                        help="photos: also small_cnn from scratch for this many epochs")
    args = parser.parse_args()
    import torch

    result = mnist(args) if args.what == "mnist" else photos(args)
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
