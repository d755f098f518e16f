"""Label issues of multi-label data: a tag that is missing, or one that should not be there.

Confident learning one class at a time (as cleanlab's multi-label mode does): for class
``k`` the question is binary (does the image show ``k``?). With out-of-fold probabilities
``p`` of ``k``, its per-class thresholds are the mean ``p`` of the rows tagged ``k`` (``t1``)
and the mean ``1 - p`` of the rows not tagged ``k`` (``t0``). A row not tagged ``k`` whose
``p`` reaches ``t1`` is a **missing** tag; a row tagged ``k`` whose ``1 - p`` reaches ``t0``
is an **extra** tag; a row confident both ways counts where its margin is larger. Both
thresholds are at least 0.5 (a tag is called missing only where the model finds it more
likely present than absent): a weak model, whose probabilities all sit near the tag's
frequency, would otherwise call half the untagged cells missing (300 MNIST pairs, 2 epochs
per fold: 989 flags for 24 dropped tags). These are
the off-diagonal cells of each class's 2x2 confident joint (``filter_by="confident_joint"``).
By default (``"prune_by_noise_rate"``, cleanlab's default too) each off-diagonal count is
calibrated first (a row of the joint scaled to the number of rows given that tag, so the
rows confident neither way count in proportion) and that many rows are flagged, those the
model believes most: more recall, a little less precision.

Which of the single-label detectors apply (:data:`MULTILABEL_DETECTORS`): the audit's
duplicates are unchanged (they compare pixels, not labels; an image filed under two
classes is then a multi-tag image, which ``smartset.tags`` reads as such); the per-class
confident learning here applies; the others solve for one true class per image and
refuse with the reason (:func:`check_multilabel_detector`).

Over a workspace, :func:`make_tag_plan` (``smartset clean --multi-label``) is the
multi-label twin of :func:`smartset.clean.make_plan`: it records a run (command ``clean
tags``), writes a plan in the one plan format with an ``add_tag`` or ``remove_tag`` item
per flagged cell (:mod:`smartset.clean.plan_file`), stores the flagged cells for the review
app's ``tags`` queue (:func:`smartset.clean.store.tag_issues`) and reports per class how
many tags look missing or extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import json

import numpy as np

from smartset._atomic import write_text
from smartset.catalog import now
from smartset.clean._validation import CleanInputError
from smartset.clean.plan_file import PLAN_FORMAT
from smartset.clean.store import TAG_RUN, register_plan, write_tag_issues

__all__ = ["find_multilabel_issues", "MultiLabelIssues", "MULTILABEL_DETECTORS",
           "check_multilabel_detector", "FILTERS", "find_tag_issues", "make_tag_plan"]

MULTILABEL_DETECTORS: dict[str, str | None] = {
    # name -> None when it applies to multi-label data, else why it refuses
    "confident": None,
    "audit duplicates": None,
    "consensus": "it solves for the one true class of each image (a noise transition "
                 "matrix between classes); an image with several classes has no one true class",
    "confident_learning": "its confident joint counts one given and one true class per "
                          "image; use method='confident', the per-class version",
    "enn": "neighbours vote for one label", "renn": "neighbours vote for one label",
    "all_knn": "neighbours vote for one label",
    "knn_posterior": "its posterior is over one label per image",
    "ambiguity": "two high probabilities are expected when an image shows two classes",
    "merge": "classes that often appear together are not confused classes",
    "atypical": "an image's distance to its class centre needs one class per image",
}


def check_multilabel_detector(name: str) -> None:
    """Raise :class:`CleanInputError` naming why detector ``name`` does not apply to
    multi-label data (and what does); return None when it applies."""
    if name not in MULTILABEL_DETECTORS:
        raise CleanInputError(f"Unknown detector {name!r} for multi-label data; known: "
                              f"{', '.join(MULTILABEL_DETECTORS)}.")
    reason = MULTILABEL_DETECTORS[name]
    if reason is not None:
        usable = [n for n, r in MULTILABEL_DETECTORS.items() if r is None]
        raise CleanInputError(f"Detector {name!r} does not apply to multi-label data: "
                              f"{reason}. On multi-label data use: {', '.join(usable)}.")


@dataclass
class MultiLabelIssues:
    """What :func:`find_multilabel_issues` found.

    ``matrix`` ``(N, K)`` int8: +1 a missing tag, -1 an extra tag, 0 none. ``scores``
    ``(N, K)``: how confidently the model disagrees (``p`` for a missing tag, ``1 - p`` for an
    extra one; 0 where it does not). ``is_issue`` ``(N,)``: any issue in the row;
    ``thresholds`` ``(K, 2)``: ``(t1, t0)`` per class. :meth:`table` lists them worst first.
    """

    matrix: np.ndarray
    scores: np.ndarray
    thresholds: np.ndarray

    @property
    def is_issue(self) -> np.ndarray:
        return (self.matrix != 0).any(1)

    def table(self, classes=None) -> list[dict]:
        """One dict per issue: ``row``, ``class``, ``kind`` (missing, extra), ``score``,
        highest score first."""
        rows, cols = np.nonzero(self.matrix)
        order = np.argsort(-self.scores[rows, cols], kind="stable")
        return [{"row": int(rows[i]), "class": (int(cols[i]) if classes is None
                                                else classes[cols[i]]),
                 "kind": "missing" if self.matrix[rows[i], cols[i]] > 0 else "extra",
                 "score": float(self.scores[rows[i], cols[i]])} for i in order]


FILTERS = ("prune_by_noise_rate", "confident_joint")
#: a class whose given tags the out-of-fold model ranks below this average precision (or
#: with fewer than :data:`MIN_TAGGED` images) is ``weak`` in a tag plan's report: the model
#: cannot tell its own errors from the tags' there (an untrained model, mAP 0.32 on 300
#: MNIST pairs, called 542 of the 600 tags extra)
MIN_TRUSTED_AP = 0.8
MIN_TAGGED = 10


def find_multilabel_issues(labels, pred_probs, *, method: str = "confident",
                           filter_by: str = "prune_by_noise_rate") -> MultiLabelIssues:
    """Missing and extra tags from out-of-fold probabilities, one class at a time.

    ``labels``: ``(N, K)`` 0/1 indicator matrix of the given tags; ``pred_probs``: ``(N, K)``
    out-of-fold per-class probabilities (a sigmoid head, not a softmax: rows need not sum
    to 1). ``method``: ``"confident"`` (see the module docstring); a single-label detector's
    name raises the reason it does not apply. ``filter_by``: ``"prune_by_noise_rate"``
    (default) or ``"confident_joint"`` (see the module docstring).
    """
    check_multilabel_detector(method)
    if filter_by not in FILTERS:
        raise CleanInputError(f"Unknown filter_by {filter_by!r}; choose {' or '.join(FILTERS)}.")
    if method != "confident":
        raise CleanInputError(f"{method!r} is not a label-issue detector; use 'confident'.")
    y = np.asarray(labels)
    p = np.asarray(pred_probs, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape:
        raise CleanInputError(f"labels and pred_probs must both be (N, K); got {y.shape} and "
                              f"{p.shape}. Single-label data goes to smartset.clean."
                              f"find_label_issues.")
    if not np.isin(y, (0, 1)).all():
        raise CleanInputError("multi-label labels must be a 0/1 indicator matrix")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise CleanInputError("pred_probs must be probabilities in [0, 1]")
    y = y.astype(bool)
    matrix = np.zeros(y.shape, dtype=np.int8)
    scores = np.zeros(y.shape)
    thresholds = np.full((y.shape[1], 2), np.nan)
    for k in range(y.shape[1]):
        tagged, untagged = y[:, k], ~y[:, k]
        if not tagged.any() or not untagged.any():
            continue  # nothing to compare against: no class-conditional threshold
        t1 = max(p[tagged, k].mean(), 0.5)
        t0 = max((1 - p[untagged, k]).mean(), 0.5)
        thresholds[k] = (t1, t0)
        sure_yes = p[:, k] >= t1
        sure_no = (1 - p[:, k]) >= t0
        both = sure_yes & sure_no
        yes_margin = p[:, k] - t1
        no_margin = (1 - p[:, k]) - t0
        sure_yes &= ~both | (yes_margin >= no_margin)
        sure_no &= ~both | (no_margin > yes_margin)
        missing = untagged & sure_yes
        extra = tagged & sure_no
        if filter_by == "prune_by_noise_rate":
            n_missing = _calibrated(missing.sum(), (untagged & sure_no).sum(), untagged.sum())
            n_extra = _calibrated(extra.sum(), (tagged & sure_yes).sum(), tagged.sum())
            missing = _top(untagged, p[:, k], n_missing)
            extra = _top(tagged, 1 - p[:, k], n_extra)
        matrix[missing, k] = 1
        matrix[extra, k] = -1
        scores[missing, k] = p[missing, k]
        scores[extra, k] = 1 - p[extra, k]
    return MultiLabelIssues(matrix, scores, thresholds)


def _calibrated(off: int, on: int, given: int) -> int:
    """An off-diagonal count of a confident joint's row scaled to the ``given`` rows."""
    return int(round(off / max(off + on, 1) * given))


