"""Ingest: folders per class, labels in file names, CSV/TSV tables, NumPy archives, unlabeled
folders. See :meth:`smartset.Workspace.ingest`."""

from smartset.ingest._run import IngestReport, add_derived, ingest, sample_id
from smartset.ingest._sources import FILENAME_PRESETS, LAYOUTS, SPLITS, detect_layout

__all__ = ["IngestReport", "ingest", "add_derived", "sample_id", "detect_layout", "FILENAME_PRESETS",
           "LAYOUTS", "SPLITS"]
