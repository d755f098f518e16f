"""Audit: a data-quality report over a data set version.

:func:`audit` measures every image once (cached by content fingerprint, so a re-run only
measures new or changed files), then finds: unreadable files, too dark, too bright, blurry,
low information, odd size, odd aspect ratio, grayscale among colour, exact and near
duplicates (within a class, across classes, across splits), outliers, class outliers,
class imbalance, and properties that alone predict the label (bias probes). Findings are
stored in the catalog and written as a self-contained HTML report and a JSON file.

Checks live in a registry (:data:`smartset.audit.checks.CHECKS`); add one with
:func:`smartset.audit.checks.register_check`.
"""

from smartset.audit._run import AuditResult, audit, embeddings
from smartset.audit.bias import bias_probe
from smartset.audit.checks import CHECKS, Check, register_check
from smartset.audit.properties import PROPERTIES, compute_properties
from smartset.audit.store import duplicate_sets, findings, reference_run

__all__ = ["audit", "AuditResult", "embeddings", "bias_probe", "CHECKS", "Check", "register_check",
           "PROPERTIES", "compute_properties", "findings", "duplicate_sets", "reference_run"]