def _top(rows: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """A mask of the ``count`` rows of ``rows`` with the highest ``scores``."""
    out = np.zeros(len(rows), dtype=bool)
    if count > 0:
        candidates = np.flatnonzero(rows)
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:count]]
        out[best] = True
    return out


def _out_of_fold(ws, version, *, model, folds, size, mode, fit, seed, progress, options):
    """``(data, tag_sets, probs, classes)``: the tagged images of ``version`` and their
    out-of-fold per-class probabilities (lineage and duplicate groups kept within a fold)."""
    # learn trains the fold models; imported here so that importing the cleaning stage
    # does not load torch (as plan.py reads learn's features)
    from smartset.learn import cross_val_predict_multilabel, load_tagged
    from smartset.learn._workspace import duplicate_groups

    data, tag_sets = load_tagged(ws, version, size=size, mode=mode, fit=fit, progress=progress)
    groups = duplicate_groups(ws, data.ids).astype(str)
    probs, classes, _ = cross_val_predict_multilabel(
        data.images, tag_sets, model=model, folds=folds, groups=groups, seed=seed,
        progress=progress, **options)
    return data, tag_sets, probs, classes


def find_tag_issues(ws, version: str | None = None, *, model: str = "lenet", folds: int = 5,
                    size=None, mode: str | None = None, fit: str = "stretch", seed: int = 0,
                    filter_by: str = "prune_by_noise_rate", progress: bool | None = None,
                    **options) -> dict:
    """Missing and extra tags of ``version`` (a workspace's tags, :meth:`Workspace.tags`):
    out-of-fold probabilities from a multi-label CNN per fold (lineage and duplicate groups
    kept within a fold; ``options``: epochs, batch_size, lr, ...), then
    :func:`find_multilabel_issues`. Returns ``issues`` (sample_id, path, tags, class, kind,
    score, probability; worst first), ``classes``, ``n``, ``thresholds`` (per class ``t1``,
    ``t0``) and ``per_class`` (tagged, missing, extra, out-of-fold average precision against
    the given tags)."""
    from smartset.learn.multilabel_metrics import multilabel_report
    from smartset.tags import tag_matrix

    data, tag_sets, probs, classes = _out_of_fold(
        ws, version, model=model, folds=folds, size=size, mode=mode, fit=fit, seed=seed,
        progress=progress, options=options)
    truth, _ = tag_matrix(tag_sets, classes)
    found = find_multilabel_issues(truth, probs, filter_by=filter_by)
    issues = [{"sample_id": str(data.ids[r["row"]]), "path": str(data.paths[r["row"]]),
               "tags": tag_sets[r["row"]], **{k: r[k] for k in ("class", "kind", "score")},
               "probability": float(probs[r["row"], classes.index(r["class"])])}
              for r in found.table(classes)]
    report = multilabel_report(truth, probs, classes)
    per_class = {row["class"]: {"tagged": row["support"], "ap": row["ap"],
                                "missing": int((found.matrix[:, k] > 0).sum()),
                                "extra": int((found.matrix[:, k] < 0).sum())}
                 for k, row in enumerate(report["per_class"])}
    return {"issues": issues, "classes": classes, "n": len(data), "filter_by": filter_by,
            "thresholds": {c: [float(v) for v in t] for c, t in zip(classes, found.thresholds)},
            "per_class": per_class, "oof_map": report["mAP"]}


