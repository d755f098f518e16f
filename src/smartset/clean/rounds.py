"""Cleaning in rounds, as one call: out-of-fold predictions, the plan, the label actions
whose evidence clears a bar applied as a new version; then again on that version.

Two choices come from ``benchmarks/label_noise.py`` (MNIST, 30% of the 7s, 4s, 3s and 2s
flipped; measured when a round applied every label action of the plan):

- The fold models train with online augmentation (``augment``, default
  ``translation-rotation``): a model that sees each image a little differently every epoch
  fits the wrong labels less, so its out-of-fold probabilities point at more of them.
- A second round, on the version the first made, finds wrong labels the first model
  agreed with.

What a round applies comes from ``benchmarks/clean_trust.py``, which measures the precision
of applied actions on planted and on real wrong labels (looked at): only the relabels that
clear the bar of :func:`smartset.clean.trust.automatic_actions` (the out-of-fold model and
a kNN vote on independent features both name the new class, its posterior is at least 0.9,
and the plan estimates at least 2% of the given class wrong; planted noise 2-30%: precision
0.89-1.0; MNIST's own labels, where wrong labels are rare: nothing, where applying every
proposal changed 13 of 15 judged digits that were right). Never an exclude (0.13-0.64
precision on planted noise) or a multi-label. A round whose actions touch a class the plan's
``trust`` section calls weak (:func:`smartset.clean.trust.assess_trust`) is refused with
:class:`PlanError` unless ``force``; the plan stays for a person. Applied actions are never
on a sample a person has reviewed in the review app (a decision, ``accept`` included, that
was not undone). Classes to merge, duplicates, ambiguous and atypical images stay in each
round's plan for a person to decide. Every round's plan is kept, each application is a
``clean apply`` run that :func:`undo_apply` reverts, and each round is a new version;
nothing is deleted.

Where the model's own mistakes are systematic they look like wrong labels: on the 741
pistol/smartphone photos (a small CNN, out-of-fold accuracy 0.93) a plan whose neighbours
came from the model's own features proposed 23 relabels, all of them the model's errors
(looked at: revolvers and product shots, phones edge-on, and 3 images of neither class).
The trust section calls both classes weak there (the backbone's neighbours back 0 of them),
so a round refuses; forced, the bar applies none of them.
"""

from __future__ import annotations

from collections import Counter

from smartset.clean.plan import PlanError, apply_plan, make_plan
from smartset.clean.trust import automatic_actions, weak_classes_touched

__all__ = ["clean_rounds", "ROUND_DETECTOR"]

#: the plan actions a round applies: the consensus's label actions (see :func:`label_actions`)
ROUND_DETECTOR = "consensus"


