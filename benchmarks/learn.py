"""Learn and evaluate: baselines, CNNs from scratch, ensembles, the augmentation study,
transfer learning, photos with augmentation and DaCoLT, and out-of-fold predictions.

Sections (all on this machine's CPU; ``--quick`` runs a small slice of section 1 only):

1. MNIST (``mnist10k.npz``: 8,000 train / 2,000 held out, a seeded stratified split):
   scikit-learn's dummy classifiers, kNN on pixels and on the pixel embeddings, a linear
   probe; smartset's LeNet-like and Network3-like networks from scratch; ensembles of
   three: LeNets that differ by seed only, and LeNet + Network3 + LeNet trained with online
   rotation (``ensemble3_acc``), each against its best member.
2. The augmentation study (``smartset.learn.study_augment``): 1,000 training digits, the
   same 2,000 held out, every named combination, R runs each.
3. Transfer: a LeNet pretrained on digits 0-4, then digits 5-9 with 100 labelled images per
   class: frozen convolutional backbone, fine-tuned (the new head alone for 5 epochs, then
   every layer; also with the backbone at 0.1x the rate), and from scratch, on the same 500
   images, evaluated on held-out digits 5-9.
4. Photos (``guns-smartphones/train``, 741 photos at 64x64 RGB): 5-fold cross-validated
   accuracy of a small CNN from scratch with and without augmentation; then the
   knife-study robustness table for class ``pistol`` under darker and brighter test shifts,
   with the three DaCoLT settings (none, test-time preprocessing only, learning + test).
5. Out-of-fold probabilities (``smartset.learn.predict_oof``) stored in a workspace for all
   10,000 digits and all 741 photos.

The last line of stdout is one line of JSON with the headline numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA, locate  # noqa: E402

import smartset  # noqa: E402
from smartset.learn import (ImageClassifier, classification_baselines, condition_table,  # noqa: E402
                            cross_val_predict, dacolt_preprocess, shift_images, study_augment)

LENET = dict(epochs=15, batch_size=32, lr=1e-3, weight_decay=5e-4)
PHOTO_MODEL = "small_cnn"  # at 64x64 it keeps this section to minutes on 2 CPU cores


def _split(labels, n_test, seed=0):
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        test.append(rng.choice(rows, int(round(n_test * len(rows) / len(labels))), replace=False))
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _print_table(title, rows, columns):
    print(f"\n{title}")
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def mnist_section(images, labels, *, quick: bool) -> dict:
    if quick:
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:250] for c in range(10)]))
        images, labels = images[keep], labels[keep]
    train, test = _split(labels, len(labels) // 5)
    rows = []
    for result in classification_baselines(images[train], labels[train], images[test]):
        rows.append({"model": result["name"], "accuracy": float(np.mean(result["predicted"] == labels[test])),
                     "seconds": result["seconds"]})
    options = dict(LENET, epochs=4 if quick else LENET["epochs"])
    members = []
    for seed in range(3):
        started = time.perf_counter()
        model = ImageClassifier("lenet", seed=seed, progress=False, **options).fit(
            images[train], labels[train])
        members.append(model)
        rows.append({"model": f"lenet (seed {seed})", "accuracy": model.score(images[test], labels[test]),
                     "seconds": time.perf_counter() - started, "epochs": options["epochs"]})
    if not quick:
        started = time.perf_counter()
        net3 = ImageClassifier("network3", seed=0, progress=False, **LENET).fit(images[train], labels[train])
        rows.append({"model": "network3", "accuracy": net3.score(images[test], labels[test]),
                     "seconds": time.perf_counter() - started, "epochs": LENET["epochs"]})
    def ensemble_of(models):
        probs = np.mean([m.predict_proba(images[test]) for m in models], axis=0)
        return float(np.mean(np.asarray(models[0].classes_)[probs.argmax(1)] == labels[test]))

    same = ensemble_of(members)
    rows.append({"model": "ensemble-3 (lenet seeds 0-2)", "accuracy": same})
    diverse = None
    if not quick:
        # Diversity is what an ensemble feeds on: three LeNets that differ by seed alone
        # make the same mistakes. The source study's ensembles mixed training setups.
        started = time.perf_counter()
        rotated = ImageClassifier("lenet", seed=3, progress=False, augment="rotation",
                                  **LENET).fit(images[train], labels[train])
        rows.append({"model": "lenet + rotation (online)", "accuracy": rotated.score(
            images[test], labels[test]), "seconds": time.perf_counter() - started,
            "epochs": LENET["epochs"]})
        diverse = ensemble_of([members[0], net3, rotated])
        rows.append({"model": "ensemble-3 (lenet, network3, lenet + rotation)", "accuracy": diverse})
    _print_table(f"1. MNIST: {len(train)} train / {len(test)} held out", rows,
                 ["model", "accuracy", "epochs", "seconds"])
    lenets = [r for r in rows if r["model"].startswith("lenet (seed")]
    by_name = {r["model"]: r for r in rows}
    if diverse is not None:
        members_acc = [by_name[n]["accuracy"] for n in ("lenet (seed 0)", "network3",
                                                         "lenet + rotation (online)")]
    else:
        members_acc = [r["accuracy"] for r in lenets]
    ensemble = diverse if diverse is not None else same
    return {"dummy_acc": by_name["most_frequent"]["accuracy"],
            "knn_pixels_acc": by_name["knn_pixels (k=3)"]["accuracy"],
            "knn_embeddings_acc": by_name["knn_embeddings (k=3)"]["accuracy"],
            "linear_probe_acc": by_name["linear_probe"]["accuracy"],
            "lenet_acc": lenets[0]["accuracy"],
            "lenet_best_acc": max(r["accuracy"] for r in lenets),
            "network3_acc": by_name.get("network3", {}).get("accuracy"),
            "ensemble3_acc": ensemble, "ensemble3_same_setup_acc": same,
            "ensemble3_ge_best_member": ensemble >= max(members_acc),
            "train_seconds": lenets[0]["seconds"], "n_train": int(len(train)),
            "n_test": int(len(test))}


def study_section(images, labels, *, runs: int) -> dict:
    train, test = _split(labels, 2000)
    rng = np.random.default_rng(0)
    small = np.sort(np.concatenate([rng.choice(train[labels[train] == c], 100, replace=False)
                                    for c in range(10)]))
    result = study_augment(images[small], labels[small], images[test], labels[test], runs=runs,
                           model="lenet", epochs=10, batch_size=32, weight_decay=5e-4,
                           progress=False)
    print("\n2. The augmentation study (1,000 training digits, 2,000 held out, "
          f"{runs} runs each, LeNet, 10 epochs, online augmentation)")
    print(result["markdown"])
    table = result["table"]
    better = table[(table["combination"] != "original") & (table["vs_original"] > 0)]
    return {"study": {row.combination: {"average": row.average, "best": row.best,
                                        "spread": row.spread, "vs_original": row.vs_original}
                      for row in table.itertuples()},
            "study_beat_original": better["combination"].tolist(),
            "study_ensembles": {e["ensemble"]: e["accuracy"] for e in result["ensembles"]}}


def transfer_section(images, labels) -> dict:
    low, high = labels < 5, labels >= 5
    rng = np.random.default_rng(1)
    high_rows = np.flatnonzero(high)
    labelled = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), 100, replace=False)
                                       for c in range(5, 10)]))
    held = np.setdiff1d(high_rows, labelled)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "digits0-4.pt"
        pre = ImageClassifier("lenet", seed=0, progress=False, checkpoint=checkpoint, **LENET)
        pre.fit(images[low], labels[low])
        settings = {
            "from scratch": dict(model="lenet"),
            "frozen backbone (convolutions)": dict(init_from=checkpoint, trainable_blocks=2),
            "fine-tuned (head 5 epochs, then all layers)": dict(
                init_from=checkpoint, head_epochs=5),
            "fine-tuned, backbone at 0.1x the rate": dict(
                init_from=checkpoint, head_epochs=5, backbone_lr_scale=0.1),
        }
        rows = []
        for name, extra in settings.items():
            model = ImageClassifier(seed=0, progress=False, epochs=30, batch_size=32,
                                    weight_decay=5e-4, **extra)
            model.fit(images[labelled], labels[labelled])
            rows.append({"setting": name, "accuracy": model.score(images[held], labels[held])})
    _print_table(f"3. Transfer: pretrained on digits 0-4 ({int(low.sum())} images, training "
                 f"accuracy {pre.score(images[low], labels[low]):.4f}); "
                 f"500 labelled digits 5-9; {len(held)} held out", rows, ["setting", "accuracy"])
    acc = {r["setting"]: r["accuracy"] for r in rows}
    return {"transfer_scratch_acc": acc["from scratch"],
            "transfer_frozen_acc": acc["frozen backbone (convolutions)"],
            "transfer_finetuned_acc": acc["fine-tuned (head 5 epochs, then all layers)"],
            "transfer_finetuned_lowlr_acc": acc["fine-tuned, backbone at 0.1x the rate"]}


def _photo_policy():
    from smartset.augment import Brightness, Compose, HorizontalFlip, Rotation, Scale

    return Compose([HorizontalFlip(p=0.5), Rotation(degrees=15, p=0.7), Scale(factor=(0.85, 1.15), p=0.5),
                    Brightness(factor=0.25, p=0.5)], name="photo")


def photos_section(photos_dir: Path, work: Path) -> tuple[dict, object]:
    ws = smartset.init(work / "photos-ws")
    ws.ingest(photos_dir, show_progress=False)
    from smartset.learn import load_version

    data = load_version(ws, size=64, mode="RGB", progress=False)
    images, labels = data.images, data.labels
    rows, out = [], {}
    for name, policy in (("no augmentation", None), ("augmentation", _photo_policy())):
        started = time.perf_counter()
        probs = cross_val_predict(images, labels, model=PHOTO_MODEL, folds=5, epochs=20,
                                  batch_size=32, augment=policy, progress=False)
        classes = sorted(set(labels.tolist()))
        accuracy = float(np.mean(np.asarray(classes, dtype=object)[probs.argmax(1)] == labels))
        rows.append({"setting": name, "cv_accuracy": accuracy,
                     "seconds": time.perf_counter() - started})
        out[f"photos_cv_acc_{'aug' if policy else 'plain'}"] = accuracy
    _print_table(f"4a. Photos: 5-fold cross-validated accuracy, {PHOTO_MODEL} from scratch, "
                 f"{len(labels)} photos at 64x64", rows, ["setting", "cv_accuracy", "seconds"])

    train, test = _split(labels, len(labels) // 4, seed=0)
    plain = ImageClassifier(PHOTO_MODEL, epochs=20, batch_size=32, seed=0, progress=False,
                            augment=_photo_policy()).fit(images[train], labels[train])
    lit = np.concatenate([images[train], shift_images(images[train], "darker", 0.7),
                          shift_images(images[train], "brighter", 0.7)])
    learned = ImageClassifier(PHOTO_MODEL, epochs=20, batch_size=32, seed=0, progress=False,
                              augment=_photo_policy()).fit(
        dacolt_preprocess(lit), np.concatenate([labels[train]] * 3))
    tables = {}
    for setting, model, prepare in (("none", plain, lambda x: x),
                                    ("test-time only", plain, dacolt_preprocess),
                                    ("learning + test", learned, dacolt_preprocess)):
        conditions = {}
        for condition in ("original", "darker", "brighter"):
            shifted = images[test] if condition == "original" else shift_images(images[test], condition)
            conditions[condition] = (labels[test], model.predict(prepare(shifted)))
        tables[setting] = condition_table(conditions, positive="pistol")
    print("\n4b. Robustness of class 'pistol' (knife-study format), "
          f"{len(train)} train / {len(test)} test photos")
    for setting, table in tables.items():
        _print_table(f"DaCoLT setting: {setting}", table,
                     ["condition", "n", "positives", "TP", "FP", "precision", "recall", "f1"])
    for setting, table in tables.items():
        key = setting.replace(" + ", "_").replace(" ", "_").replace("-", "_")
        for row in table:
            out[f"dacolt_{key}_{row['condition']}_recall"] = row["recall"]
            out[f"dacolt_{key}_{row['condition']}_f1"] = row["f1"]
    return out, ws


def oof_section(npz: Path, photos_dir: Path, photos_ws, work: Path) -> dict:
    from smartset.learn import predict_oof

    if photos_ws is None:
        photos_ws = smartset.init(work / "photos-ws")
        photos_ws.ingest(photos_dir, show_progress=False)
    rows, out = [], {}
    digits = smartset.init(work / "digits-ws")
    digits.ingest(npz, show_progress=False)
    for name, ws, options in (("mnist10k", digits, dict(epochs=5)),
                              ("photos", photos_ws, dict(epochs=15, size=64, mode="RGB",
                                                         model=PHOTO_MODEL, batch_size=32))):
        started = time.perf_counter()
        result = predict_oof(ws, folds=5, progress=False, **options)
        stored = ws.predictions()
        rows.append({"data set": name, "samples": len(stored), "oof_accuracy": result["oof"]["accuracy"],
                     "seconds": time.perf_counter() - started})
        out[f"oof_{name}_n"] = len(stored)
        out[f"oof_{name}_acc"] = result["oof"]["accuracy"]
    _print_table("5. Out-of-fold probabilities stored in the catalog (5 folds)", rows,
                 ["data set", "samples", "oof_accuracy", "seconds"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="section 1 on 2,500 digits (< 1 min)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=3, help="runs per study combination")
    parser.add_argument("--sections", default="1,2,3,4,5", help="which sections to run (full mode)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 is faster on a busy machine)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sections = {int(x) for x in args.sections.split(",")}
    photos_dir, npz = locate(args.data, "learn.py")
    with np.load(npz) as data:
        images, labels = data["images"], data["labels"]
    started = time.perf_counter()
    figures = {}
    if args.quick or 1 in sections:
        figures |= mnist_section(images, labels, quick=args.quick)
    if not args.quick:
        if 2 in sections:
            figures |= study_section(images, labels, runs=args.runs)
        if 3 in sections:
            figures |= transfer_section(images, labels)
        with tempfile.TemporaryDirectory() as tmp:
            photos_ws = None
            if 4 in sections:
                photo_figures, photos_ws = photos_section(photos_dir, Path(tmp))
                figures |= photo_figures
            if 5 in sections:
                figures |= oof_section(npz, photos_dir, photos_ws, Path(tmp))
    figures["wall_seconds"] = time.perf_counter() - started
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
