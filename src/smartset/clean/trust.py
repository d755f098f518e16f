"""How far to trust a cleaning plan: per class, how good the out-of-fold model is and how
often a second, independent view agrees with it; and which of the plan's actions carry
enough evidence to be applied without a person.

A plan's suggestions come from the out-of-fold model. Where the model is wrong in a
systematic way (revolvers a small CNN calls "smartphone"), its errors look exactly like
wrong labels, with scores near 1, and nothing in the plan itself says so. So every plan
carries a ``trust`` section:

- per class (the given labels): ``n``, the model's out-of-fold ``recall`` (share of the
  class's samples whose argmax is the class) and ``precision`` with their counts;
- the ``agreement`` of two views per class: the share of the class's samples on which the
  model's argmax equals the argmax of a kNN vote on *independent* features (a pretrained
  backbone's embeddings on photos, the pixels on digits). It does not fall with label
  noise: on a wrong label both views name the true class and still agree, whereas the
  recall against the given labels drops by the noise rate. It falls where either view is
  weak, which is what the plan has to be warned about;
- a ``verdict`` per class, ``trusted`` or ``weak``, from :data:`THRESHOLDS` (the values
  and why are in ``benchmarks/clean_trust.py``): a class is weak when it has fewer than
  ``min_count`` samples, when the views agree on less than ``min_agreement`` of them, when
  the model's recall is below ``min_recall`` (a floor well under any realistic noise
  rate: below it the model does not know the class, whatever the noise), or when of its
  flagged labels (at least ``min_flagged``) the independent view names the model's
  suggested class for fewer than ``min_flagged_backed`` (on the 741 photos, a small CNN's
  23 suggestions: 0 backed by the backbone's neighbours, and all 23 the model's errors,
  looked at; overall agreement there was 0.92-0.94, so this is the check that fires).

:func:`automatic_actions` is the bar ``smartset clean rounds`` applies: a ``relabel`` only
where both views name the suggested class, its posterior is at least
:data:`APPLY_POSTERIOR` (0.9), both the given and the suggested class are trusted, and the
plan estimates at least :data:`MIN_NOISE_RATE` (2%) of the given class wrong; never an
``exclude`` or a ``multi_label``. Everything else stays in the plan for a person. The
measurements behind each number are in ``benchmarks/clean_trust.py``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["THRESHOLDS", "APPLY_POSTERIOR", "MIN_NOISE_RATE", "assess_trust", "automatic_actions",
           "estimated_by_class", "short_reason", "view_evidence", "weak_classes_touched", "warning_lines"]

#: the per-class verdict's thresholds (see the module notes and benchmarks/clean_trust.py)
THRESHOLDS = {"min_agreement": 0.85, "min_recall": 0.5, "min_count": 10,
              "min_flagged_backed": 0.5, "min_flagged": 5}
#: the posterior of the suggested class a relabel needs to be applied automatically
APPLY_POSTERIOR = 0.9
#: the estimated share of wrong labels a class needs before its relabels are applied
#: automatically: where wrong labels are rare, the few suggestions that clear the evidence
#: bar are mostly unusual but right samples (MNIST's own labels, an estimated 0.24% wrong:
#: 2 of the 8 judged relabels that cleared it were right; planted noise, 2% and up: >= 0.9)
MIN_NOISE_RATE = 0.02


def _rate(hits: int, n: int) -> float | None:
    return None if n == 0 else round(hits / n, 4)


def assess_trust(labels: np.ndarray, model_probs: np.ndarray, view_probs: np.ndarray | None,
                 *, classes: list[str], view: dict, flagged: np.ndarray | None = None,
                 suggested: np.ndarray | None = None, estimated_wrong=None,
                 thresholds: dict | None = None) -> dict:
    """The plan's ``trust`` section.

    Parameters
    ----------
    labels : (n,) int given class indices.
    model_probs : (n, k) the out-of-fold model's probabilities.
    view_probs : (n, k) or None, the kNN posterior on independent features (the second
        view); None when there are none: every class is then weak (nothing checks the
        model).
    classes : class names, by index.
    view : what the second view is: ``source``, ``description``, ``independent`` (why it
        is independent of the model).
    flagged, suggested : (n,) the consensus's flags and suggested classes, for the
        agreement on the flagged items.
    estimated_wrong : (k,) the consensus's estimated number of wrong labels per given
        class (its noise estimate), kept as ``estimated_wrong`` and ``noise_rate``: what
        :func:`automatic_actions` compares with :data:`MIN_NOISE_RATE`.
    thresholds : overrides of :data:`THRESHOLDS`.

    Returns ``{"thresholds", "second_view", "overall", "classes": {name: {...}},
    "flagged", "weak"}``; each class has ``n``, ``recall`` (``correct`` of ``n``),
    ``precision`` (of ``n_predicted``), ``agreement`` (``agree`` of ``n``), ``verdict`` and
    ``why`` (the failed checks, as text).
    """
    limits = {**THRESHOLDS, **(thresholds or {})}
    labels = np.asarray(labels, dtype=np.int64)
    model = np.asarray(model_probs).argmax(axis=1)
    other = None if view_probs is None else np.asarray(view_probs).argmax(axis=1)
    out_classes: dict[str, dict] = {}
    weak = []
    backed_all = None
    if flagged is not None and suggested is not None and other is not None:
        backed_all = np.asarray(flagged, bool) & (other == np.asarray(suggested))
    for c, name in enumerate(classes):
        mine = labels == c
        n = int(mine.sum())
        correct = int((model[mine] == c).sum())
        predicted = int((model == c).sum())
        right = int(((model == c) & mine).sum())
        agree = None if other is None else int((model[mine] == other[mine]).sum())
        row = {"n": n, "correct": correct, "recall": _rate(correct, n),
               "n_predicted": predicted, "precision": _rate(right, predicted),
               "agree": agree, "agreement": None if agree is None else _rate(agree, n)}
        why = []
        if n < limits["min_count"]:
            why.append(f"only {n} sample(s) (< {limits['min_count']})")
        if other is None:
            why.append("no independent view to check the model against")
        elif view.get("reliable") is False:
            why.append(f"the second view ({view.get('description')}) cannot vouch for the "
                       f"model here: {view.get('independent')}")
        elif n and agree / n < limits["min_agreement"]:
            why.append(f"the two views agree on {agree / n:.0%} ({agree} of {n}; "
                       f"< {limits['min_agreement']:.0%})")
        if n and correct / n < limits["min_recall"]:
            why.append(f"out-of-fold recall {correct / n:.0%} ({correct} of {n}; "
                       f"< {limits['min_recall']:.0%})")
        if backed_all is not None:
            n_flagged = int((np.asarray(flagged, bool) & mine).sum())
            backed = int((backed_all & mine).sum())
            row.update(flagged=n_flagged, flagged_backed=backed)
            if (n_flagged >= limits["min_flagged"]
                    and backed < limits["min_flagged_backed"] * n_flagged):
                why.append(f"the independent view backs the model's suggestion for only "
                           f"{backed} of its {n_flagged} flagged labels (< "
                           f"{limits['min_flagged_backed']:.0%}): they look like the model's "
                           f"own errors")
        if estimated_wrong is not None:
            wrong = float(estimated_wrong[c])
            row.update(estimated_wrong=round(wrong, 1),
                       noise_rate=None if n == 0 else round(wrong / n, 4))
        row.update(verdict="weak" if why else "trusted", why=why)
        if why:
            weak.append(name)
        out_classes[name] = row
    n_all = len(labels)
    overall = {"n": n_all, "accuracy": _rate(int((model == labels).sum()), n_all),
               "agreement": None if other is None else _rate(int((model == other).sum()),
                                                             n_all)}
    flagged_info = None
    if flagged is not None and suggested is not None:
        rows = np.flatnonzero(flagged)
        both = (0 if other is None else
                int(((model[rows] == suggested[rows]) & (other[rows] == suggested[rows])).sum()))
        flagged_info = {"n": int(len(rows)), "views_agree_on_suggestion": both,
                        "rate": _rate(both, len(rows)),
                        "model_says_suggestion": int((model[rows] == suggested[rows]).sum()),
                        "view_says_suggestion": None if other is None else
                        int((other[rows] == suggested[rows]).sum())}
    return {"thresholds": limits, "apply_posterior": APPLY_POSTERIOR,
            "min_noise_rate": MIN_NOISE_RATE, "second_view": view,
            "overall": overall, "classes": out_classes, "flagged": flagged_info,
            "weak": weak}


def estimated_by_class(labels: np.ndarray, found, n_classes: int) -> np.ndarray:
    """``(k,)`` the consensus ``found``'s estimated wrong labels per given class: its
    per-class counts when the noise was class-conditional, else the global estimate spread
    over the classes by size."""
    counts = (found.params or {}).get("class_counts")
    if counts is not None:
        return np.asarray(counts, dtype=np.float64)
    sizes = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return found.n_estimated * sizes / max(len(labels), 1)


def view_evidence(label: int, suggested: int, model_probs_row: np.ndarray,
                  view_probs_row: np.ndarray | None) -> dict:
    """What the two views say about one sample (given class ``label``, suggested class
    ``suggested``): the keys each label action's evidence carries and
    :func:`automatic_actions` reads."""
    top = int(np.argmax(model_probs_row))
    ev = {"model_says_suggested": top == suggested, "model_rejects_label": top != label}
    if view_probs_row is not None:
        other = int(np.argmax(view_probs_row))
        ev.update(view_p_label=round(float(view_probs_row[label]), 4),
                  view_p_suggested=round(float(view_probs_row[suggested]), 4),
                  view_says_suggested=other == suggested, view_rejects_label=other != label)
    return ev


def short_reason(row: dict, thresholds: dict) -> str:
    """A few words on why a class row of the trust section is weak (for a header)."""
    parts = []
    if row.get("agreement") is not None and row["agreement"] < thresholds["min_agreement"]:
        parts.append(f"views agree {row['agreement']:.0%}")
    if row.get("recall") is not None and row["recall"] < thresholds["min_recall"]:
        parts.append(f"recall {row['recall']:.0%}")
    if (row.get("flagged", 0) >= thresholds.get("min_flagged", 5)
            and row.get("flagged_backed", 0) < thresholds.get("min_flagged_backed", 0.5)
            * row["flagged"]):
        parts.append(f"view backs {row['flagged_backed']} of {row['flagged']} flagged")
    return ", ".join(parts) or "; ".join(row.get("why", [])) or "weak"


def warning_lines(trust: dict | None) -> list[str]:
    """One line per weak class, for the command line."""
    if not trust:
        return []
    lines = []
    for name in trust.get("weak", []):
        row = trust["classes"][name]
        lines.append(f"WARNING: class '{name}' is weak: {'; '.join(row['why'])}. The plan's "
                     f"suggestions there cannot be checked and may be the model's own "
                     f"errors: review them (smartset review, queue 'suspicious') rather than "
                     f"apply them.")
    return lines


def _classes_of(action: dict) -> list[str]:
    ev = action.get("evidence") or {}
    touched = [ev.get("label")]
    if action.get("action") == "relabel":
        touched.append(action.get("value"))
    elif action.get("action") == "multi_label":
        touched += list(action.get("value") or [])
    return [c for c in touched if c is not None]


def weak_classes_touched(trust: dict | None, actions: list[dict]) -> dict[str, int]:
    """``{class: number of actions}`` for the weak classes that ``actions`` touch (the
    given label, and the new label of a relabel / multi-label)."""
    weak = set((trust or {}).get("weak", []))
    touched: dict[str, int] = {}
    for action in actions:
        for name in set(_classes_of(action)):
            if name in weak:
                touched[name] = touched.get(name, 0) + 1
    return touched


def automatic_actions(plan: dict, *, min_apply_posterior: float | None = None,
                      min_noise_rate: float | None = None,
                      force: bool = False) -> tuple[list[dict], dict[str, str]]:
    """Split the plan's consensus label actions into those whose evidence clears the bar
    for applying them without a person, and the rest (``{action id: why not}``).

    The bar (module notes; measured in ``benchmarks/clean_trust.py``): a ``relabel`` where
    the model and the independent view both name the suggested class, its posterior is at
    least ``min_apply_posterior`` (default the plan's ``trust.apply_posterior``,
    :data:`APPLY_POSTERIOR`), both classes are trusted, and the plan estimates at least
    ``min_noise_rate`` (:data:`MIN_NOISE_RATE`) of the given class's labels wrong. Never an
    ``exclude`` or a ``multi_label``: an exclude says no class convinces, and of those
    proposed on planted noise only 0.58-0.64 were wrong labels. ``force`` drops the
    class-trust condition only (the evidence bar stays).
    """
    trust = plan.get("trust") or {}
    bar = (trust.get("apply_posterior", APPLY_POSTERIOR) if min_apply_posterior is None
           else float(min_apply_posterior))
    floor = (trust.get("min_noise_rate", MIN_NOISE_RATE) if min_noise_rate is None
             else float(min_noise_rate))
    weak = set() if force else set(trust.get("weak", []))
    rows = trust.get("classes") or {}
    chosen, held = [], {}
    for action in plan["actions"]:
        if action.get("detector") != "consensus":
            continue
        ev = action.get("evidence") or {}
        kind = action["action"]
        weak_here = sorted(set(_classes_of(action)) & weak)
        rate = (rows.get(ev.get("label")) or {}).get("noise_rate")
        if kind != "relabel":
            held[action["id"]] = f"{kind}: for a person"
        elif "view_p_label" not in ev:
            held[action["id"]] = "no independent view in the plan"
        elif weak_here:
            held[action["id"]] = f"class(es) {', '.join(map(repr, weak_here))} weak"
        elif not (ev.get("model_says_suggested") and ev.get("view_says_suggested")):
            held[action["id"]] = "the two views do not both name the suggested class"
        elif ev["posterior_suggested"] < bar:
            held[action["id"]] = (f"posterior of the suggestion "
                                  f"{ev['posterior_suggested']:.2f} < {bar:.2f}")
        elif rate is not None and rate < floor:
            held[action["id"]] = (f"few wrong labels estimated in '{ev.get('label')}' "
                                  f"({rate:.1%} < {floor:.0%}): the suggestion is as likely "
                                  f"an unusual but right sample")
        else:
            chosen.append(action)
    return chosen, held
