"""Class imbalance: a report, and three remedies to choose from.

- class weights for the loss (:func:`class_weights`, ``balanced`` as scikit-learn's, or
  ``sqrt``, the gentler inverse square root);
- oversampling the minority classes with augmented copies through the augmentation engine
  (:func:`oversample`, a new version; nothing is overwritten);
- undersampling the majority classes with the kNN cleaning rules (:func:`undersample`
  flags majority samples that ENN / RENN / All-kNN would remove: those inside the
  minority's region; random undersampling is offered for comparison). Flags, never deletes.
"""

from __future__ import annotations

import contextlib

import math
import time

import numpy as np

from smartset._random import resolve_rng
from smartset.clean._validation import CleanInputError, check_labels
from smartset.clean.knn_filters import (all_knn, edited_nearest_neighbours,
                                        repeated_edited_nearest_neighbours)

__all__ = ["imbalance_report", "class_weights", "oversampling_copies", "oversampling_counts",
           "per_sample_copies", "undersample", "oversample", "UNDERSAMPLING_RULES",
           "workspace_imbalance"]

UNDERSAMPLING_RULES = ("enn", "renn", "all_knn", "random")


def class_weights(labels: np.ndarray, *, n_classes: int | None = None,
                  method: str = "balanced") -> np.ndarray:
    """``(k,)`` loss weights: ``balanced`` ``n / (k * count)``, or ``sqrt``
    ``sqrt(max count / count)``. Classes without samples get 0."""
    labels = check_labels(labels, n_classes)
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    present = counts > 0
    out = np.zeros(k)
    if method == "balanced":
        out[present] = len(labels) / (present.sum() * counts[present])
    elif method == "sqrt":
        out[present] = np.sqrt(counts.max() / counts[present])
    else:
        raise CleanInputError(f"Unknown class weight method {method!r}; methods: balanced, sqrt.")
    return out


def _goal(counts: np.ndarray, target) -> int:
    present = counts[counts > 0]
    if target == "max":
        goal = int(present.max())
    elif target == "median":
        goal = int(np.median(present))
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool) and target > 0:
        goal = int(target)
    else:
        raise CleanInputError(f"target must be 'max', 'median' or a positive count, got {target!r}.")
    return goal


def oversampling_counts(labels: np.ndarray, *, target: str | int = "max",
                        n_classes: int | None = None) -> np.ndarray:
    """``(k,)`` augmented copies to add to each class so it reaches ``target`` exactly
    (``max``: the largest class; ``median``; or a count); classes at or above it get 0."""
    labels = check_labels(labels, n_classes)
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    counts = np.bincount(labels, minlength=k)
    goal = _goal(counts, target)
    return np.where(counts > 0, np.maximum(goal - counts, 0), 0).astype(np.int64)