def clean_rounds(ws, version: str | None = None, *, rounds: int = 2, name: str = "cleaned",
                 augment: str | None = "translation-rotation", model: str = "small_cnn",
                 epochs: int = 8, folds: int = 5, size=None, mode: str | None = None,
                 seed: int = 0, min_relabel_posterior: float = 0.6,
                 min_apply_posterior: float | None = None, force: bool = False,
                 author: str | None = None, progress: bool | None = None,
                 on_round=None, **options) -> dict:
    """Run ``rounds`` rounds of predict --oof -> plan -> apply the label actions.

    Parameters
    ----------
    version : the version to start from (default: the live catalog).
    rounds : at most this many rounds; it stops early when a round proposes no label action.
    name : the final version's name; earlier rounds make ``NAME-round1``, ``NAME-round2``...
        None of these may exist yet (checked before any training).
    augment : online augmentation of the fold models (a policy name or file; None: none).
    model, epochs, folds, size, mode, seed, options : as :func:`smartset.learn.predict_oof`
        (round ``r`` uses ``seed + r - 1``, so its folds differ from the last round's).
    min_relabel_posterior : as :func:`make_plan`.
    min_apply_posterior : the posterior a relabel needs to be applied (default
        :data:`smartset.clean.trust.APPLY_POSTERIOR`); see
        :func:`smartset.clean.trust.automatic_actions` for the whole bar.
    force : apply even where the plan's trust section says the model is weak for a class
        the actions touch (the evidence bar still holds). Without it such a round raises
        :class:`PlanError`, naming the classes and their numbers; its plan stays for a person.
    on_round : called with each round's record as it finishes (progress for a CLI).

    Returns ``version`` (the final one) and ``rounds``: per round its ``version_in``,
    ``predict_run``, ``oof_accuracy``, ``plan_run``, ``plan``, ``applied`` (count per
    action), ``kept_as_reviewed`` (actions that cleared the bar but were not applied
    because a person reviewed the sample), ``held_back`` (label actions below the evidence
    bar, counted by why), ``weak_classes`` and ``forced``, ``apply_run``, ``version`` and
    ``n_samples``.
    """
    from smartset.learn._workspace import predict_oof
    from smartset.events import reviewed_samples

    if not isinstance(rounds, int) or rounds < 1:
        raise PlanError(f"rounds must be a positive integer, got {rounds!r}.")
    if not name or not isinstance(name, str):
        raise PlanError("name must be a non-empty version name.")
    from smartset._names import check_name

    for candidate in (name, f"{name}-round{rounds}"):  # before any training round
        check_name(candidate, "version name", example="cleaned")
    existing = set(ws.versions()["name"])
    wanted = [f"{name}-round{r}" for r in range(1, rounds)] + [name]
    taken = sorted(set(wanted) & existing)
    if taken:
        raise PlanError(f"Version(s) {', '.join(map(repr, taken))} exist already; versions are "
                        f"immutable, so choose another --name.")
    if version is not None and version not in existing:
        raise PlanError(f"No version {version!r}: see 'smartset version list'.")
    if augment is not None:
        from smartset.augment import resolve_policy

        resolve_policy(augment)  # an unknown policy fails here, not after the first fold
    current, records = version, []
    for r in range(1, rounds + 1):
        predicted = predict_oof(ws, current, model=model, folds=folds, size=size, mode=mode,
                                seed=seed + r - 1, epochs=epochs, augment=augment,
                                progress=progress, **options)
        plan = make_plan(ws, version=current, run=predicted["run_id"],
                         min_relabel_posterior=min_relabel_posterior, author=author)
        proposed = [a for a in plan["actions"] if a["detector"] == ROUND_DETECTOR]
        weak = weak_classes_touched(plan.get("trust"), proposed)
        if weak and not force:
            raise PlanError(_refusal(plan, weak, r, records))
        cleared, held = automatic_actions(plan, min_apply_posterior=min_apply_posterior,
                                          force=force)
        decided = reviewed_samples(ws.catalog, [a["sample_id"] for a in proposed])
        chosen = [a for a in cleared if a["sample_id"] not in decided]
        last = r == rounds or not chosen
        target = name if last else f"{name}-round{r}"
        applied = apply_plan(ws, plan, only=[a["id"] for a in chosen], version=target,
                             author=author)
        counts = dict(Counter(a["action"] for a in chosen if a["id"] in applied["applied"]))
        record = {"round": r, "version_in": current, "predict_run": predicted["run_id"],
                  "oof_accuracy": predicted["oof"]["accuracy"], "plan_run": plan["run_id"],
                  "plan": plan["path"], "applied": counts,
                  "kept_as_reviewed": len(cleared) - len(chosen),
                  "held_back": dict(Counter(held.values())),
                  "weak_classes": sorted(weak), "forced": bool(weak and force),
                  "apply_run": applied["run_id"],
                  "version": applied["version"], "n_samples": applied["n_samples"]}
        records.append(record)
        if on_round is not None:
            on_round(record)
        current = target
        if last:
            break
    return {"version": current, "rounds": records}


def _refusal(plan: dict, weak: dict[str, int], round_number: int, records: list) -> str:
    """The one-line refusal: which weak classes the round's actions touch, their numbers,
    what was kept, and the flag that forces it."""
    trust = plan["trust"]
    parts = []
    for name, count in sorted(weak.items()):
        row = trust["classes"][name]
        parts.append(f"'{name}' ({count} action(s); {'; '.join(row['why'])})")
    kept = (f" Round(s) before it stay applied (version {records[-1]['version']!r})."
            if records else " Nothing was applied.")
    return (f"Round {round_number} refused: the plan is weak for class(es) "
            f"{', '.join(parts)}, so the model's suggestions there cannot be checked and may "
            f"be its own errors (second view: {trust['second_view']['description']}).{kept} "
            f"Review the plan "
            f"{plan['path']} (smartset review, queue 'suspicious'), or rerun with --force "
            f"to apply what clears the evidence bar anyway.")
