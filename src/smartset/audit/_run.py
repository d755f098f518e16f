"""The audit run: one job, its phases in order, each owning its state and scratch files:
measuring (:mod:`smartset.audit.measure_phase`: properties cached by content, the record
file, the per-sample arrays), checks and bias probes (here), neighbours
(:mod:`smartset.audit.neighbour_phase`: near copies, outliers, far from class), and the
report (:mod:`smartset.audit.report`). Findings go to the catalog as they are found
(:mod:`smartset.audit.store`)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._memory import give_back_memory, return_large_blocks
from smartset._progress import next_phase, progress_bar, progress_job
from smartset.audit._columns import ColumnStore
from smartset.audit.bias import PROBED_PROPERTIES, bias_probe, error_probe
from smartset.audit.checks import run_checks
from smartset.audit.features import plan_features
from smartset.audit.neighbour_phase import model_source, neighbour_findings
from smartset.audit.properties import compute_properties
from smartset.engine import Engine, get_engine
from smartset.errors import EmptyDataError
from smartset.audit.measure_phase import (  # the measuring phase; _TABLE for older readers
    _TABLE, _RecordFile, _Samples, _check_columns, _embedding_file, _encode,  # noqa: F401
    _exact_duplicate_pairs, _label_series, _load_properties, _properties_frame, _todo_batches,
    _todo_mask, _vector_file, embeddings, store_batch)
from smartset.audit.store import run_findings, write_findings

__all__ = ["AuditResult", "audit", "embeddings"]



@dataclass
class AuditResult:
    """What an audit found. ``findings`` has one row per (kind, sample) with ``kind``,
    ``sample_id`` (None for data-set-level findings), ``score``, ``threshold``,
    ``reason`` and ``group``; ``properties`` one row per audited sample: its catalog
    columns, properties and derived columns. Both are read from the catalog when first
    asked for (the audit writes its findings as it goes and keeps typed arrays), so an
    audit that nobody asks them of never holds them."""

    run_id: int
    version: str | None
    _findings: pd.DataFrame | Callable[[], pd.DataFrame]
    _properties: pd.DataFrame | Callable[[], pd.DataFrame]
    thresholds: dict
    bias: pd.DataFrame
    _duplicate_groups: list[dict] | Callable[[], list[dict]]
    summary: dict
    seconds: float
    computed: int
    report_path: Path | None = None
    json_path: Path | None = None
    skipped: dict = field(default_factory=dict)
    _counts: dict[str, int] | None = None

    @property
    def findings(self) -> pd.DataFrame:
        if callable(self._findings):
            self._findings = self._findings()
        return self._findings

    @property
    def duplicate_groups(self) -> list[dict]:
        """The duplicate sets: ``group``, ``kind``, ``scopes`` and ``members`` (ids)."""
        if callable(self._duplicate_groups):
            self._duplicate_groups = self._duplicate_groups()
        return self._duplicate_groups

    @property
    def properties(self) -> pd.DataFrame:
        if callable(self._properties):
            self._properties = self._properties()
        return self._properties

    def counts(self) -> dict[str, int]:
        """Findings per kind, most frequent first."""
        if self._counts is None:
            self._counts = {str(k): int(v)
                            for k, v in self.findings["kind"].value_counts().items()}
        return dict(self._counts)


def _is_experiment(ws, thresholds, neighbours, near_duplicate_similarity,
                   candidate_similarity, outlier_fence, out_dir) -> bool:
    """An audit that changes a setting, or writes its report outside the workspace."""
    if thresholds or candidate_similarity is not None or neighbours != 10:
        return True
    if near_duplicate_similarity != 0.98 or outlier_fence != 4.0:
        return True
    if out_dir is not None:
        try:
            Path(out_dir).resolve().relative_to(Path(ws.path).resolve())
        except ValueError:
            return True
    return False


def audit(ws, version: str | None = None, *, thresholds: dict[str, float] | None = None,
          neighbours: int = 10, near_duplicate_similarity: float = 0.98,
          candidate_similarity: float | None = None, outlier_fence: float = 4.0,
          engine: str | Engine | None = None, workers: int | None = None,
          show_progress: bool | None = None, report: bool = True,
          out_dir: str | Path | None = None, seed: int = 0,
          embedding_model=None, features: str = "auto",
          reference: bool | None = None, backbone_size: int | None = None) -> AuditResult:
    """Audit the samples of ``version`` (default: the live catalog); see :mod:`smartset.audit`.

    ``features``: what near duplicates, outliers and class outliers read (see
    :mod:`smartset.audit.features`): ``"auto"`` (a pretrained backbone on photos, pixels on
    small gray images and when the backbone is unavailable), ``"pixels"``, or a backbone
    name. Near-duplicate candidates are always verified on pixels. ``candidate_similarity``:
    the least embedding similarity of a candidate (default: per embedding).
    ``embedding_model``: a fitted model whose ``transform(images)`` features replace the
    embedding for outliers and class outliers (its ``input_shape_`` says the size and
    channels it reads): ``smartset.learn.load_model(ws, RUN)`` gives a training run's or a
    checkpoint's (the audit is below learn, so it takes the model, not its run id; the CLI's
    ``--embedding-model RUN`` resolves it). The summary's ``features`` (also in the
    run config, the report and issues.json) says what each check read, and
    ``backbone_size`` the backbone's input side (default
    :data:`smartset.audit.features.AUDIT_BACKBONE_SIZE`). The backbone runs
    in this process (on CUDA when present), or on ``engine`` when one is given.

    ``reference``: whether later stages (learn's splits, clean's duplicate actions, the
    review queues) read this audit's findings. Default: yes, unless it is an experiment: a
    threshold, ``candidate_similarity``, ``near_duplicate_similarity``, ``neighbours`` or
    ``outlier_fence`` changed, or ``out_dir`` outside the workspace; an experiment is
    recorded and reported, and the summary says which audit the other stages keep reading
    (:mod:`smartset.audit.store`).

    Memory follows the per-sample columns only: samples and cached properties are read
    from the catalog in chunks into typed arrays, embeddings stay on disk and are read
    block by block, exact duplicates are grouped by SQL, and the property table is gone
    before the neighbour search (the checks and probes that read it run first).
    """
    started = time.perf_counter()
    if not 0.0 < near_duplicate_similarity <= 1.0:
        raise ValueError(f"near_duplicate_similarity must be in (0, 1], got {near_duplicate_similarity}")
    if candidate_similarity is not None and not -1.0 <= candidate_similarity <= 1.0:
        raise ValueError(f"candidate_similarity must be in [-1, 1], got {candidate_similarity}")
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    return_large_blocks()
    table = _Samples(ws, version, ws.cache_dir / "audit")
    give_back_memory()
    if not len(table):
        table.remove_scratch()
        raise EmptyDataError(
            f"Nothing to audit: {'version ' + repr(version) if version else 'the catalog'} has "
            f"no available samples. Add images with 'smartset ingest', or check "
            f"'smartset issues' for files that could not be ingested.")
    model_name = model_source(embedding_model)
    plan = plan_features(ws, version, features, embedding_model=model_name,
                         backbone_size=backbone_size)
    if reference is None:
        reference = not _is_experiment(ws, thresholds, neighbours, near_duplicate_similarity,
                                       candidate_similarity, outlier_fence, out_dir)
    config = {"version": version, "reference": bool(reference),
              "thresholds": thresholds or {}, "neighbours": neighbours,
              "near_duplicate_similarity": near_duplicate_similarity,
              "candidate_similarity": candidate_similarity, "outlier_fence": outlier_fence,
              "embedding_model": model_name,
              "features": plan.describe()}
    run_id = ws.catalog.start_run("audit", config, seed=seed)
    knn_file, scratch_files = None, []
    writer = _FindingWriter(ws, run_id, version)
    # One bar for the whole audit, its phase named; the units are images measured, with
    # rough weights for the phases after measuring (_PHASE_WEIGHTS).
    with ws.catalog.failing_run(run_id), progress_job("audit", 1, enabled=show_progress) as job:
        try:
            todo = _todo_mask(ws, table)
            table.sha = None  # only needed to find what changed
            n_todo = int(todo.sum())
            job.set_total(n_todo + _AFTER_MEASURING * len(table))
            next_phase("measuring images", n_todo)
            embedding_path = _vector_file(ws)
            results = get_engine(engine, workers=workers).map_batches(
                compute_properties, _todo_batches(ws, version, table, todo))
            errors = []
            with progress_bar(n_todo, "measured") as advance:
                for batch in results:
                    errors.extend(store_batch(ws, batch, embedding_path))
                    advance(len(batch["id"]))
            del todo, results
            give_back_memory()

            scratch = ws.cache_dir / "audit"
            scratch.mkdir(parents=True, exist_ok=True)
            rows_path = scratch / f"properties-run{run_id}.f8"
            scratch_files += [rows_path, scratch / f"columns-run{run_id}.f8"]
            record_rows = _load_properties(ws, table, rows_path)
            failed = table.positions(_encode([sid for sid, _ in errors]))
            record_rows[failed[failed >= 0]] = -1
            audited = np.flatnonzero(record_rows >= 0).astype(table.index_dtype)
            props = _check_columns(table, audited, rows_path, scratch_files[-1])
            rows_path.unlink()
            table.remove_scratch()  # in props now
            record_rows = record_rows[audited]
            check_thresholds = dict(thresholds or {})
            near_given = check_thresholds.pop("near_duplicate", None)
            next_phase("checks and bias probes", _PHASE_WEIGHTS["checks"] * len(table))
            findings, used, skipped = _check_findings(ws, table, audited, props,
                                                      thresholds=check_thresholds, errors=errors)
            writer.extend(findings)
            del findings
            # The probes read the properties; the neighbour stages do not: run the probes
            # now, so the property table is gone before the kNN search (their findings and
            # skips are listed last all the same).
            probe_skipped: dict[str, str] = {}
            bias, probe_findings = _probe_findings(ws, table, audited, props, seed=seed,
                                                   skipped=probe_skipped)
            props.remove()
            del props
            give_back_memory()
            knn_file = _embedding_file(ws, record_rows, run_id) if len(audited) else None
            give_back_memory()
            vectors = _RecordFile(embedding_path)

            def thumbs(positions: np.ndarray) -> np.ndarray:
                return vectors.thumbs(record_rows[positions])

            next_phase("neighbours", _PHASE_WEIGHTS["neighbours"] * len(table))
            exact_pairs = _exact_duplicate_pairs(ws, table, audited) if len(audited) > 1 else []
            sets, search, used_features = neighbour_findings(
                ws, version, table, audited, knn_file, thumbs, writer, plan=plan, engine=engine,
                exact_pairs=exact_pairs, near_given=near_given,
                neighbours=neighbours, candidate_similarity=candidate_similarity,
                near_duplicate_similarity=near_duplicate_similarity,
                outlier_fence=outlier_fence, embedding_model=embedding_model, used=used,
                skipped=skipped, scratch=scratch)
            writer.extend(probe_findings)
            writer.flush()
            skipped.update(probe_skipped)
            del probe_findings
        finally:
            table.remove_scratch()
            for path in scratch_files + ([knn_file.path] if knn_file is not None else []):
                path.unlink(missing_ok=True)

        audited_ids, n_samples = table.ids(audited), len(table)
        del table
        result = AuditResult(run_id, version, functools.partial(_findings_frame, ws, run_id),
                             functools.partial(_properties_frame, ws, version, audited_ids), used,
                             bias, functools.partial(_duplicate_groups, ws, run_id), {}, 0.0,
                             computed=n_todo, skipped=skipped,
                             _counts=writer.sorted_counts())
        result.summary = {"n_samples": int(n_samples), "n_audited": int(len(audited_ids)),
                          "computed": n_todo, "cached": int(n_samples - n_todo),
                          "findings": result.counts(), "skipped": skipped,
                          "duplicate_groups": {k: sets[k]
                                               for k in ("exact_duplicate", "near_duplicate")},
                          "label_conflicts": sets["label conflict"],
                          "split_leakage": sets["split leakage"], "features": used_features}
        if search is not None and search.approximate:
            result.summary["neighbour_search"] = {"index": search.index,
                                                  "recall_at_k": round(search.recall, 4),
                                                  **search.params}
        result.summary["reference"] = bool(reference)
        if not reference:  # an experiment: the other stages keep reading the reference
            from smartset.audit.store import reference_run

            result.summary["reference_run"] = reference_run(ws)
        if report:
            from smartset.audit.report import write_report

            next_phase("report", _PHASE_WEIGHTS["report"] * n_samples)

            target = Path(out_dir) if out_dir else ws.reports_dir / "audit" / (version or "live")
            result.report_path, result.json_path = write_report(ws, result, target)
        result.seconds = round(time.perf_counter() - started, 3)
    ws.catalog.finish_run(run_id, {**result.summary, "seconds": result.seconds})
    return result


# The audit's bar after measuring, in images' worth of measuring time per image: the
# neighbour phase embeds (when the backbone is not cached) and verifies candidates.
_PHASE_WEIGHTS = {"checks": 0.05, "neighbours": 0.5, "report": 0.1}
_AFTER_MEASURING = sum(_PHASE_WEIGHTS.values())

_FINDING_COLUMNS = ["kind", "sample_id", "score", "threshold", "reason", "group"]


class _FindingWriter:
    """Findings go to the catalog in batches as they are found, so memory holds a batch,
    not every finding of a large data set. They are rows of the audit's run, which stays
    'failed' if the audit stops: readers take the newest finished run."""

    _BATCH = 4096

    def __init__(self, ws, run_id: int, version: str | None):
        self.ws, self.run_id, self.version = ws, run_id, version
        self.pending: list[dict] = []
        self.counts: dict[str, int] = {}

    def add(self, finding: dict) -> None:
        self.pending.append(finding)
        self.counts[finding["kind"]] = self.counts.get(finding["kind"], 0) + 1
        if len(self.pending) >= self._BATCH:
            self.flush()

    def extend(self, findings) -> None:
        for finding in findings:
            self.add(finding)

    def flush(self) -> None:
        if not self.pending:
            return
        with self.ws.catalog.write() as con:
            write_findings(con, ((self.run_id, self.version, f["kind"], f["sample_id"],
                                  _number(f["score"]), _number(f["threshold"]), f["reason"],
                                  f.get("group")) for f in self.pending))
        self.pending = []

    def sorted_counts(self) -> dict[str, int]:
        return dict(sorted(self.counts.items(), key=lambda kv: -kv[1]))


def _number(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)  # NaN: None


def _findings_frame(ws, run_id: int) -> pd.DataFrame:
    """The findings of ``run_id`` in the order they were found."""
    rows = [tuple(r.values()) for r in run_findings(ws, run_id)]
    frame = pd.DataFrame(rows, columns=_FINDING_COLUMNS)
    return frame.astype({"group": object}).where(frame.notna(), None)


def _check_findings(ws, table: _Samples, audited: np.ndarray, props: ColumnStore, *,
                    thresholds, errors) -> tuple[list[dict], dict, dict]:
    """Unreadable files and the per-image checks: ``(findings, used, skipped)``."""
    skipped: dict[str, str] = {}
    findings = [{"kind": "unreadable", "sample_id": sid_, "score": 1.0, "threshold": None,
                 "reason": f"could not be decoded for the audit: {error}"} for sid_, error in errors]
    for issue in ws.issues().itertuples():
        findings.append({"kind": "unreadable", "sample_id": None, "score": 1.0, "threshold": None,
                         "reason": f"{issue.relpath}: {issue.reason} ({issue.detail})",
                         "group": issue.reason})
    check_findings, used = run_checks(props, thresholds)
    # A flat image has no edges, and a tiny one too few pixels to tell: "blurry" would only
    # repeat "low information" or "odd size" there.
    larger = props["larger"].to_numpy()
    explained = {int(f["sample_id"]) for f in check_findings
                 if f["kind"] == "low_information"
                 or (f["kind"] == "odd_size" and not larger[int(f["sample_id"])])}
    for f in check_findings:
        if not (f["kind"] == "blurry" and int(f["sample_id"]) in explained):
            findings.append({**f, "sample_id": table.id(audited[int(f["sample_id"])])})
    for name, info in used.items():
        if "skipped" in info:
            skipped[name] = info["skipped"]
    return findings, used, skipped


def _probe_findings(ws, table: _Samples, audited: np.ndarray, props: ColumnStore, *,
                    seed, skipped: dict) -> tuple[pd.DataFrame, list[dict]]:
    """The bias probes (properties that predict the label) and the error-bias probes
    (properties that predict the model's errors): ``(bias table, findings)``."""
    findings = []
    labels = _label_series(table, audited)
    if labels.notna().sum() >= 10 and labels.dropna().nunique() >= 2:
        bias = bias_probe(props.select(PROBED_PROPERTIES), labels, seed=seed)
        for row in bias[bias["flagged"]].itertuples():
            best = max(row.lift_by_class.items(), key=lambda kv: kv[1], default=None)
            extra = f"; predicts '{best[0]}' {best[1]:.1f}x better than chance" if best else ""
            findings.append({"kind": "bias", "sample_id": None, "score": row.skill,
                             "threshold": 0.2, "group": row.property,
                             "reason": (f"'{row.property}' alone predicts the label: accuracy "
                                        f"{row.accuracy:.2f} vs {row.baseline:.2f} for always "
                                        f"guessing the majority class{extra}")})
    else:
        bias = bias_probe(props.select([]), labels)
        skipped["bias"] = "needs at least 10 labeled images in 2 or more classes"
    del labels
    findings.extend(_error_bias(ws, table, audited, props, skipped))
    return bias, findings


def _duplicate_scopes(reason: str) -> list[str]:
    inner = reason.split(" (", 1)[1]
    return (inner.split(": ", 1)[0] if ": " in inner else inner[:-1]).split(", ")


def _duplicate_groups(ws, run_id: int) -> list[dict]:
    """The duplicate sets of ``run_id``, from its findings: ``group``, ``kind``, ``scopes``
    and ``members``, in the order found."""
    groups: dict[tuple[str, str], dict] = {}
    for row in run_findings(ws, run_id, kinds=("exact_duplicate", "near_duplicate")):
        group = groups.get((row["kind"], row["grp"]))
        if group is None:
            group = groups[(row["kind"], row["grp"])] = {
                "group": row["grp"], "kind": row["kind"],
                "scopes": _duplicate_scopes(row["reason"]), "members": []}
        group["members"].append(row["sample_id"])
    return list(groups.values())


def _error_bias(ws, table: _Samples, audited: np.ndarray, props: ColumnStore,
                skipped: dict) -> list[dict]:
    """Properties that predict the model's out-of-fold errors (when predictions exist)."""
    from smartset.predictions import PredictionsNotFoundError

    try:
        predictions = ws.predictions(kind="oof")
    except PredictionsNotFoundError:
        skipped["error_bias"] = "no out-of-fold predictions yet ('smartset predict --oof')"
        return []
    position = np.full(len(table), -1, dtype=np.int64)
    position[audited] = np.arange(len(audited))
    at = table.positions(_encode(predictions.sample_ids))
    at = np.where(at >= 0, position[at.clip(min=0)], -1)
    correct = np.zeros(len(audited), dtype=bool)
    known = np.zeros(len(audited), dtype=bool)
    found = at >= 0
    correct[at[found]] = (np.asarray(predictions.predicted) == np.asarray(predictions.labels))[found]
    known[at[found]] = True
    if known.sum() < 50:
        skipped["error_bias"] = "fewer than 50 audited samples have out-of-fold predictions"
        return []
    table_ = error_probe(props.select(PROBED_PROPERTIES),
                         np.where(known, correct, np.nan))  # NaN: no prediction, left out
    findings = []
    for row in table_[table_["flagged"]].itertuples():
        findings.append({
            "kind": "error_bias", "sample_id": None, "score": row.ratio, "threshold": 2.0,
            "group": row.property,
            "reason": (f"'{row.property}' between {row.low:.3g} and {row.high:.3g}: the model "
                       f"(run {predictions.run_id}, out-of-fold) is wrong on {row.error_rate:.1%}"
                       f" of {row.n} images vs {row.overall:.1%} overall ({row.ratio:.1f}x)")})
    return findings