def oversampling_copies(labels: np.ndarray, *, target: str | int = "max",
                        n_classes: int | None = None) -> np.ndarray:
    """``(k,)`` the *whole* number of augmented copies every sample of a class gets on the
    way to ``target`` (:func:`per_sample_copies` gives the remainder to some samples, so
    the class reaches the target exactly)."""
    labels = check_labels(labels, n_classes)
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    counts = np.bincount(labels, minlength=k)
    add = oversampling_counts(labels, target=target, n_classes=k)
    return np.where(counts > 0, add // np.maximum(counts, 1), 0).astype(np.int64)


def per_sample_copies(labels: np.ndarray, *, target: str | int = "max",
                      n_classes: int | None = None, seed=None) -> np.ndarray:
    """``(n,)`` copies to make of each sample so every class reaches ``target`` exactly:
    each sample of a class gets ``add // count``, and ``add % count`` of them, drawn with
    ``seed``, one more. (Rounding copies per class instead overshoots some classes and
    leaves others untouched: 1.72 -> 1 copy each doubles a class past the largest.)"""
    labels = check_labels(labels, n_classes)
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    add = oversampling_counts(labels, target=target, n_classes=k)
    rng = resolve_rng(seed)
    out = np.zeros(len(labels), dtype=np.int64)
    for c in np.flatnonzero(add > 0):
        members = np.flatnonzero(labels == c)
        whole, extra = divmod(int(add[c]), len(members))
        out[members] = whole
        if extra:
            out[rng.choice(members, extra, replace=False)] += 1
    return out


def undersample(labels: np.ndarray, features: np.ndarray | None = None, *, rule: str = "enn",
                k: int = 3, kind: str = "mode", groups=None, seed=None,
                ratio: float = 1.0) -> np.ndarray:
    """``(n,)`` bool: majority-class samples proposed for removal.

    ``rule`` ``enn`` / ``renn`` / ``all_knn`` flag majority samples (classes larger than
    the smallest) whose neighbours in ``features`` out-vote them (``k``, ``kind`` as in
    :mod:`smartset.clean.knn_filters`); ``random`` flags random majority samples until each
    class is at most ``ratio`` x the smallest class (``seed``)."""
    labels = check_labels(labels)
    if rule not in UNDERSAMPLING_RULES:
        raise CleanInputError(f"Unknown undersampling rule {rule!r}; rules: "
                              f"{', '.join(UNDERSAMPLING_RULES)}.")
    counts = np.bincount(labels)
    smallest = counts[counts > 0].min()
    majority = np.flatnonzero(counts > smallest)
    if rule == "random":
        rng = resolve_rng(seed)
        flags = np.zeros(len(labels), dtype=bool)
        keep = max(int(math.ceil(ratio * smallest)), 1)
        for c in majority:
            members = np.flatnonzero(labels == c)
            if len(members) > keep:
                flags[rng.choice(members, len(members) - keep, replace=False)] = True
        return flags
    if features is None:
        raise CleanInputError(f"Undersampling rule {rule!r} needs features (n, d); or use "
                              f"rule='random'.")
    fn = {"enn": edited_nearest_neighbours, "renn": repeated_edited_nearest_neighbours,
          "all_knn": all_knn}[rule]
    return fn(labels, features, k=k, kind=kind, groups=groups, only_classes=majority)


def imbalance_report(labels, *, class_names=None, features=None) -> dict:
    """Counts and shares per class, the imbalance ratio (largest / smallest), the minority
    classes (below half the mean), and what each remedy would do: class weights, the
    augmented copies per sample to reach the largest class, and (with ``features``) how
    many majority samples ENN would flag."""
    labels = check_labels(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) < k:
        raise CleanInputError(f"class_names has {len(names)} names for {k} classes.")
    k = len(names)
    counts = np.bincount(labels, minlength=k)
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if present.size else None
    mean = counts.mean() if k else 0.0
    weights = class_weights(labels, n_classes=k) if len(labels) else np.zeros(k)
    copies = oversampling_copies(labels, n_classes=k) if len(labels) else np.zeros(k, int)
    added = oversampling_counts(labels, n_classes=k) if len(labels) else np.zeros(k, int)
    report = {
        "n": int(len(labels)), "classes": k,
        "counts": {names[i]: int(counts[i]) for i in range(k)},
        "shares": {names[i]: round(float(counts[i] / max(len(labels), 1)), 4) for i in range(k)},
        "imbalance_ratio": None if ratio is None else round(ratio, 3),
        "minority": [names[i] for i in range(k) if counts[i] < mean / 2],
        "empty": [names[i] for i in range(k) if counts[i] == 0],
        "class_weights": {names[i]: round(float(weights[i]), 4) for i in range(k)},
        "oversample_copies_per_sample": {names[i]: int(copies[i]) for i in range(k)},
        "oversample_new_copies": {names[i]: int(added[i]) for i in range(k)},
    }
    if features is not None and len(labels) > 4:
        flags = undersample(labels, features, rule="enn")
        report["enn_undersample"] = {names[i]: int(flags[labels == i].sum()) for i in range(k)}
    return report


def oversample(ws, *, policy: str = "rotation-elastic", version: str | None = None,
               name: str | None = None, target: str | int = "max", seed: int = 0,
               mode: str | None = None, batch_size: int = 256, engine=None) -> dict:
    """A new version: the samples of ``version`` plus augmented copies of the minority
    classes' samples (``policy``, through :mod:`smartset.augment`), so each class nears
    ``target`` exactly (:func:`per_sample_copies`). Copies are PNGs under ``ws/data/oversample-NAME/`` with lineage, written by
    :func:`smartset.augment.offline.augment_files` on ``engine`` (each copy's parameters
    drawn from seed, sample and copy, as offline augmentation does).

    Only the training samples are counted and copied: samples of held-out splits (test,
    val) join the version as they are (a copy of a test image would be scored twice, or
    leak into training), and in the live catalog so do derived samples (copies are not
    copied again). ``n_kept_as_is`` in the result counts the samples kept as they are."""
    from smartset.augment.offline import HELD_OUT_SPLITS, _clear_leftovers, augment_files
    from smartset.augment.policy import resolve_policy
    from smartset.engine import batches_of, get_engine

    from smartset.workspace import check_version_name

    started = time.perf_counter()
    if name is not None:  # it names a folder: checked before anything is read or written
        check_version_name(name)
    ws.catalog.check_writable()
    policy = resolve_policy(policy)
    everything = ws.samples(version)
    everything = everything[everything["label"].notna()]
    eligible = ~everything["split"].isin(HELD_OUT_SPLITS)
    if version is None:
        eligible &= everything["origin_id"].isna()
    kept, frame = everything[~eligible], everything[eligible]
    if frame.empty:
        raise CleanInputError("No labeled training samples to oversample (held-out splits and "
                              "copies are not oversampled).")
    classes = sorted(frame["label"].unique())
    codes = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    copies = per_sample_copies(codes, target=target, n_classes=len(classes), seed=seed)
    added = np.bincount(codes, weights=copies, minlength=len(classes)).astype(np.int64)
    name = check_version_name(name or f"{version or 'live'}-oversampled")
    held = contextlib.ExitStack()  # one writer of samples at a time: the workspace lock
    held.enter_context(ws.catalog.exclusive("clean oversample"))
    folder = ws.path / "data" / f"oversample-{name}"
    try:
        if name in set(ws.versions()["name"]):
            raise CleanInputError(f"Version {name!r} exists already: choose another name.")
        _clear_leftovers(ws, folder)  # inside the workspace only, never a catalog's files
        run_id = ws.catalog.start_run("clean oversample", {
            "policy": policy.spec(), "target": target, "version": version, "name": name},
            seed=seed)
    except BaseException:
        held.close()
        raise
    relpaths, origins, records = [], [], []
    with contextlib.ExitStack() as stack:
        stack.enter_context(held)  # released when this block ends
        stack.enter_context(ws.catalog.failing_run(run_id))
        stack.enter_context(_removed_on_error(ws, folder, name))
        runner = get_engine(engine)
        for count in sorted(set(copies.tolist()) - {0}):  # samples with as many copies
            chosen = frame[copies == count]
            batches = batches_of({"id": chosen["id"].tolist(), "path": chosen["path"].tolist()},
                                 batch_size)
            for written in runner.map_batches(augment_files, batches, fn_kwargs={
                    "policy": policy, "copies": int(count), "seed": int(seed),
                    "folder": str(folder), "mode": mode}):
                relpaths.extend(written["relpath"])
                origins.extend(written["origin"])
                records.extend(written["record"])
        # the copies and the version in one transaction: no copy belongs to no version
        new_ids, info = ws.add_derived_version(
            name, folder, relpaths, origin_ids=origins, params=records, stage="oversample",
            sample_ids=list(frame["id"]) + list(kept["id"]),
            version_params={"policy": policy.spec(), "target": target,
                            "copies": {classes[i]: int(added[i]) for i in range(len(classes))}},
            parent=version,
            description=f"{version or 'live catalog'} with minority classes oversampled "
                        f"({policy.label})")
    summary = {"version": info["name"], "n_samples": info["n_samples"],
               "n_augmented": len(new_ids), "n_kept_as_is": int(len(kept)),
               "new_copies": {classes[i]: int(added[i]) for i in range(len(classes))},
               "copies_per_sample": {classes[i]: _per_sample(added[i], (codes == i).sum())
                                     for i in range(len(classes))},
               "seconds": round(time.perf_counter() - started, 3)}
    ws.catalog.finish_run(run_id, summary)
    return summary


@contextlib.contextmanager
def _removed_on_error(ws, folder, name):
    """On an error before version ``name`` committed, its folder goes (inside the
    workspace only)."""
    from smartset._names import remove_tree

    try:
        yield
    except BaseException:
        try:
            if name not in ws.version_names():
                remove_tree(ws.path, folder)
        except Exception:  # noqa: BLE001 - the first error is the one to show
            pass
        raise


def _per_sample(added: int, count: int) -> int | float:
    share = added / max(int(count), 1)
    return int(share) if float(share).is_integer() else round(share, 2)


def workspace_imbalance(ws, version: str | None = None, *, oversample_policy: str | None = None,
                        name: str | None = None, seed: int = 0) -> dict:
    """:func:`imbalance_report` of the labeled samples of ``version`` (None: the live
    catalog), with the ENN undersampling column on the audit's embeddings when every sample
    has one (else left out, and ``enn_note`` says why); with ``oversample_policy``, also
    ``oversampled``: the version :func:`oversample` wrote."""
    from smartset.audit import embeddings
    from smartset.errors import EmptyDataError

    samples = ws.samples(version)
    samples = samples[samples["label"].notna()]
    classes = sorted(samples["label"].unique())
    codes = samples["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    features, note = None, None
    try:
        found, vectors = embeddings(ws, list(samples["id"]))
    except (EmptyDataError, LookupError, OSError) as error:  # no audit yet
        note = f"no audit embeddings ({error}); run 'smartset audit' for the ENN column"
    else:
        if len(found) == len(samples):
            features = vectors
        else:
            note = (f"the audit embedded {len(found)} of {len(samples)} samples; run "
                    f"'smartset audit' again for the ENN column")
    report = imbalance_report(codes, class_names=classes, features=features)
    report["classes"] = classes
    if note:
        report["enn_note"] = note
    if oversample_policy:
        report["oversampled"] = oversample(ws, policy=oversample_policy, version=version,
                                           name=name, seed=seed)
    return report
