"""The backbone's input size for the audit: what a smaller side costs in quality, and saves.

For each side (``--sizes``, default 224, 160, 128, 112), on the photos:

1. **Near duplicates** with the protocol of ``audit.py --near-duplicates-only``: every
   usable photo plus 100 copies with all four edits (a 95% window at a random position,
   x0.8, +10% brightness, JPEG q40), seeds ``--seeds`` (0, 1, 2); recall and precision of
   the (original, copy) pairs. One workspace per seed: properties measured once, the
   backbone run once per side (its cache keeps sides apart).
2. **Agreement with 224 px** on the 741 photos as they are: the images flagged
   ``outlier`` and ``class_outlier`` at each side against those at 224 (Jaccard, and how
   many of 224's are kept), and the mean cosine of each image's nearest-neighbour set
   (the overlap of its 5 nearest at this side and at 224).
3. **Speed**: the backbone pass alone (decode at reduced JPEG scale + network), CPU
   seconds per image and wall, on the 741 photos, from a cold embeddings cache; and the
   whole fresh audit's wall and CPU seconds.

Every audit runs on the serial engine in this process. CPU seconds and the load average
are printed beside each time: on a shared machine wall time is not the audit's alone.
``--json`` prints one JSON document at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _audit_corpus as corpus  # noqa: E402
from _data import DEFAULT_DATA, locate  # noqa: E402

import smartset  # noqa: E402


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="224,160,128,112",
                        help="input sides to compare, 224 first (the reference)")
    parser.add_argument("--seeds", default="0,1,2", help="near-duplicate corpus seeds")
    parser.add_argument("--parts", default="neardup,agreement,speed")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def sets_of(result, paths: dict, kind: str) -> list[list[str]]:
    found = result.findings[result.findings["kind"] == kind]
    return [sorted(paths[i] for i in members["sample_id"]) for _, members in found.groupby("group")]


def score(sets: list[list[str]], truth: set[frozenset]) -> dict:
    import itertools

    predicted = {frozenset(p) for members in sets for p in itertools.combinations(members, 2)}
    hits = predicted & truth
    return {"recall": len(hits) / len(truth) if truth else None,
            "precision": len(hits) / len(predicted) if predicted else None,
            "tp": len(hits), "fp": len(predicted) - len(hits), "pairs": len(truth)}


def neardup(photos: Path, sizes: list[int], seeds: list[int], scratch: Path) -> list[dict]:
    from smartset.audit import audit

    rows = []
    for seed in seeds:
        root = scratch / f"corpus-{seed}"
        truth = corpus.build_near_duplicate_corpus(photos, root, seed=seed, n_near=100)
        near, _ = corpus.truth_pairs(truth)
        near = {frozenset(os.path.realpath(root / p) for p in pair) for pair in near}
        with smartset.init(scratch / f"ws-{seed}") as ws:
            ws.ingest(root, show_progress=False, engine="serial")
            samples = ws.samples()
            paths = {s: os.path.realpath(p) for s, p in zip(samples["id"], samples["path"])}
            for size in sizes:
                load = os.getloadavg()[0]
                started, cpu = time.perf_counter(), cpu_seconds()
                result = audit(ws, show_progress=False, report=False, engine="serial",
                               backbone_size=size)
                row = {"seed": seed, "size": size, "images": len(truth),
                       "audit_s": time.perf_counter() - started, "audit_cpu_s": cpu_seconds() - cpu,
                       "load": round(load, 2),
                       "recorded_size": result.summary["features"].get("backbone_size"),
                       **score(sets_of(result, paths, "near_duplicate"), near)}
                rows.append(row)
                print(f"  neardup seed {seed} size {size}: recall {row['recall']:.3f} precision "
                      f"{row['precision']:.3f} (tp {row['tp']}, fp {row['fp']}); audit "
                      f"{row['audit_s']:.1f} s, {row['audit_cpu_s']:.1f} CPU-s, load {load:.2f}",
                      flush=True)
    return rows


def agreement(photos: Path, sizes: list[int], scratch: Path) -> list[dict]:
    from smartset.audit import audit
    from smartset.embeddings import embed
    from smartset.neighbours import search_neighbours

    rows, reference = [], None
    with smartset.init(scratch / "ws-agreement") as ws:
        ws.ingest(photos, show_progress=False, engine="serial")
        for size in sizes:
            result = audit(ws, show_progress=False, report=False, engine="serial",
                           backbone_size=size)
            flagged = {kind: set(result.findings.loc[result.findings["kind"] == kind,
                                                     "sample_id"])
                       for kind in ("outlier", "class_outlier", "near_duplicate")}
            vectors = embed(ws, size=size, progress=False)
            order = np.argsort(vectors.ids.astype(str))
            table = search_neighbours(vectors.vectors[order], 5).table
            neighbours = np.concatenate([indices for _, _, indices, _ in table.blocks()])
            if reference is None:
                reference = (flagged, neighbours)
            row = {"size": size}
            for kind, found in flagged.items():
                ref = reference[0][kind]
                union = found | ref
                row[kind] = len(found)
                row[f"{kind}_jaccard"] = len(found & ref) / len(union) if union else 1.0
                row[f"{kind}_kept"] = len(found & ref)
            same = [len(set(a) & set(b)) / 5 for a, b in zip(neighbours, reference[1])]
            row["knn5_overlap"] = float(np.mean(same))
            rows.append(row)
            print(f"  agreement size {size}: outliers {row['outlier']} (Jaccard "
                  f"{row['outlier_jaccard']:.2f}), far from class {row['class_outlier']} "
                  f"(Jaccard {row['class_outlier_jaccard']:.2f}), 5-NN overlap "
                  f"{row['knn5_overlap']:.2f}", flush=True)
    return rows


def speed(photos: Path, sizes: list[int]) -> list[dict]:
    import torch

    from smartset.embeddings import embed_paths

    paths = [str(p) for p in corpus.list_images(photos)]
    embed_paths(paths[:32], size=sizes[0], progress=False)  # load the network once
    rows = []
    for size in sizes:
        load = os.getloadavg()[0]
        started, cpu = time.perf_counter(), cpu_seconds()
        embed_paths(paths, size=size, progress=False)
        wall, used = time.perf_counter() - started, cpu_seconds() - cpu
        rows.append({"size": size, "images": len(paths), "wall_s": wall, "cpu_s": used,
                     "cpu_ms_per_image": 1000 * used / len(paths), "load": round(load, 2),
                     "torch_threads": torch.get_num_threads()})
        print(f"  backbone pass at {size}: {wall:.1f} s wall, {used:.1f} CPU-s "
              f"({1000 * used / len(paths):.1f} CPU-ms/image), load {load:.2f}", flush=True)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    photos, _ = locate(args.data, "benchmarks/audit_size.py")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = set(args.parts.split(","))
    out: dict = {"sizes": sizes, "seeds": seeds, "load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="smartset-audit-size-") as tmp:
        if "speed" in parts:
            out["speed"] = speed(photos, sizes)
        if "agreement" in parts:
            out["agreement"] = agreement(photos, sizes, Path(tmp))
        if "neardup" in parts:
            out["neardup"] = neardup(photos, sizes, seeds, Path(tmp))
    out["load_end"] = os.getloadavg()[0]
    if "neardup" in out:
        print("\nnear duplicates, mean (min-max) over seeds " + ",".join(map(str, seeds)) + ":")
        for size in sizes:
            group = [r for r in out["neardup"] if r["size"] == size]
            rec = [r["recall"] for r in group]
            pre = [r["precision"] for r in group]
            print(f"  {size:>4} px: recall {np.mean(rec):.3f} ({min(rec):.3f}-{max(rec):.3f}), "
                  f"precision {np.mean(pre):.3f} ({min(pre):.3f}-{max(pre):.3f})")
    print(f"load average {out['load_start']:.2f} -> {out['load_end']:.2f}")
    if args.json:
        print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
