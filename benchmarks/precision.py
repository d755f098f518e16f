"""fp32 vs bf16 autocast training speed on this CPU (issue #22): LeNet and small_cnn on
MNIST digits (28 px), and EfficientNet-Lite0 fine-tuning on the photos (128 px).

Each setting trains the same seeded model in fp32 and in bf16, interleaved, ``--repeats``
times; the best wall time of each is kept (the machine is shared: the load average is
recorded beside every timing). Held-out accuracy of each precision is reported too, so a
faster precision that learns worse shows. Writes one JSON document to stdout.

    OMP_NUM_THREADS=1 python benchmarks/precision.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mnist(n_train: int, n_test: int, seed: int):
    d = np.load(DATA / "mnist10k.npz")
    order = np.random.default_rng(seed).permutation(len(d["labels"]))
    x, y = d["images"][order], d["labels"][order]
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]


def photos(n_train: int, n_test: int, size: int, seed: int):
    from smartset.learn.data import _decode

    root = DATA / "guns-smartphones" / "train"
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    order = np.random.default_rng(seed).permutation(len(paths))[:n_train + n_test]
    x = np.stack([_decode(str(paths[i]), "RGB", (size, size), "stretch") for i in order])
    y = np.array([paths[i].parent.name for i in order], dtype=object)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def run(model, data, precision, **options):
    from smartset.learn import ImageClassifier

    x, y, tx, ty = data
    estimator = ImageClassifier(model, seed=0, progress=False, precision=precision, **options)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    estimator.fit(x, y)
    seconds = time.perf_counter() - started
    return seconds, estimator.score(tx, ty), load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-lite0", action="store_true")
    args = parser.parse_args()
    import torch

    settings = [("lenet", "mnist", dict(epochs=1, batch_size=64)),
                ("small_cnn", "mnist", dict(epochs=1, batch_size=64))]
    if not args.skip_lite0:
        settings.append(("efficientnet_lite0", "photos",
                         dict(epochs=2, batch_size=16, head_epochs=1)))
    sets = {"mnist": mnist(3000, 1000, 0)}
    if not args.skip_lite0:
        sets["photos"] = photos(160, 80, 128, 0)
    rows = []
    for model, name, options in settings:
        times = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                seconds, accuracy, load = run(model, sets[name], precision, **options)
                times[precision].append({"seconds": round(seconds, 3),
                                         "accuracy": round(accuracy, 4),
                                         "load": round(load, 2)})
                print(model, precision, times[precision][-1], flush=True, file=os.sys.stderr)
        best = {p: min(t["seconds"] for t in v) for p, v in times.items()}
        rows.append({"model": model, "data": name, "n_train": len(sets[name][0]),
                     "options": options, "runs": times, "best_seconds": best,
                     "bf16_speedup": round(best["fp32"] / best["bf16"], 3)})
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
