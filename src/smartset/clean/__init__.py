"""Cleaning: find, rank and explain wrong labels, ambiguous images, classes to merge; reduce
and rebalance; a reversible cleaning plan. A person (or an explicit policy) decides.

Array functions first, over ``labels`` (int class indices), ``pred_probs`` (out-of-fold
probabilities) and ``features`` (embeddings):

- :func:`find_label_issues` (one entry point, ``method=`` a registered detector) and
  :func:`consensus` (ranking, suggested labels, evidence);
- :func:`confident_learning` and its parts (:func:`confident_joint`, ...);
- kNN editing filters :func:`edited_nearest_neighbours`, :func:`repeated_edited_nearest_neighbours`,
  :func:`all_knn`, and :func:`knn_posterior`;
- :func:`find_ambiguous`, :func:`find_classes_to_merge`, :func:`find_atypical` (images far
  from their class: on a pretrained backbone's embeddings, mostly images of none of the
  classes);
- prototype selection :func:`condensed_nearest_neighbour`,
  :func:`fast_condensed_nearest_neighbour`, :func:`reduction_curve`;
- multi-label data: :func:`find_multilabel_issues` (missing and extra tags, per-class
  confident learning; :data:`MULTILABEL_DETECTORS` says which detectors apply);
  :func:`make_tag_plan` over a workspace (``smartset clean --multi-label``: a plan of
  ``add_tag`` / ``remove_tag`` items);
- imbalance :func:`imbalance_report`, :func:`class_weights`, :func:`undersample`,
  :func:`oversample`.

Over a workspace: :func:`make_plan` (its label actions: :func:`label_actions`), :func:`load_plan`, :func:`apply_plan`,
:func:`undo_apply`; :func:`clean_rounds` (predict -> plan -> apply the label actions, in
rounds, applying only the actions that clear the evidence bar of :func:`automatic_actions`
and refusing where a plan's ``trust`` section (:func:`assess_trust`) calls a class weak);
:func:`ranking` (every labeled sample on one 0-1 score, with files) and
:func:`atypical_list`; the CLI is ``smartset clean``.
"""

from smartset.clean._validation import CleanInputError, CleanWarning, InSampleWarning
from smartset.clean.ambiguity import Ambiguity, find_ambiguous
from smartset.clean.atypical import Atypical, find_atypical
from smartset.clean.confident import (confident_joint, confident_learning, confident_thresholds,
                                      label_quality, noise_matrix, num_label_issues)
from smartset.clean.consensus import (DETECTORS, Consensus, available_detectors,
                                      class_conditional, consensus, estimate_noise_count,
                                      find_label_issues, noise_corrected, register_detector)
from smartset.clean.imbalance import (class_weights, imbalance_report, oversample,
                                      oversampling_copies, oversampling_counts,
                                      per_sample_copies, undersample)
from smartset.clean.knn_filters import (all_knn, edited_nearest_neighbours, knn_posterior,
                                        repeated_edited_nearest_neighbours)
from smartset.clean.merge import class_confusion, find_classes_to_merge
from smartset.clean.multilabel import (MULTILABEL_DETECTORS, MultiLabelIssues,
                                       check_multilabel_detector, find_multilabel_issues,
                                       find_tag_issues, make_tag_plan)
from smartset.clean.plan import (ACTIONS, PLAN_FORMAT, PlanError, apply_plan, label_actions,
                                 load_plan, looks_like_photos, make_plan, undo_apply,
                                 workspace_inputs)
from smartset.clean.reduction import (condensed_nearest_neighbour,
                                      fast_condensed_nearest_neighbour, reduction_curve,
                                      stratified_subset)
from smartset.clean.ranking import atypical_list, ranking
from smartset.clean.rounds import clean_rounds
from smartset.clean.trust import assess_trust, automatic_actions, weak_classes_touched

__all__ = [
    "find_label_issues", "consensus", "Consensus", "estimate_noise_count", "noise_corrected",
    "class_conditional", "DETECTORS",
    "register_detector", "available_detectors",
    "confident_learning", "confident_joint", "confident_thresholds", "noise_matrix",
    "num_label_issues", "label_quality",
    "edited_nearest_neighbours", "repeated_edited_nearest_neighbours", "all_knn",
    "knn_posterior",
    "find_ambiguous", "Ambiguity", "find_classes_to_merge", "class_confusion",
    "find_atypical", "Atypical", "looks_like_photos",
    "condensed_nearest_neighbour", "fast_condensed_nearest_neighbour", "reduction_curve",
    "stratified_subset",
    "imbalance_report", "class_weights", "oversampling_copies", "oversampling_counts",
    "per_sample_copies", "undersample", "oversample",
    "assess_trust", "automatic_actions", "weak_classes_touched", "ranking", "atypical_list",
    "label_actions", "make_plan", "clean_rounds", "load_plan", "apply_plan", "undo_apply", "workspace_inputs", "PLAN_FORMAT",
    "ACTIONS", "PlanError",
    "CleanInputError", "CleanWarning", "InSampleWarning",
    "find_multilabel_issues", "MultiLabelIssues", "MULTILABEL_DETECTORS",
    "check_multilabel_detector", "find_tag_issues", "make_tag_plan",
]
