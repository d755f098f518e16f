"""Images that fit their class poorly: far from the class's other images in the embedding.

A wrong label between the classes offered (a 7 filed as 1) is what the consensus finds: the
model and the neighbours point at another class. An image that belongs to *none* of the
classes does not look like that. A rifle filed as "pistol" in a pistol/smartphone set is
still closer to the pistols than to the phones, so the model, the neighbours and the
consensus all support "pistol", only less firmly. What gives it away is distance: on
features that know what objects look like (a pretrained backbone's embeddings), it lies far
from the centre of the pistols, further than the pistols do.

The measure, per class (and per group, when the features are out-of-fold and so comparable
only within a fold): the cosine similarity of each member to the mean of the class's
*other* members (leave one out, so a member does not pull the centre towards itself), and
its robust z-score within the class, ``(median - similarity) / (1.4826 * MAD)``. A class
whose images vary a lot (phones from every angle, in hands) gets a wide spread, a tight
class a narrow one, so one cut works for both. ``is_atypical`` holds the members at or
beyond ``max_z`` (3.5, Iglewicz and Hoaglin's cut-off for the modified z-score).

What it finds, measured on the 741 pistol/smartphone photos with EfficientNet-Lite0
embeddings (every image looked at): at 3.5, 32 photos, 22 of them long guns, a grenade
and a wooden toy filed as "pistol"; 15 of the 20 most atypical. What it also finds: atypical
photos of the class (a revolver on a printed box, a phone seen edge-on), which is why the
plan proposes ``exclude`` for a person to confirm, and ``clean rounds`` never applies it.
On pixel embeddings "far from its class" is mostly "unusual lighting or background", so
trust it where the features are a pretrained backbone's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartset.clean._validation import (CleanInputError, check_features, check_groups,
                                        check_labels)

__all__ = ["Atypical", "find_atypical", "MIN_CLASS_SIZE"]

#: classes (within a group) smaller than this are not scored: a median and a MAD of a
#: handful of similarities say little
MIN_CLASS_SIZE = 8


@dataclass
class Atypical:
    """Arrays over the ``n`` samples: ``is_atypical`` (bool), ``score`` (the robust z-score
    of the similarity to the class centre, higher = further than the class's own members
    are; 0 where the class was too small to score), ``similarity`` (cosine similarity to
    the centre of the other members of its class), ``typical`` (the class's median
    similarity, per sample), and ``max_z`` the cut used."""

    is_atypical: np.ndarray
    score: np.ndarray
    similarity: np.ndarray
    typical: np.ndarray
    max_z: float

    def ranked(self) -> np.ndarray:
        """Indices of the atypical samples, most atypical first."""
        found = np.flatnonzero(self.is_atypical)
        return found[np.argsort(-self.score[found], kind="stable")]


def find_atypical(labels: np.ndarray, features: np.ndarray, *,
                  groups: np.ndarray | None = None, max_z: float = 3.5,
                  min_class_size: int = MIN_CLASS_SIZE) -> Atypical:
    """Find labeled samples that lie far from the other members of their class.

    Parameters
    ----------
    labels : (n,) int
        Given class indices.
    features : (n, d) float
        Embeddings (rows are L2-normalised here: the measure is cosine similarity).
        A pretrained backbone's embeddings make the measure mean "shows something else";
        on pixel embeddings it means "looks unusual".
    groups : (n,) optional
        Score within each group only (the folds, with out-of-fold features).
    max_z : float
        Robust z-score at or beyond which a sample is atypical (default 3.5).
    min_class_size : int
        Classes (within a group) with fewer members are not scored (their score is 0).
    """
    labels = check_labels(labels)
    features = check_features(features, len(labels))
    groups = check_groups(groups, len(labels))
    if not np.isfinite(max_z) or max_z <= 0:
        raise CleanInputError(f"max_z must be a positive number, got {max_z!r}.")
    n = len(labels)
    data = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    data = data / np.where(norms > 0, norms, 1.0)
    similarity = np.zeros(n)
    typical = np.zeros(n)
    score = np.zeros(n)
    group_of = np.zeros(n, dtype=np.int64) if groups is None else groups
    for group in np.unique(group_of):
        for cls in np.unique(labels[group_of == group]):
            members = np.flatnonzero((group_of == group) & (labels == cls))
            if len(members) < max(int(min_class_size), 3):
                continue
            total = data[members].sum(axis=0)
            centres = total[None, :] - data[members]          # leave-one-out centres
            lengths = np.linalg.norm(centres, axis=1)
            sims = np.einsum("ij,ij->i", data[members], centres) / np.maximum(lengths, 1e-12)
            median = float(np.median(sims))
            spread = 1.4826 * float(np.median(np.abs(sims - median)))
            spread = max(spread, 1e-3)  # near-identical members: no z-score blow-up
            similarity[members] = sims
            typical[members] = median
            score[members] = (median - sims) / spread
    return Atypical(is_atypical=score >= max_z, score=score, similarity=similarity,
                    typical=typical, max_z=float(max_z))
