"""Multi-label cleaning end to end on MNIST pairs: ``smartset clean --multi-label`` over a
workspace, scored against tags dropped and added on purpose.

The set is ``benchmarks/multilabel.py``'s (two MNIST digits side by side on a 28x56 canvas,
80% of the images two distinct digits, 20% one; every source digit used once; seeded):
``--n`` (800) images written as PNGs with a tags table, ingested into a new workspace
(``--tags-column``). Before ingest, one of the two tags of ``--drop`` (8%) of the two-digit
images is dropped (a missing tag) and a digit the image does not show is added to
``--add`` (8%) of the other images (an extra tag). Then, as the CLI does,
:func:`smartset.clean.make_tag_plan` (LeNet per fold, ``--folds`` 4, ``--epochs`` 8,
batch 32, Adam ``--lr`` 1e-3 as the CLI; per-class confident learning, ``prune_by_noise_rate``) writes the plan,
and the whole plan is applied (:func:`smartset.clean.apply_plan`) and undone.

Reported per seed and as mean +- std over the seeds: the out-of-fold mAP against the given
tags; for missing and extra tags, the planted cells, the flagged cells, the planted ones
among them (recall, precision) and precision among the ``k`` most confident items (``k`` =
the number planted); the wrong cells (given tags against the truth) before, after
applying the whole plan, and after applying only the ``k`` most confident items of each
kind; that undo restored the tags; seconds (the load average is
recorded: timings on a shared machine are inflated). ``--quick``: 300 images, 2 folds,
3 epochs, 1 seed. The last line of stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multilabel import DEFAULT_DATA, make_split  # noqa: E402  (the set, built once)


def build(root: Path, data: Path, n: int, seed: int, drop: float, add: float):
    """Write the images and the tags table; returns ``(truth, given)`` as dicts of
    relpath -> set of tags."""
    (images, tags), _ = make_split(data, n, 10, seed)
    rng = np.random.default_rng(seed + 3000)
    (root / "img").mkdir(parents=True)
    truth, given = {}, {}
    for i in range(n):
        rel = f"img/{i:04d}.png"
        Image.fromarray(images[i]).save(root / rel)
        truth[rel] = {str(d) for d in np.flatnonzero(tags[i])}
        given[rel] = set(truth[rel])
    rels = sorted(truth)
    pairs = [r for r in rels if len(truth[r]) == 2]
    dropped = rng.choice(len(pairs), int(round(drop * len(pairs))), replace=False)
    for j in dropped:
        rel = pairs[j]
        given[rel].discard(sorted(truth[rel])[int(rng.integers(2))])
    rest = [r for r in rels if given[r] == truth[r]]
    for j in rng.choice(len(rest), int(round(add * len(rels))), replace=False):
        rel = rest[j]
        given[rel].add(str(rng.choice([d for d in range(10) if str(d) not in truth[rel]])))
    (root / "tags.csv").write_text("path,tags\n" + "".join(
        f"{r},{'|'.join(sorted(given[r]))}\n" for r in rels))
    return truth, given


def wrong_cells(truth: dict, tags: dict) -> int:
    return sum(len(truth[r] ^ tags[r]) for r in truth)


def one_seed(args, seed: int, workdir: Path) -> dict:
    import smartset
    from smartset.clean import apply_plan, make_tag_plan, undo_apply

    # the images inside the workspace: sample ids (and so the folds) do not depend on
    # where the temporary folder is, so a seed gives the same result every time
    ws = smartset.init(workdir / f"seed{seed}")
    root = ws.path / "data"
    truth, given = build(root, args.data, args.n, seed, args.drop, args.add)
    missing = {(r, t) for r in truth for t in truth[r] - given[r]}
    extra = {(r, t) for r in truth for t in given[r] - truth[r]}
    ws.ingest(root / "tags.csv", tags_column="tags", tag_sep="|", show_progress=False)
    started = time.perf_counter()
    plan = make_tag_plan(ws, folds=args.folds, epochs=args.epochs, batch_size=32, lr=args.lr,
                         seed=seed, progress=False)
    seconds = time.perf_counter() - started
    files = dict(zip(ws.samples()["id"], ws.samples()["relpath"]))
    row = {"seed": seed, "n": args.n, "oof_map": round(plan["params"]["oof_map"], 4),
           "seconds": round(seconds, 1)}
    for kind, action, planted in (("missing", "add_tag", missing), ("extra", "remove_tag", extra)):
        flagged = [(files[a["sample_id"]], a["value"]) for a in plan["actions"]
                   if a["action"] == action]
        hits = len(set(flagged) & planted)
        top = set(flagged[:len(planted)])
        row[kind] = {"planted": len(planted), "flagged": len(flagged), "found": hits,
                     "recall": round(hits / max(len(planted), 1), 4),
                     "precision": round(hits / max(len(flagged), 1), 4),
                     "precision_at_k": round(len(top & planted) / max(len(planted), 1), 4)}
    by_rel = lambda tags: {files[s]: set(t) for s, t in tags.items()}  # noqa: E731
    before = by_rel(ws.tags())
    row["wrong_before"] = wrong_cells(truth, before)
    applied = apply_plan(ws, plan["path"], author="benchmark")
    row["wrong_after_apply"] = wrong_cells(truth, by_rel(ws.tags()))
    undo_apply(ws, applied["run_id"], author="benchmark")
    row["undo_restored"] = by_rel(ws.tags()) == before
    # a person's shortcut: only the k most confident items of each kind (k = planted)
    top_ids = [a["id"] for action, planted in (("add_tag", missing), ("remove_tag", extra))
               for a in [a for a in plan["actions"] if a["action"] == action][:len(planted)]]
    applied = apply_plan(ws, plan["path"], only=top_ids, author="benchmark")
    row["wrong_after_top_k"] = wrong_cells(truth, by_rel(ws.tags()))
    undo_apply(ws, applied["run_id"], author="benchmark")
    ws.close()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--drop", type=float, default=0.08)
    parser.add_argument("--add", type=float, default=0.08)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's rate (the CLI's 1e-3)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.seeds, args.folds, args.epochs = 300, 1, 2, 3
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smartset-mlclean-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(one_seed(args, seed, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"smartset clean --multi-label on {args.n} MNIST pairs: one tag dropped from "
          f"{args.drop:.0%} of the two-digit images, a wrong digit added to {args.add:.0%} of "
          f"the images; LeNet out of fold ({args.folds} folds, {args.epochs} epochs, lr "
          f"{args.lr:g}); load "
          f"average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print("| seed | oof mAP | kind | planted | flagged | found | recall | precision | "
          "precision@k | wrong cells before -> after apply (all / top k) | s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        for kind in ("missing", "extra"):
            k = r[kind]
            print(f"| {r['seed']} | {r['oof_map']:.3f} | {kind} | {k['planted']} | "
                  f"{k['flagged']} | {k['found']} | {k['recall']:.2f} | {k['precision']:.2f} | "
                  f"{k['precision_at_k']:.2f} | {r['wrong_before']} -> "
                  f"{r['wrong_after_apply']} / {r['wrong_after_top_k']} | {r['seconds']:.0f} |")
    summary = {}
    for kind in ("missing", "extra"):
        for metric in ("recall", "precision", "precision_at_k"):
            values = np.array([r[kind][metric] for r in rows])
            summary[f"{kind}_{metric}"] = [round(float(values.mean()), 4),
                                           round(float(values.std()), 4)]
    for kind in ("missing", "extra"):
        print(f"{kind}: recall {summary[kind + '_recall'][0]:.2f} ± "
              f"{summary[kind + '_recall'][1]:.2f}, precision "
              f"{summary[kind + '_precision'][0]:.2f} ± {summary[kind + '_precision'][1]:.2f}, "
              f"precision@k {summary[kind + '_precision_at_k'][0]:.2f} ± "
              f"{summary[kind + '_precision_at_k'][1]:.2f}")
    print(json.dumps({"benchmark": "multilabel-clean-workspace", "n": args.n, "lr": args.lr,
                      "seeds": args.seeds, "folds": args.folds, "epochs": args.epochs,
                      "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
                      "rows": rows, "summary": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
