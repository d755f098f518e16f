"""The cleaning plan: proposed actions with detector, score, reason and evidence, written
as JSON; applying it (all, or a reviewed subset) appends label events, marks and (for
multi-label plans' ``add_tag`` / ``remove_tag``) tag events, and can freeze a new version. Nothing is deleted, every action can be undone.

The plan's contract (format, action kinds, error, reading and checking a file) is
:mod:`smartset.clean.plan_file`.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from smartset._atomic import write_text
from smartset.catalog import now
from smartset.clean._validation import CleanInputError, InSampleWarning
from smartset.clean.store import register_plan, write_issues
from smartset.clean.plan_file import (ACTIONS, PLAN_FORMAT, TAG_ACTIONS, PlanError,
                                      check_plan, load_plan)
from smartset.clean.trust import assess_trust, estimated_by_class, view_evidence
from smartset.errors import EmptyDataError

__all__ = ["PLAN_FORMAT", "ACTIONS", "label_actions", "make_plan", "load_plan", "apply_plan",
           "undo_apply", "PlanError", "workspace_inputs", "looks_like_photos", "FEATURE_CHOICES"]

#: kind of the ``label_issues`` rows of samples no detector flagged (the rest of the ranking)
UNFLAGGED = "unflagged"


def label_actions(labels, found, ambiguity=None, *, min_relabel_posterior: float = 0.6,
                  neighbours_must_agree: bool = True) -> list[tuple[int, str, object]]:
    """What the plan proposes for each of ``labels`` (int class indices) that the
    consensus ``found`` flags, most suspicious first: ``(i, action, value)`` with
    ``action`` one of

    - ``"relabel"`` (``value`` the suggested class index) when the posterior of the
      suggested class is at least ``min_relabel_posterior`` and (``neighbours_must_agree``,
      when the consensus had features) the sample's neighbours side with the suggestion:
      they give the suggested class at least as much of their (distance-weighted) vote as
      the given label;
    - ``"exclude"`` (``value`` None) otherwise: the given label is doubtful but no class is
      convincing enough to put in its place, and a wrong relabel teaches the model a wrong
      label it did not have before. The neighbour check is what keeps a model's systematic
      error from becoming a label: a revolver among revolvers, or a rifle among the rifles
      filed as "pistol", that the model calls "smartphone" has neighbours that do not;
      also when ``ambiguity`` says the evidence is spread over many classes;
    - ``"multi_label"`` (``value`` the two leading class indices) when ``ambiguity`` finds
      the image split between its given class and another.
    """
    if not 0.0 <= min_relabel_posterior <= 1.0:
        raise CleanInputError(f"min_relabel_posterior must be in [0, 1], got "
                              f"{min_relabel_posterior!r}.")
    knn = getattr(found, "knn_probs", None) if neighbours_must_agree else None
    out = []
    for i in found.ranked():
        i = int(i)
        j = int(found.suggested[i])
        if ambiguity is not None and ambiguity.is_ambiguous[i]:
            pair = [int(c) for c in ambiguity.classes[i]]
            if ambiguity.suggestion[i] == "exclude":
                out.append((i, "exclude", None))
                continue
            if int(labels[i]) in pair:
                out.append((i, "multi_label", sorted(pair)))
                continue
        if found.posterior[i, j] < min_relabel_posterior:
            out.append((i, "exclude", None))
        elif knn is not None and knn[i, j] < knn[i, int(labels[i])]:
            out.append((i, "exclude", None))
        else:
            out.append((i, "relabel", j))
    return out


# -- inputs from the workspace ------------------------------------------------------------------

FEATURE_CHOICES = ("auto", "oof", "backbone", "audit", "none")
#: ``features="auto"`` embeds at most this many photos that are not cached yet (about 20
#: photos/s on one CPU core: 17 minutes); above it the audit's pixel embeddings are used
#: and the plan says why. Cached embeddings are used whatever their number.
BACKBONE_AUTO_LIMIT = 20_000


def _frozen_backbone(config: dict, meta: dict) -> str | None:
    """The pretrained backbone whose (frozen) embeddings a run stored as its out-of-fold
    features, or None when they come from the fold models themselves. Frozen embeddings are
    the same whichever fold embedded a sample, so neighbours need not stay within a fold."""
    name = meta.get("backbone")  # the learning stage's artifact says so (predict_oof)
    if not name and config.get("model") == "linear_head":  # a head on frozen embeddings
        name = config.get("backbone")
    return name if isinstance(name, str) and name else None


def looks_like_photos(frame) -> bool:
    """Whether the samples of ``frame`` (rows of ``ws.samples()``) are photos: most in
    colour, median shorter side at least 32 px (the rule of the audit's ``features="auto"``).
    Digits (small, gray) are not: they keep their pixel or trained-model features."""
    if len(frame) == 0:
        return False
    channels = frame["channels"].to_numpy(dtype=np.float64, na_value=np.nan)
    gray = frame["mode"].astype(str).isin(["L", "LA", "1", "I", "I;16", "F"]).to_numpy()
    colour = int(((channels >= 3) & ~gray).sum())
    short = np.minimum(frame["width"].to_numpy(dtype=np.float64, na_value=0),
                       frame["height"].to_numpy(dtype=np.float64, na_value=0))
    return colour * 2 > len(frame) and float(np.median(short)) >= 32


def _backbone_vectors(ws, version, ids, backbone: str, *, compute: bool,
                      progress: bool | None):
    """``(vectors in the order of ids, description, note)``: the backbone's embeddings,
    read from the cache, or computed when ``compute``; vectors None (and the note says why)
    when they cannot be had."""
    from smartset.backbones import MissingPackageError, UnknownBackboneError, backbone_spec
    from smartset.embeddings import embed, read_embeddings

    spec = backbone_spec(backbone)
    found = read_embeddings(ws, version, backbone=spec.name, sample_ids=ids)
    if found is None:
        if not compute:
            return None, None, (f"{spec.name} embeddings not cached for these {len(ids)} "
                                f"samples (more than {BACKBONE_AUTO_LIMIT} to compute: run "
                                f"'smartset embed', or --features backbone)")
        try:
            found = embed(ws, version, backbone=spec.name, sample_ids=ids, progress=progress)
        except (MissingPackageError, UnknownBackboneError, ImportError) as error:
            return None, None, f"{spec.name} cannot be loaded here: {error}"
    position = {str(s): i for i, s in enumerate(found.ids)}
    absent = [s for s in ids if str(s) not in position]
    if absent:
        return None, None, (f"{len(absent)} of {len(ids)} samples could not be embedded "
                            f"with {spec.name} (first: {absent[0]})")
    vectors = found.vectors[[position[str(s)] for s in ids]]
    return vectors, f"{found.describe()} pretrained embeddings", None


def workspace_inputs(ws, *, version: str | None = None, run: int | None = None,
                     kind: str = "oof", features: str = "auto",
                     backbone: str | None = None, progress: bool | None = None) -> dict:
    """The arrays the detectors take, for the labeled samples of ``version`` that have
    predictions of ``run`` (default: the newest out-of-fold run).

    Returns ``sample_ids``, ``labels`` (int), ``classes``, ``pred_probs``, ``features``,
    ``groups`` (the folds, when the features came from the fold models and so compare only
    within a fold; else None), ``feature_source`` (one line), ``features_used`` (a dict
    for the plan: ``source`` ``oof`` / ``backbone`` / ``audit`` / ``none``, ``description``,
    ``backbone``, ``within_folds``, ``note``: why the first choice was not taken),
    ``run_id``, ``in_sample``, ``skipped``.

    ``features``:

    - ``auto`` (default): on photos (:func:`looks_like_photos`), a pretrained backbone's
      embeddings: those the run stored (``predict --oof`` with a frozen backbone, the
      default for photos), else the ``backbone``'s (default
      :data:`smartset.backbones.DEFAULT_BACKBONE`, read from the embedding cache, computed
      when missing, up to :data:`BACKBONE_AUTO_LIMIT` images). They are preferred to the
      out-of-fold features of fold-trained models because they are an independent view:
      a fold model's features put a revolver it calls "smartphone" among the phones, so
      its neighbours only echo its error (741 photos, a small CNN: 11 revolvers, submachine
      guns and rifles relabeled "smartphone" on its own features, none on the backbone's).
      Elsewhere (digits) the run's out-of-fold features (neighbours within each fold); else
      the audit's pixel embeddings; else none. Naming a ``backbone`` takes its embeddings
      whatever the images.
    - ``oof``, ``backbone``, ``audit`` (pixel embeddings), ``none``: that one, or a clear
      error.
    """
    from smartset.backbones import DEFAULT_BACKBONE

    if features not in FEATURE_CHOICES:
        raise CleanInputError(f"Unknown features {features!r}; choose one of "
                              f"{', '.join(FEATURE_CHOICES)}.")
    asked = backbone  # a backbone named by the caller wins over the one a run stored
    backbone = backbone or DEFAULT_BACKBONE
    preds = ws.predictions(run=run, kind=kind)
    config = (ws.catalog.run(preds.run_id) or {}).get("config") or {}
    in_sample = preds.in_sample or config.get("in_sample") is True or config.get("oof") is False
    if in_sample:
        warnings.warn(
            f"The predictions of run {preds.run_id} are IN-SAMPLE: the model saw the samples "
            f"it predicted, so wrong labels look right and few are found. Use out-of-fold "
            f"predictions: 'smartset predict --oof'.", InSampleWarning, stacklevel=3)
    if preds.probs is None:
        raise CleanInputError(f"Run {preds.run_id} stored no class probabilities (regression?): "
                              f"label cleaning needs a classifier's out-of-fold probabilities.")
    samples = ws.samples(version)
    current = dict(zip(samples["id"], samples["label"]))
    class_index = {c: i for i, c in enumerate(preds.classes)}
    keep, skipped = [], {"not_in_version": 0, "unlabeled": 0, "unknown_class": 0}
    for i, sid in enumerate(preds.sample_ids):
        label = current.get(sid, "__absent__")
        if label == "__absent__":
            skipped["not_in_version"] += 1
        elif label is None:
            skipped["unlabeled"] += 1
        elif label not in class_index:
            skipped["unknown_class"] += 1
        else:
            keep.append(i)
    if not keep:
        where = f"version {version!r}" if version else "the catalog"
        raise EmptyDataError(f"No labeled sample of {where} has predictions in run "
                             f"{preds.run_id}. Run "
                             f"'smartset predict --oof' on it first.")
    keep = np.asarray(keep)
    ids = preds.sample_ids[keep]
    labels = np.array([class_index[current[s]] for s in ids], dtype=np.int64)
    probs = preds.probs[keep].astype(np.float64)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    vectors, groups = None, None
    used = {"source": "none", "description": "no features (the model's probabilities alone)",
            "backbone": None, "within_folds": False, "note": None}
    notes = []
    photos = looks_like_photos(samples[samples["id"].isin(set(ids))])
    fold_features = None  # out-of-fold features of fold-trained models, kept for later
    if features in ("auto", "oof"):
        from smartset.learn import oof_features_of  # learn's typed reader

        stored = oof_features_of(ws, preds.run_id, ids)
        if stored is not None:
            frozen = _frozen_backbone(config, stored[1])
            if frozen and features == "auto" and asked and asked != frozen:
                notes.append(f"run {preds.run_id} stored {frozen} embeddings; {asked} was "
                             f"asked for")
            elif frozen:
                vectors = stored[0]
                used.update(source="oof", backbone=frozen,
                            description=f"{frozen} embeddings stored with run {preds.run_id}")
            elif features == "oof" or not photos:
                vectors, groups = stored[0], preds.folds[keep]
                used.update(source="oof", within_folds=True,
                            description=f"oof features of run {preds.run_id}")
            else:  # photos: a pretrained backbone first, these if it cannot be had
                fold_features = stored[0]
                notes.append(f"the out-of-fold features of run {preds.run_id} come from the "
                             f"fold models themselves, so their neighbours echo the model's "
                             f"errors")
        elif features == "oof":
            raise CleanInputError(f"Run {preds.run_id} stored no out-of-fold features; use "
                                  f"features='auto', 'backbone' or 'audit'.")
        else:
            notes.append(f"run {preds.run_id} stored no out-of-fold features")
    if vectors is None and features in ("auto", "backbone"):
        if features == "backbone" or photos or asked:
            compute = features == "backbone" or asked or len(ids) <= BACKBONE_AUTO_LIMIT
            found, description, note = _backbone_vectors(ws, version, ids, backbone,
                                                         compute=compute, progress=progress)
            if found is not None:
                vectors = found
                used.update(source="backbone", description=description, backbone=backbone)
            elif features == "backbone":
                raise CleanInputError(f"No {backbone} embeddings: {note}.")
            else:
                notes.append(note)
        else:
            notes.append("not photos (mostly gray or smaller than 32 px): pixel features")
    if vectors is None and fold_features is not None:
        vectors, groups = fold_features, preds.folds[keep]
        used.update(source="oof", within_folds=True,
                    description=f"oof features of run {preds.run_id}")
    if vectors is None and features in ("auto", "audit"):
        try:
            from smartset.audit import embeddings

            found_ids, emb = embeddings(ws, list(ids))
            if len(found_ids) == len(ids):
                vectors = emb
                used.update(source="audit", description="audit pixel embeddings")
            elif features == "audit":
                raise CleanInputError(f"The audit measured {len(found_ids)} of {len(ids)} "
                                      f"samples: run 'smartset audit' again.")
            else:
                notes.append(f"the audit measured {len(found_ids)} of {len(ids)} samples")
        except (EmptyDataError, LookupError, OSError, sqlite3.Error) as error:
            if features == "audit":  # no audit yet: its tables or files are missing
                raise CleanInputError(f"No audit embeddings for these samples ({error}): run "
                                      f"'smartset audit' first.") from None
            notes.append("no audit embeddings")
    if notes and features == "auto":
        used["note"] = "; ".join(notes)  # why the first choice was not taken
    return {"sample_ids": ids, "labels": labels, "classes": list(preds.classes),
            "pred_probs": probs, "features": vectors, "groups": groups,
            "feature_source": used["description"], "features_used": used,
            "run_id": preds.run_id, "in_sample": bool(in_sample), "skipped": skipped}


def _duplicates(ws, allowed: set[str]) -> list[dict]:
    """Duplicate sets of the newest audit: every member after the first is a duplicate of it."""
    from smartset.audit.store import DUPLICATE_KINDS, findings

    found = findings(ws, kinds=DUPLICATE_KINDS)  # the reference audit, not an experiment
    found = found[found["sample_id"].notna()].sort_values(["grp", "sample_id"], kind="stable")
    rows = found[["kind", "sample_id", "score", "grp", "reason"]].to_dict("records")
    groups: dict[tuple, list] = {}
    for row in rows:
        if row["sample_id"] in allowed:
            groups.setdefault((row["kind"], row["grp"]), []).append(dict(row))
    out = []
    for (kind, group), members in groups.items():
        first = members[0]["sample_id"]
        for member in members[1:]:
            out.append({"sample_id": member["sample_id"], "value": first, "kind": kind,
                        "group": group, "score": float(member["score"] or 1.0),
                        "reason": member["reason"]})
    return out


# -- the second, independent view of the trust section -----------------------------------------

#: side of the gray thumbnails of the pixel view (:func:`pixel_vectors`)
PIXEL_SIDE = 16


def pixel_vectors(paths, side: int = PIXEL_SIDE) -> np.ndarray:
    """``(n, side * side)`` float32: each image as a gray ``side`` x ``side`` thumbnail,
    centred (its mean subtracted): the pixel view of :func:`make_plan`'s trust section,
    independent of any trained model."""
    from PIL import Image

    out = np.zeros((len(paths), side * side), dtype=np.float32)
    for row, path in enumerate(paths):
        with Image.open(path) as image:
            image.draft("L", (side * 4, side * 4))  # JPEGs decode small, fast
            out[row] = pixel_thumbnail(image, side)
    return out


def pixel_thumbnail(image, side: int = PIXEL_SIDE) -> np.ndarray:
    """One PIL image as the pixel view's vector: gray, ``side`` x ``side``, values 0-1
    with their mean subtracted."""
    from PIL import Image

    thumb = np.asarray(image.convert("L").resize((side, side), Image.BILINEAR),
                       dtype=np.float32).ravel() / 255.0
    return thumb - thumb.mean()


def _second_view(ws, version, ids, labels, n_classes: int, inputs: dict, found, k: int,
                 *, backbone: str | None = None, progress: bool | None = None):
    """``(view_probs, view)``: a kNN posterior on features independent of the out-of-fold
    model, and what they are. The consensus's own kNN posterior when its features are a
    pretrained backbone's or the audit's (pixel) embeddings; else (the fold models' own
    features, or none): on photos a pretrained backbone's embeddings (cached, or computed
    up to :data:`BACKBONE_AUTO_LIMIT` images), on digits the images' pixels
    (:func:`pixel_vectors`). Pixels do not tell what a photo shows (a product shot on white
    looks like the other product shots, whatever the product), so on photos a pixel view is
    marked ``reliable: False`` and every class comes out weak."""
    from smartset.backbones import DEFAULT_BACKBONE
    from smartset.clean.knn_filters import knn_posterior

    used = inputs["features_used"]
    if found.knn_probs is not None and not used.get("within_folds"):
        if used.get("source") == "oof" and used.get("backbone"):
            why = (f"kNN on {used['backbone']} embeddings; the model is a head on the same "
                   f"embeddings, so the two views are two model families, not two feature "
                   f"sets")
        else:
            why = f"kNN on {used['description']}, which no fold model was trained on"
        return found.knn_probs, {"source": used.get("source"), "k": k,
                                 "description": used["description"], "independent": why}
    samples = ws.samples(version)
    k_view = max(1, min(k, len(ids) - 1))
    photos = looks_like_photos(samples[samples["id"].isin(set(map(str, ids)))])
    note = None
    if photos:
        name = backbone or DEFAULT_BACKBONE
        vectors, description, note = _backbone_vectors(
            ws, version, [str(s) for s in ids], name,
            compute=len(ids) <= BACKBONE_AUTO_LIMIT, progress=progress)
        if vectors is not None:
            probs = knn_posterior(labels, vectors, k=k_view, n_classes=n_classes,
                                  metric="cosine")
            return probs, {"source": "backbone", "k": k_view, "description": description,
                           "independent": f"kNN on {description}, which no fold model was "
                                          f"trained on", "reliable": True}
    path_of = dict(zip(samples["id"], samples["path"]))
    try:
        vectors = pixel_vectors([path_of[str(s)] for s in ids])
    except (KeyError, OSError) as error:
        return None, {"source": "none", "description": "none", "k": None,
                      "independent": f"no second view: the images could not be read ({error})"}
    probs = knn_posterior(labels, vectors, k=k_view, n_classes=n_classes, metric="cosine")
    view = {"source": "pixels", "k": k_view,
            "description": f"pixels ({PIXEL_SIDE}x{PIXEL_SIDE} gray)",
            "independent": ("kNN on the images' pixels, which the fold models' features "
                            "(the consensus's) are not"), "reliable": not photos}
    if photos:
        view["independent"] = (f"pixels only ({note}): on photos they do not tell what an "
                               f"image shows, so they cannot vouch for the model")
    return probs, view


# -- making the plan -----------------------------------------------------------------------------

def make_plan(ws, *, version: str | None = None, run: int | None = None,
              features: str = "auto", k: int = 20, model_weight: float = 0.6,
              cut="auto", ambiguous: bool = True, merge: bool = True,
              duplicates: bool = True, min_confusion: float = 0.2,
              min_relabel_posterior: float = 0.6, neighbours_must_agree: bool = True,
              atypical: bool = True, atypical_z: float = 3.5, backbone: str | None = None,
              max_actions: int | None = None, author: str | None = None,
              progress: bool | None = None) -> dict:
    """Detect, rank and explain; write the plan and the ranked suspicious labels.

    Uses the newest out-of-fold predictions (or ``run``) and the embeddings found by
    :func:`workspace_inputs` (``features``, ``backbone``: on photos a pretrained backbone's
    embeddings by default; ``params.features_used`` records which). Proposes, in this
    order:

    - for labels the consensus flags, ``relabel``, or ``exclude`` / ``multi_label`` (see
      :func:`label_actions`: ``min_relabel_posterior``, ``neighbours_must_agree``);
    - ``multi_label`` / ``exclude`` for ambiguous images;
    - ``exclude`` (detector ``atypical``) for images far from the other members of their
      class (:func:`smartset.clean.find_atypical`, robust z-score at least ``atypical_z``),
      when the features are a pretrained backbone's embeddings (else ``params.atypical``
      says why not): mostly images that show none of the classes (a rifle filed as
      "pistol"), which the consensus cannot see because the model still prefers the given
      class. For a person to confirm: ``clean rounds`` never applies them;
    - ``merge_classes`` for classes confused both ways (``min_confusion``), and
      ``duplicate_of`` for the audit's duplicate sets.

    The plan's ``trust`` section (:func:`smartset.clean.trust.assess_trust`) says how far
    to trust it: per class the model's out-of-fold recall and precision, the agreement of
    the model with a kNN vote on independent features (the backbone's embeddings on
    photos, the pixels on digits: :func:`_second_view`), and a verdict, trusted or weak.
    Each label action's evidence says what the two views say (``model_says_suggested``,
    ``view_says_suggested``, ``model_rejects_label``, ``view_rejects_label``).

    Writes ``ws/reports/clean/plan-RUN.json`` (atomically, registered as artifact kind
    ``clean_plan``) and the ``label_issues`` rows of the run: one per labeled sample, all
    scored ``1 - posterior of the label`` (flagged ones by their detector, the rest as
    ``unflagged``), so the review queue and ``smartset clean --top N`` rank the whole set
    on one scale. Returns the plan, with ``path`` added.
    """
    from smartset.clean.ambiguity import find_ambiguous
    from smartset.clean.atypical import find_atypical
    from smartset.clean.consensus import consensus
    from smartset.clean.merge import find_classes_to_merge

    params = {"version": version, "predictions_run": run, "features": features, "k": k,
              "model_weight": model_weight, "cut": cut, "ambiguous": ambiguous,
              "merge": merge, "duplicates": duplicates, "min_confusion": min_confusion,
              "min_relabel_posterior": min_relabel_posterior,
              "neighbours_must_agree": neighbours_must_agree, "atypical": atypical,
              "atypical_z": atypical_z, "backbone": backbone, "max_actions": max_actions}
    run_id = ws.catalog.start_run("clean", params)
    with ws.catalog.failing_run(run_id):
        inputs = workspace_inputs(ws, version=version, run=run, features=features,
                                  backbone=backbone, progress=progress)
        ids, labels, classes = inputs["sample_ids"], inputs["labels"], inputs["classes"]
        probs, vectors, groups = inputs["pred_probs"], inputs["features"], inputs["groups"]
        n = len(labels)
        if vectors is not None:
            smallest = n if groups is None else int(np.bincount(
                np.unique(groups, return_inverse=True)[1]).min())
            k_used = max(1, min(k, smallest - 1))
        else:
            k_used = k
        found = consensus(labels, probs, features=vectors, groups=groups, k=k_used,
                          model_weight=model_weight, cut=cut, check_in_sample=False)
        amb = (find_ambiguous(probs, labels=labels, features=vectors, groups=groups,
                              k=k_used) if ambiguous else None)
        # only on a pretrained backbone's embeddings: there "far from its class" means
        # "shows something else"; on pixels or a fold model's features it means "looks
        # unusual" or nothing (a small CNN's features of a class nearly coincide)
        odd = (find_atypical(labels, vectors, groups=groups, max_z=atypical_z)
               if atypical and vectors is not None and inputs["features_used"]["backbone"]
               else None)
        view_probs, view = _second_view(ws, version, ids, labels, len(classes), inputs,
                                        found, k_used, backbone=backbone, progress=progress)
        trust = assess_trust(labels, found.model_probs, view_probs, classes=classes,
                             view=view, flagged=found.is_issue, suggested=found.suggested,
                             estimated_wrong=estimated_by_class(labels, found, len(classes)))
        actions: list[dict] = []
        issues: list[tuple] = []

        def evidence_of(i: int) -> dict:
            j = int(found.suggested[i])
            ev = {"label": classes[labels[i]], "suggested": classes[j],
                  "model_p_label": round(float(found.model_probs[i, labels[i]]), 4),
                  "model_p_suggested": round(float(found.model_probs[i, j]), 4),
                  "posterior_label": round(float(found.posterior[i, labels[i]]), 4),
                  "posterior_suggested": round(float(found.posterior[i, j]), 4),
                  "flags": {name: bool(f[i]) for name, f in found.flags.items()}}
            if found.knn_probs is not None:
                ev["knn_p_label"] = round(float(found.knn_probs[i, labels[i]]), 4)
                ev["knn_p_suggested"] = round(float(found.knn_probs[i, j]), 4)
            # the two views of the trust section (see smartset.clean.trust)
            ev.update(view_evidence(int(labels[i]), j, found.model_probs[i],
                                    None if view_probs is None else view_probs[i]))
            if amb is not None:
                ev["top2_margin"] = round(float(amb.margin[i]), 4)
            if odd is not None:
                ev["class_similarity"] = round(float(odd.similarity[i]), 4)
                ev["class_similarity_typical"] = round(float(odd.typical[i]), 4)
                ev["atypical_z"] = round(float(odd.score[i]), 2)
            return ev

        for i, action, value in label_actions(labels, found, amb,
                                              min_relabel_posterior=min_relabel_posterior,
                                              neighbours_must_agree=neighbours_must_agree):
            sid = str(ids[i])
            ev = evidence_of(i)
            given, suggested = ev["label"], ev["suggested"]
            detectors = ["consensus"] + [d for d, v in ev["flags"].items() if v]
            knn_text = (f", {ev['knn_p_suggested']:.0%} of its neighbours' vote says "
                        f"'{suggested}'" if "knn_p_suggested" in ev else "")
            reason = (f"labeled '{given}' but the model gives '{suggested}' "
                      f"{ev['model_p_suggested']:.0%} (and '{given}' "
                      f"{ev['model_p_label']:.0%}){knn_text}; flagged by "
                      f"{len(detectors)} detector(s): {', '.join(detectors)}")
            if action == "relabel":
                value = suggested
            elif action == "multi_label":
                pair = [classes[c] for c in value]
                value = sorted(pair)
                reason += f"; it may show both '{pair[0]}' and '{pair[1]}'"
            elif amb is not None and amb.is_ambiguous[i]:
                reason += "; the evidence is spread over many classes"
            elif (found.posterior[i, found.suggested[i]] >= min_relabel_posterior
                  and "knn_p_suggested" in ev):
                reason += (f"; not relabeled: its neighbours side with '{given}' "
                           f"({ev['knn_p_label']:.0%} of their vote, '{suggested}' "
                           f"{ev['knn_p_suggested']:.0%}), so '{suggested}' may be the "
                           f"model's own error, and the image may show neither class")
            else:
                reason += (f"; no class is likely enough to relabel it (posterior of "
                           f"'{suggested}' {ev['posterior_suggested']:.0%}, below "
                           f"{min_relabel_posterior:.0%})")
            actions.append({"action": action, "sample_id": sid, "value": value,
                            "detector": "consensus", "score": round(float(found.score[i]), 4),
                            "reason": reason, "evidence": ev})
            issues.append((run_id, sid, "wrong_label", float(found.score[i]), given,
                           suggested if action == "relabel" else json.dumps(value),
                           json.dumps(detectors), reason, json.dumps(ev)))
        if amb is not None:
            flagged = set(np.flatnonzero(found.is_issue).tolist())
            order = np.argsort(-amb.score, kind="stable")
            for i in order:
                if not amb.is_ambiguous[i] or i in flagged:
                    continue
                sid = str(ids[i])
                pair = [classes[c] for c in amb.classes[i]]
                ev = evidence_of(i)
                ev.update(classes=pair, entropy=round(float(amb.entropy[i]), 4))
                if amb.knn_split is not None:
                    ev["knn_split"] = round(float(amb.knn_split[i]), 4)
                if amb.suggestion[i] == "exclude":
                    action, value = "exclude", None
                    reason = (f"no class stands out (entropy {amb.entropy[i]:.2f}); leading "
                              f"'{pair[0]}' and '{pair[1]}' differ by {amb.margin[i]:.2f}")
                else:
                    action, value = "multi_label", sorted(pair)
                    reason = (f"split between '{pair[0]}' and '{pair[1]}' (top-2 margin "
                              f"{amb.margin[i]:.2f}); labeled '{ev['label']}'")
                ev["ambiguity_score"] = round(float(amb.score[i]), 4)
                actions.append({"action": action, "sample_id": sid, "value": value,
                                "detector": "ambiguity", "score": round(float(amb.score[i]), 4),
                                "reason": reason, "evidence": ev})
                # the catalog ranks every issue by the one suspicion score (clean.ranking)
                issues.append((run_id, sid, "ambiguous", float(found.score[i]), ev["label"],
                               json.dumps(value) if value else None,
                               json.dumps(["ambiguity"]), reason, json.dumps(ev)))
        if odd is not None:
            listed = {a["sample_id"] for a in actions}
            for i in odd.ranked():
                sid = str(ids[i])
                if sid in listed:
                    continue
                ev = evidence_of(int(i))
                given = ev["label"]
                reason = (f"far from the other '{given}' images: similarity to their centre "
                          f"{odd.similarity[i]:.2f}, typical {odd.typical[i]:.2f} (robust z "
                          f"{odd.score[i]:.1f}, cut {odd.max_z:g}); the model gives '{given}' "
                          f"{ev['model_p_label']:.0%}. It may show none of the classes (another "
                          f"object, a drawing, several objects): exclude it, or keep it if it "
                          f"is an unusual '{given}'")
                actions.append({"action": "exclude", "sample_id": sid, "value": None,
                                "detector": "atypical", "score": round(float(odd.score[i]), 4),
                                "reason": reason, "evidence": ev})
                # the catalog's issues share the consensus's scale (1 - posterior of the
                # label) so that the review queue ranks every label issue alike
                issues.append((run_id, sid, "atypical", float(found.score[i]), given, None,
                               json.dumps(["atypical"]), reason, json.dumps(ev)))
        # the rest of the ranking: every labeled sample has a row, so that a person can go
        # down the whole ranking (review queue 'suspicious', 'smartset clean --top N')
        listed = {row[1] for row in issues}
        for i in np.argsort(-found.score, kind="stable"):
            sid = str(ids[i])
            if sid in listed:
                continue
            ev = evidence_of(int(i))
            reason = (f"not flagged: the evidence gives its label '{ev['label']}' "
                      f"{ev['posterior_label']:.0%} (model {ev['model_p_label']:.0%}); "
                      f"next most likely '{ev['suggested']}' {ev['posterior_suggested']:.0%}")
            short = {key: ev[key] for key in ("label", "suggested", "posterior_label",
                                              "posterior_suggested", "model_p_label")}
            issues.append((run_id, sid, UNFLAGGED, float(found.score[i]), ev["label"],
                           ev["suggested"], json.dumps([]), reason, json.dumps(short)))
        if merge:
            pairs = find_classes_to_merge(labels, probs, features=vectors, groups=groups,
                                          k=k_used, min_confusion=min_confusion,
                                          class_names=classes)
            for row in pairs.to_dict("records"):
                source = row["b"] if row["into"] == row["a"] else row["a"]
                ev = {key: (v.item() if hasattr(v, "item") else v) for key, v in row.items()}
                overlap = (f"; their embeddings overlap {row['overlap']:.2f}x chance"
                           if "overlap" in row else "")
                actions.append({
                    "action": "merge_classes", "sample_id": None,
                    "value": {"from": source, "into": row["into"]}, "detector": "merge",
                    "score": float(row["score"]),
                    "reason": (f"'{row['a']}' and '{row['b']}' are confused both ways: "
                               f"{row['confusion_ab']:.0%} of '{row['a']}' look like "
                               f"'{row['b']}' and {row['confusion_ba']:.0%} the other way"
                               f"{overlap}"),
                    "evidence": ev})
        if duplicates:
            for dup in _duplicates(ws, set(map(str, ids))):
                actions.append({"action": "duplicate_of", "sample_id": dup["sample_id"],
                                "value": dup["value"], "detector": "audit:" + dup["kind"],
                                "score": round(dup["score"], 4), "reason": dup["reason"],
                                "evidence": {"group": dup["group"], "kind": dup["kind"]}})
        if max_actions is not None:
            actions = actions[:max_actions]
        for number, action in enumerate(actions, start=1):
            action["id"] = f"a{number:04d}"
        actions = [{key: a[key] for key in ("id", "action", "sample_id", "value", "detector",
                                            "score", "reason", "evidence")} for a in actions]
        params.update(feature_source=inputs["feature_source"],
                      features_used=inputs["features_used"],
                      n_atypical=0 if odd is None else int(odd.is_atypical.sum()),
                      atypical_checked=odd is not None,
                      predictions_run=inputs["run_id"],
                      in_sample=inputs["in_sample"], n_samples=n, classes=classes,
                      n_estimated_wrong=int(found.n_estimated),
                      noise={"cut_used": found.params["cut_used"],
                             "estimated_wrong_by_class": None
                             if found.params["class_counts"] is None else
                             dict(zip(classes, found.params["class_counts"])),
                             "transition": found.params["noise_matrix"]},
                      skipped=inputs["skipped"],
                      k_used=k_used, author=author)
        plan = {"format": PLAN_FORMAT, "run_id": run_id, "created_at": now(), "version": version,
                "params": params, "trust": trust, "actions": actions}
        path = ws.reports_dir / "clean" / f"plan-{run_id}.json"
        write_text(path, json.dumps(plan, indent=1, ensure_ascii=False, default=_json_default))
        with ws.catalog.write() as con:
            write_issues(con, issues)
            register_plan(con, f"clean.plan.{run_id}", path.relative_to(ws.path).as_posix(),
                          {"run_id": run_id, "version": version, "actions": len(actions)},
                          now())
    counts: dict[str, int] = {}
    for a in actions:
        counts[a["action"]] = counts.get(a["action"], 0) + 1
    ws.catalog.finish_run(run_id, {"actions": counts, "n_samples": n,
                                   "wrong_labels": int(found.is_issue.sum()),
                                   "weak_classes": trust["weak"], "path": str(path)})
    plan["path"] = str(path)
    return plan


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- reading and applying -------------------------------------------------------------------------

def apply_plan(ws, plan_or_path, *, only: Iterable[str] | None = None,
               version: str | None = None, author: str | None = None,
               origin: str = "clean") -> dict:
    """Apply a plan (or the actions ``only`` names) through label events, marks and tag
    events (``add_tag`` / ``remove_tag``: one tag event per sample, holding its tags with
    every chosen change; see :func:`smartset.tags.edit_tags`), and, with ``version``, freeze the result as a new version (the plan's version, or the live
    catalog, minus excluded samples); the old version stays.

    A relabel whose sample no longer carries the label the plan saw is skipped as
    ``stale``; one already carrying the new label as ``already``, as is a tag to add the sample has or one to remove it
    lacks. Returns ``run_id``, ``applied`` (action id -> label event, mark and tag event ids),
    ``skipped`` (id -> why) and
    ``version``; :func:`undo_apply` reverts a whole application.
    """
    if isinstance(plan_or_path, (str, Path)):
        plan = load_plan(plan_or_path)
        source = str(plan_or_path)
    else:
        plan = plan_or_path
        check_plan(plan, "the plan given")
        source = f"plan of run {plan.get('run_id')}"
    by_id = {a["id"]: a for a in plan["actions"]}
    chosen = list(by_id) if only is None else list(only)
    unknown = [a for a in chosen if a not in by_id]
    if unknown:
        raise PlanError(f"The plan has no action(s) {', '.join(unknown[:5])}; its ids run "
                        f"from {min(by_id, default='-')} to {max(by_id, default='-')}.")
    if version is not None and version in set(ws.versions()["name"]):
        raise PlanError(f"Version {version!r} exists already; versions are immutable, so "
                        f"choose a new name.")
    run_id = ws.catalog.start_run("clean apply", {"plan": source, "plan_run": plan.get("run_id"),
                                                  "only": only and chosen, "version": version})
    applied: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    with ws.catalog.failing_run(run_id):
        live = ws.samples(include_excluded=True)
        current = dict(zip(live["id"], live["label"]))
        tags_now = None  # read once, when the plan has tag actions
        tag_changes: dict[str, tuple[set, set]] = {}
        tag_items: dict[str, list[str]] = {}
        tag_reasons: dict[str, list[str]] = {}
        for action_id in chosen:
            action = by_id[action_id]
            kind, sid, value = action["action"], action.get("sample_id"), action.get("value")
            reason = f"{action['detector']}: {action['reason']} [{action_id}]"
            if sid is not None and sid not in current:
                skipped[action_id] = "sample not available"
                continue
            events, marks = [], []
            if kind in TAG_ACTIONS:
                if tags_now is None:
                    from smartset.tags import read_tags

                    tags_now = read_tags(ws)
                if (value in tags_now.get(sid, ())) == (kind == "add_tag"):
                    skipped[action_id] = "already"
                    continue
                add, remove = tag_changes.setdefault(sid, (set(), set()))
                (add if kind == "add_tag" else remove).add(value)
                tag_items.setdefault(sid, []).append(action_id)
                tag_reasons.setdefault(sid, []).append(reason)
                continue
            if kind == "relabel":
                seen = (action.get("evidence") or {}).get("label")
                if current[sid] == value:
                    skipped[action_id] = "already"
                    continue
                if seen is not None and current[sid] != seen:
                    skipped[action_id] = f"stale: labeled {current[sid]!r} now, not {seen!r}"
                    continue
                events = ws.relabel(sid, value, author=author, reason=reason, origin=origin)
                current[sid] = value
            elif kind == "merge_classes":
                source_class, into = value["from"], value["into"]
                if source_class not in set(current.values()):
                    skipped[action_id] = f"no sample is labeled {source_class!r} now"
                    continue
                events = ws.rename_label(source_class, into, author=author, reason=reason,
                                         origin=origin)
                current = {s: (into if lab == source_class else lab) for s, lab in current.items()}
            else:
                in_force = ws.marks(kind)
                in_force = in_force[in_force["sample_id"] == sid]
                wanted = sorted(set(value)) if kind == "multi_label" else value
                if not in_force.empty and (kind == "exclude" or
                                           in_force["value"].iloc[-1] == wanted):
                    skipped[action_id] = "already"
                    continue
                marks = ws.mark(sid, kind, value, author=author, reason=reason, origin=origin)
            applied[action_id] = {"label_events": list(events), "marks": list(marks)}
        if tag_changes:
            from smartset.tags import edit_tags

            written = edit_tags(ws, tag_changes, author=author, origin=origin,
                                reason={s: "; ".join(r) for s, r in tag_reasons.items()})
            why_not = {"multi_label mark": "a reviewer's multi_label mark decides its tags: "
                                           "change the mark in review",
                       "no tags left": "it would leave the image no tag: exclude it instead"}
            for sid, items in tag_items.items():
                for action_id in items:
                    if isinstance(written[sid], int):
                        applied[action_id] = {"label_events": [], "marks": [],
                                              "tag_events": [written[sid]]}
                    else:
                        skipped[action_id] = why_not.get(written[sid], written[sid])
        info = None
        if version is not None:
            base = ws.samples(plan.get("version")) if plan.get("version") else None
            excluded = set(ws.marks("exclude")["sample_id"])
            ids = None if base is None else [s for s in base["id"] if s not in excluded]
            info = ws.create_version(version, sample_ids=ids,
                                     description=f"cleaned with {source} "
                                                 f"({len(applied)} action(s))",
                                     params={"clean_plan": source, "applied": sorted(applied),
                                             "apply_run": run_id})
    result = {"run_id": run_id, "applied": applied, "skipped": skipped,
              "version": None if info is None else info["name"],
              "n_samples": None if info is None else info["n_samples"]}
    ws.catalog.finish_run(run_id, result)
    return result


def undo_apply(ws, run_id: int, *, author: str | None = None) -> dict:
    """Revert every label event, mark and tag event that apply run ``run_id`` appended,
    newest first. A version it made stays (versions are immutable); returns the reverting
    event ids."""
    run = ws.catalog.run(run_id)
    if run is None or run["command"] != "clean apply" or not run["metrics"]:
        raise PlanError(f"Run {run_id} is not a finished 'clean apply' run. See 'smartset runs'.")
    applied = run["metrics"].get("applied", {})
    label_events = sorted((e for a in applied.values() for e in a["label_events"]), reverse=True)
    marks = sorted((m for a in applied.values() for m in a["marks"]), reverse=True)
    reason = f"undo clean apply run {run_id}"
    tag_events = {t for a in applied.values() for t in a.get("tag_events", [])}
    reverted = {"label_events": [ws.undo(e, author=author, reason=reason) for e in label_events],
                "marks": [ws.undo_mark(m, author=author, reason=reason) for m in marks]}
    if tag_events:
        from smartset.tags import undo_tags

        reverted["tag_events"] = undo_tags(ws, tag_events, author=author, reason=reason)
    return reverted
