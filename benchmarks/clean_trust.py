"""How far to trust a cleaning plan: the precision of the actions ``smartset clean rounds``
applies, on planted wrong labels and on real ones a person found by looking.

Three sections, each a table; the last line of stdout is one JSON object.

1. **Planted** (MNIST, ``mnist10k.npz`` shuffled with seed 0; 2,000 labeled digits, 1,000
   with ``--quick``): ``uniform10`` (10% flipped to a random other class) and ``asym`` (30%
   of the 7s -> 1, 4s -> 9, 3s -> 5, 2s -> 7). Out-of-fold probabilities and features of
   ``small_cnn`` fold models trained with ``translation-rotation`` (what ``clean rounds``
   trains; 3 epochs), or with ``--quick`` / ``--source lr`` a PCA-50 + logistic regression
   stand-in. The second view is a kNN vote on the pixels (16x16 gray, the plan's
   ``pixel_vectors``). The plan's label actions are made as ``make_plan`` makes them
   (``consensus`` + ``label_actions``) and split by ``automatic_actions``.
2. **Real photos**: the 741 pistol/smartphone photos, out-of-fold ``small_cnn`` with
   augmentation (``clean rounds``'s fold models) and EfficientNet-Lite0 embeddings, through
   ``make_plan`` itself. Truth: ``benchmarks/data/clean_trust_truth.json``, photos looked at
   one by one (long guns, machine guns, a grenade, toys filed as "pistol": not of their
   class; the right action is exclude, a relabel to "smartphone" is wrong). Needs a
   workspace with those predictions: ``--photos-ws`` (and ``--photos-run``), else one is
   made under ``benchmarks/.cache/`` (ingest, embed, ``predict --oof``: minutes; skipped
   with ``--quick`` unless it is there).
3. **Real digits**: ``mnist10k.npz`` with its own labels, out-of-fold ``small_cnn`` (as 1,
   cached), and the pixel view. Truth: the top of the ranking looked at in a montage,
   judged wrong / right / unclear (the truth file, by row of the archive); an action on a
   digit nobody looked at counts as unjudged. Skipped with ``--quick`` unless cached.

Time on one CPU core: about 7 minutes from nothing (the out-of-fold runs and the photos'
workspace are cached under ``benchmarks/.cache/``), 20 s cached; ``--quick`` under a minute.

Per section: the actions the plan proposes (what ``clean rounds`` applied before #17:
every consensus label action), those that clear the bar (``automatic_actions``), and the
bar's posterior swept, each with how many are correct (a relabel to the true class; an
exclude of a wrong label) and the precision.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA  # noqa: E402

from smartset import clean  # noqa: E402
from smartset.clean.plan import pixel_thumbnail  # noqa: E402
from smartset.clean.trust import (APPLY_POSTERIOR, MIN_NOISE_RATE, assess_trust,  # noqa: E402
                                  automatic_actions, estimated_by_class, view_evidence)

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
TRUTH = HERE / "data" / "clean_trust_truth.json"
ASYM = {7: 1, 4: 9, 3: 5, 2: 7}
SWEEP = (0.6, 0.7, 0.8, 0.9, 0.95)
BAR = (f"bar: both views, posterior >= {APPLY_POSTERIOR}, class noise >= "
       f"{MIN_NOISE_RATE:.0%}, trusted classes")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true",
                        help="1,000 digits, the logistic-regression stand-in; real sections "
                             "only from cache (< 1 min)")
    parser.add_argument("--source", choices=["cnn", "lr"], default=None,
                        help="planted section's probabilities (default cnn; lr with --quick)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--photos-ws", type=Path, default=None,
                        help="a workspace of the 741 photos with out-of-fold predictions and "
                             "cached Lite0 embeddings (default: made under .cache)")
    parser.add_argument("--photos-run", type=int, default=None,
                        help="its out-of-fold run (default: the newest)")
    args = parser.parse_args(argv)
    args.n = 1000 if args.quick else 2000
    args.source = args.source or ("lr" if args.quick else "cnn")
    return args


# -- arrays -> the plan's label actions ---------------------------------------------------------

def pixel_view(images: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.stack([pixel_thumbnail(Image.fromarray(im)) for im in images])


def plan_of(labels, probs, features, folds, view_probs, classes) -> dict:
    """The label actions and trust section ``make_plan`` would write for these arrays."""
    k = max(1, min(20, int(np.bincount(folds).min()) - 1))
    found = clean.consensus(labels, probs, features=features, groups=folds, k=k,
                            check_in_sample=False)
    amb = clean.find_ambiguous(probs, labels=labels, features=features, groups=folds, k=k)
    actions = []
    for n, (i, kind, value) in enumerate(clean.label_actions(labels, found, amb), start=1):
        j = int(found.suggested[i])
        ev = {"label": classes[labels[i]], "suggested": classes[j],
              "posterior_suggested": float(found.posterior[i, j]),
              **view_evidence(int(labels[i]), j, found.model_probs[i], view_probs[i])}
        actions.append({"id": f"a{n:04d}", "action": kind, "row": int(i),
                        "value": classes[value] if kind == "relabel" else value,
                        "detector": "consensus", "evidence": ev})
    trust = assess_trust(labels, found.model_probs, view_probs, classes=classes,
                         view={"source": "pixels", "description": "pixels (16x16 gray)"},
                         flagged=found.is_issue, suggested=found.suggested,
                         estimated_wrong=estimated_by_class(labels, found, len(classes)))
    return {"actions": actions, "trust": trust, "n_flagged": int(found.is_issue.sum())}


def correct(action: dict, truth) -> bool | None:
    """Whether an action is right, given ``truth(action) -> (given_is_wrong, true_class)``
    (None, None when nobody judged the sample)."""
    wrong, true_class = truth(action)
    if wrong is None:
        return None
    if action["action"] == "relabel":
        return bool(wrong) and true_class is not None and str(action["value"]) == str(true_class)
    return bool(wrong)  # exclude, multi_label: right when the given label is wrong


def score(actions, truth) -> dict:
    judged = [correct(a, truth) for a in actions]
    known = [j for j in judged if j is not None]
    by_kind = {}
    for a, j in zip(actions, judged):
        row = by_kind.setdefault(a["action"], [0, 0])
        row[0] += 1
        row[1] += bool(j)
    return {"n": len(actions), "judged": len(known), "correct": int(sum(known)),
            "precision": None if not known else round(sum(known) / len(known), 4),
            "by_kind": {k: {"n": v[0], "correct": v[1]} for k, v in sorted(by_kind.items())}}


def rules(plan: dict, truth, *, force: bool = False) -> dict:
    """Precision of what each rule would apply: every proposed label action (before #17),
    the bar (``automatic_actions``), and the bar's posterior swept."""
    proposed = plan["actions"]
    out = {"proposed (clean rounds before #17)": score(proposed, truth)}
    chosen, _ = automatic_actions(plan, force=force)
    out[BAR] = score(chosen, truth)
    chosen, _ = automatic_actions(plan, force=True)
    out["  the bar, forced past weak classes"] = score(chosen, truth)
    for bar in SWEEP:
        chosen, _ = automatic_actions(plan, min_apply_posterior=bar, min_noise_rate=0.0,
                                      force=True)
        out[f"  relabels, both views, posterior >= {bar}"] = score(chosen, truth)
    model_only = [a for a in proposed if a["action"] == "relabel"
                  and a["evidence"]["model_says_suggested"]]
    out["  relabels, model alone names the class"] = score(model_only, truth)
    excludes = [a for a in proposed if a["action"] == "exclude"]
    out["  excludes proposed"] = score(excludes, truth)
    both = [a for a in excludes if a["evidence"].get("model_rejects_label")
            and a["evidence"].get("view_rejects_label")]
    out["  excludes, both views reject the label"] = score(both, truth)
    return out


def table(title, rows: dict, extra: str = "") -> None:
    print(f"\n{title}{extra}")
    header = ("rule", "actions", "judged", "correct", "precision")
    body = [(name, r["n"], r["judged"], r["correct"],
             "-" if r["precision"] is None else f"{r['precision']:.3f}")
            for name, r in rows.items()]
    widths = [max(len(str(x)) for x in [h] + [b[i] for b in body]) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for b in body:
        print("  ".join(str(x).ljust(w) for x, w in zip(b, widths)))


def trust_line(trust: dict) -> str:
    parts = [f"{name} {row['agreement']:.2f}/{row['recall']:.2f}"
             + ("" if row["verdict"] == "trusted" else " WEAK")
             for name, row in trust["classes"].items()]
    return "  trust (agreement/recall): " + ", ".join(parts)


# -- out-of-fold probabilities, cached ---------------------------------------------------------

def oof(images, labels, *, source: str, seed: int, epochs: int):
    key = {"n": len(labels), "source": source, "seed": seed, "epochs": epochs,
           "augment": "translation-rotation" if source == "cnn" else None}
    digest = hashlib.sha256(labels.tobytes() + images[:50].tobytes()).hexdigest()[:12]
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"trust-oof-{name}-{digest}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["probs"], data["features"], data["folds"]
    started = time.perf_counter()
    if source == "cnn":
        from smartset.learn import cross_val_predict, fold_ids

        folds = fold_ids(labels, 5, seed)
        probs, features = cross_val_predict(images, labels, model="small_cnn", folds=5,
                                            epochs=epochs, seed=seed, return_features=True,
                                            fold=folds, augment="translation-rotation")
    else:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        flat = images.reshape(len(images), -1) / 255.0
        features = PCA(50, random_state=0).fit_transform(flat).astype(np.float32)
        splitter = StratifiedKFold(5, shuffle=True, random_state=seed)
        probs = cross_val_predict(LogisticRegression(max_iter=300), features, labels,
                                  cv=splitter, method="predict_proba")
        folds = np.zeros(len(labels), dtype=np.int64)  # one shared embedding: no groups
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, probs=np.asarray(probs, np.float32), features=features, folds=folds)
    print(f"  OOF {key} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return np.asarray(probs, np.float32), features, folds


def cached_oof(images, labels, *, source, seed, epochs):
    key = {"n": len(labels), "source": source, "seed": seed, "epochs": epochs,
           "augment": "translation-rotation" if source == "cnn" else None}
    digest = hashlib.sha256(labels.tobytes() + images[:50].tobytes()).hexdigest()[:12]
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (CACHE / f"trust-oof-{name}-{digest}.npz").exists()


def add_noise(labels, scenario, seed):
    rng = np.random.default_rng([seed, 7])
    noisy = labels.copy()
    if scenario.startswith("uniform"):
        flip = rng.random(len(labels)) < int(scenario[len("uniform"):]) / 100
        noisy[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    else:
        draw = rng.random(len(labels))
        for src, dst in ASYM.items():
            noisy[(labels == src) & (draw < 0.3)] = dst
    return noisy


# -- the sections -------------------------------------------------------------------------------

def planted(args, images, labels) -> dict:
    order = np.random.default_rng(0).permutation(len(labels))[:args.n]
    x, true = images[order], labels[order]
    view_features = pixel_view(x)
    classes = [str(c) for c in range(10)]
    results = {}
    for scenario in ("uniform10", "uniform2", "asym"):
        noisy = add_noise(true, scenario, 0)
        probs, features, folds = oof(x, noisy, source=args.source, seed=0, epochs=args.epochs)
        view = clean.knn_posterior(noisy, view_features, k=20, n_classes=10)
        plan = plan_of(noisy, probs, features, folds, view, classes)

        def truth(action, noisy=noisy):
            i = action["row"]
            return bool(noisy[i] != true[i]), str(true[i])

        rows = rules(plan, truth)
        table(f"Planted: MNIST {args.n}, {scenario} ({int((noisy != true).sum())} wrong "
              f"labels), {args.source} OOF", rows)
        print(trust_line(plan["trust"]))
        results[scenario] = {"wrong": int((noisy != true).sum()), "rules": rows,
                             "weak": plan["trust"]["weak"],
                             "agreement": {c: r["agreement"]
                                           for c, r in plan["trust"]["classes"].items()}}
    return results


def photos_workspace(args):
    import smartset

    if args.photos_ws is not None:
        return smartset.Workspace(args.photos_ws), args.photos_run
    path = CACHE / "trust-photos-ws"
    if (path / "catalog.sqlite").exists():
        ws = smartset.Workspace(path)
        if not ws.runs().query("command == 'predict --oof' and status == 'done'").empty:
            return ws, None
    if args.quick:
        return None, None
    from smartset.embeddings import embed
    from smartset.learn._workspace import predict_oof

    ws = smartset.init(path) if not (path / "catalog.sqlite").exists() else smartset.Workspace(path)
    ws.ingest(args.data / "guns-smartphones" / "train", show_progress=False)
    embed(ws, progress=False)
    predict_oof(ws, model="small_cnn", folds=5, size=64, seed=0, epochs=8,
                augment="translation-rotation", progress=False)
    return ws, None


def real_photos(args, truth_data) -> dict | None:
    ws, run = photos_workspace(args)
    if ws is None:
        print("\nReal photos: skipped (no cached workspace; run without --quick once)")
        return None
    plan = clean.make_plan(ws, run=run, progress=False)
    names = dict(zip(ws.samples()["id"], ws.samples()["relpath"]))
    strict = truth_data["photos"]["not_of_their_class"]
    unsure = truth_data["photos"]["unclear"]

    def verdict(relpath):
        base = relpath.rsplit("/", 1)[-1]
        if any(f in base for f in strict):
            return True
        if any(f in base for f in unsure):
            return None
        return False

    shows = truth_data["photos"]["what_it_shows"]

    def truth(action):
        relpath = names[action["sample_id"]]
        seen = shows.get(relpath.rsplit("/", 1)[-1])
        if seen is not None:  # looked at: what the photo shows
            return seen != relpath.split("/", 1)[0], (None if seen == "neither" else seen)
        return verdict(relpath), None  # the 741 hold no photo of the other class

    label_actions = [a for a in plan["actions"] if a["detector"] == "consensus"]
    rows = rules({"actions": label_actions, "trust": plan["trust"]}, truth)
    table(f"Real photos: 741, {sum(verdict(r) is True for r in names.values())} not of their "
          f"class (looked at), run {plan['params']['predictions_run']}", rows)
    print(trust_line(plan["trust"]))
    # where the real errors are: the 0-1 ranking vs the atypical list
    ranked = clean.ranking(ws, run=plan["run_id"])
    far = clean.atypical_list(ws, run=plan["run_id"])
    top100 = sum(verdict(r["relpath"]) is True for r in ranked[:100])
    in_far = sum(verdict(r["relpath"]) is True for r in far)
    print(f"  not of their class among the 0-1 ranking's top 100: {top100}; in the atypical "
          f"list ({len(far)}): {in_far}")
    # the plan as it was before #16 (the fold models' own features, no neighbour check):
    # relabels that were all the model's errors; what the bar lets through of them
    old = clean.make_plan(ws, run=run, features="oof", neighbours_must_agree=False,
                          progress=False)
    old_rows = rules({"actions": [a for a in old["actions"] if a["detector"] == "consensus"],
                      "trust": old["trust"]}, truth)
    table("Real photos, the plan as before #16 (the fold models' own features, no "
          "neighbour check)", old_rows)
    print(trust_line(old["trust"]))
    return {"rules": rows, "rules_without_neighbour_check": old_rows,
            "weak": plan["trust"]["weak"], "top100": top100,
            "atypical_n": len(far), "atypical_hits": in_far,
            "agreement": {c: r["agreement"] for c, r in plan["trust"]["classes"].items()}}


def real_digits(args, images, labels, truth_data) -> dict | None:
    if args.quick and not cached_oof(images, labels, source="cnn", seed=0, epochs=args.epochs):
        print("\nReal digits: skipped (no cached out-of-fold run; run without --quick once)")
        return None
    probs, features, folds = oof(images, labels, source="cnn", seed=0, epochs=args.epochs)
    view = clean.knn_posterior(labels, pixel_view(images), k=20, n_classes=10)
    plan = plan_of(labels, probs, features, folds, view, [str(c) for c in range(10)])
    judged = {int(k): v for k, v in truth_data["mnist10k"]["judged"].items()}

    def truth(action):
        row = action["row"]
        if row not in judged or judged[row] == "unclear":
            return None, None
        value = judged[row]
        return (value != "right"), (None if value in ("right", "none") else value)

    rows = rules(plan, truth)
    n_wrong = sum(v not in ("right", "unclear") for v in judged.values())
    table(f"Real digits: mnist10k, {len(judged)} top-ranked looked at, {n_wrong} judged "
          f"wrong", rows)
    print(trust_line(plan["trust"]))
    return {"rules": rows, "weak": plan["trust"]["weak"], "judged": len(judged),
            "judged_wrong": n_wrong}


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    with np.load(args.data / "mnist10k.npz") as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    truth_data = json.loads(TRUTH.read_text())
    out = {"planted": planted(args, images, labels)}
    out["photos"] = real_photos(args, truth_data)
    out["digits"] = real_digits(args, images, labels, truth_data)
    bar = BAR
    summary = {"seconds": round(time.perf_counter() - started, 1)}
    for section, found in (("planted_uniform10", out["planted"]["uniform10"]),
                           ("planted_uniform2", out["planted"]["uniform2"]),
                           ("planted_asym", out["planted"]["asym"]),
                           ("photos", out["photos"]), ("digits", out["digits"])):
        if found:
            before = found["rules"]["proposed (clean rounds before #17)"]
            after = found["rules"][bar]
            summary[section] = {"before_n": before["n"], "before_precision": before["precision"],
                                "bar_n": after["n"], "bar_precision": after["precision"],
                                "weak": found["weak"]}
    if out["photos"]:
        before = out["photos"]["rules_without_neighbour_check"]
        summary["photos_before_16"] = {
            "before_n": before["proposed (clean rounds before #17)"]["n"],
            "before_precision": before["proposed (clean rounds before #17)"]["precision"],
            "bar_n": before[bar]["n"], "bar_precision": before[bar]["precision"]}
    print(f"\n{summary['seconds']} s")
    print(json.dumps({**summary, "detail": out}))


if __name__ == "__main__":
    main()