def _reason(issue: dict, thresholds: dict) -> str:
    c, p = issue["class"], issue["probability"]
    t1, t0 = thresholds[issue["class"]]
    if issue["kind"] == "missing":
        return (f"not tagged '{c}', but the out-of-fold model gives '{c}' {p:.0%}, at least "
                f"what it gives the images tagged '{c}' on average ({t1:.0%}); tags "
                f"{', '.join(issue['tags'])}")
    return (f"tagged '{c}', but the out-of-fold model gives '{c}' only {p:.0%}: it is "
            f"{1 - p:.0%} sure the tag is absent, at least as sure as it is of the images "
            f"not tagged '{c}' on average ({t0:.0%}); tags {', '.join(issue['tags'])}")


def make_tag_plan(ws, version: str | None = None, *, model: str = "lenet", folds: int = 5,
                  size=None, mode: str | None = None, fit: str = "stretch", seed: int = 0,
                  filter_by: str = "prune_by_noise_rate", top: int = 5,
                  author: str | None = None, progress: bool | None = None,
                  **options) -> dict:
    """Find missing and extra tags of ``version`` (:func:`find_tag_issues`: out-of-fold
    sigmoid probabilities of a multi-label ``model`` per fold, ``folds`` folds, ``seed``;
    ``options`` such as ``epochs``, ``batch_size``, ``lr`` go to the estimator; per-class
    confident learning with ``filter_by``) and write them as a plan.

    The plan (format ``smartset.clean-plan/1``, ``reports/clean/plan-RUN.json``, registered
    as ``clean.plan.RUN``) holds one ``add_tag`` (a missing tag) or ``remove_tag`` (an extra
    one) item per flagged cell, most confident first, each with its ``score`` (the model's
    probability of the tag, or of its absence), reason and evidence (the tags it saw, the
    probability, the class's thresholds). ``params.report`` says per class how many images
    carry the tag, how many tags look missing or extra, the out-of-fold average precision
    against the given tags (how far to trust the model on that class) and the ``top``
    items; ``params.report.weak`` names the classes not to trust it on (AP below
    :data:`MIN_TRUSTED_AP`, or fewer than :data:`MIN_TAGGED` images tagged) and why. The
    flagged cells also go to the catalog (``tag_issues``) for the review app's
    ``tags`` queue. Nothing changes until the plan is applied
    (:func:`smartset.clean.apply_plan`). Returns the plan, with ``path`` added.
    """
    params = {"version": version, "task": "multilabel", "model": model, "folds": folds,
              "size": size, "mode": mode, "fit": fit, "filter_by": filter_by,
              "options": {k: v for k, v in options.items() if v is not None}}
    run_id = ws.catalog.start_run(TAG_RUN, params, seed=seed)
    with ws.catalog.failing_run(run_id):
        found = find_tag_issues(ws, version, model=model, folds=folds, size=size, mode=mode,
                                fit=fit, seed=seed, filter_by=filter_by, progress=progress,
                                **options)
        thresholds = found["thresholds"]
        frame = ws.samples(version)
        files = dict(zip(frame["id"], frame["relpath"]))  # a person knows the file
        actions, rows = [], []
        for number, issue in enumerate(found["issues"], start=1):
            action_id = f"a{number:04d}"
            reason = _reason(issue, thresholds)
            t1, t0 = thresholds[issue["class"]]
            actions.append({
                "id": action_id, "action": "add_tag" if issue["kind"] == "missing"
                else "remove_tag", "sample_id": issue["sample_id"], "value": issue["class"],
                "detector": "confident", "score": round(float(issue["score"]), 4),
                "reason": reason,
                "evidence": {"kind": issue["kind"], "tags": list(issue["tags"]),
                             "probability": round(issue["probability"], 4),
                             "threshold_present": round(t1, 4),
                             "threshold_absent": round(t0, 4),
                             "file": files.get(issue["sample_id"], issue["path"])}})
            rows.append((run_id, issue["sample_id"], issue["class"], issue["kind"],
                         float(issue["score"]), issue["probability"],
                         json.dumps(list(issue["tags"])), action_id, reason))
        per_class = {}
        for c in found["classes"]:
            mine = [a for a in actions if a["value"] == c]
            per_class[c] = {**found["per_class"][c],
                            "threshold_present": round(thresholds[c][0], 4),
                            "threshold_absent": round(thresholds[c][1], 4),
                            "top": [{"id": a["id"], "action": a["action"],
                                     "sample_id": a["sample_id"], "file": a["evidence"]["file"],
                                     "score": a["score"]} for a in mine[:top]]}
        weak = {c: (f"{row['tagged']} image(s) tagged" if row["tagged"] < MIN_TAGGED else
                    f"the model ranks its tags with AP {row['ap']:.2f} < {MIN_TRUSTED_AP}")
                for c, row in per_class.items()
                if row["tagged"] < MIN_TAGGED or row["ap"] is None or row["ap"] < MIN_TRUSTED_AP}
        params.update(n_samples=found["n"], classes=found["classes"],
                      oof_map=found["oof_map"], author=author,
                      report={"classes": per_class, "weak": weak,
                              "missing": sum(a["action"] == "add_tag" for a in actions),
                              "extra": sum(a["action"] == "remove_tag" for a in actions)})
        plan = {"format": PLAN_FORMAT, "run_id": run_id, "created_at": now(), "version": version,
                "params": params, "trust": None, "actions": actions}
        path = ws.reports_dir / "clean" / f"plan-{run_id}.json"
        write_text(path, json.dumps(plan, indent=1, ensure_ascii=False))
        with ws.catalog.write() as con:
            write_tag_issues(con, rows)
            register_plan(con, f"clean.plan.{run_id}", path.relative_to(ws.path).as_posix(),
                          {"run_id": run_id, "version": version, "actions": len(actions),
                           "task": "multilabel"}, now())
    ws.catalog.finish_run(run_id, {"missing": params["report"]["missing"],
                                   "extra": params["report"]["extra"],
                                   "n_samples": found["n"], "oof_map": found["oof_map"],
                                   "path": str(path)})
    plan["path"] = str(path)
    return plan
