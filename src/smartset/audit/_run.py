"""The audit run: properties (incremental, cached by fingerprint), checks, duplicates,
outliers, imbalance and bias probes over a version, stored in the catalog."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._progress import progress_bar
from smartset.audit.bias import PROBED_PROPERTIES, bias_probe, error_probe
from smartset.audit.checks import add_derived_properties, robust_fence, run_checks
from smartset.audit.neighbours import group_pairs, knn, near_duplicate_pairs
from smartset.audit.properties import (EMBEDDING_DIM, PROPERTIES, PROPERTIES_VERSION,
                                       RECORD, THUMB_SIDE, compute_properties)
from smartset.catalog import now
from smartset.engine import Engine, batches_of, get_engine
from smartset.errors import EmptyDataError

__all__ = ["AuditResult", "audit", "embeddings"]



@dataclass
class AuditResult:
    """What an audit found. ``findings`` has one row per (kind, sample) with ``kind``,
    ``sample_id`` (None for data-set-level findings), ``score``, ``threshold``,
    ``reason`` and ``group``; ``properties`` one row per sample."""

    run_id: int
    version: str | None
    findings: pd.DataFrame
    properties: pd.DataFrame
    thresholds: dict
    bias: pd.DataFrame
    duplicate_groups: list[dict]
    summary: dict
    seconds: float
    computed: int
    report_path: Path | None = None
    json_path: Path | None = None
    skipped: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.findings["kind"].value_counts().items()}


def _vector_file(ws) -> Path:
    """Embeddings and verification thumbnails, one fixed-size record per measured image."""
    return (ws.cache_dir / "audit" /
            f"vectors-v{PROPERTIES_VERSION}-{EMBEDDING_DIM}-{THUMB_SIDE}.bin")


_TABLE = f"audit_properties_v{PROPERTIES_VERSION}"
_TEXT_PROPERTIES = {"pixel_hash"}


def _ensure_table(con) -> None:
    """The audit's own wide table of per-sample properties, one per properties version: a
    changed definition starts a new table, so no stale value is ever served."""
    columns = ", ".join(f"{name} {'TEXT' if name in _TEXT_PROPERTIES else 'REAL'}"
                        for name in PROPERTIES)
    con.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (sample_id TEXT PRIMARY KEY "
                f"REFERENCES samples(id), sha256 TEXT NOT NULL, embedding_row INTEGER NOT NULL, "
                f"{columns}) WITHOUT ROWID")


def _load_cached(ws, columns: str = "*") -> pd.DataFrame:
    with ws.catalog.read() as con:
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_TABLE,)).fetchone()
        if not exists:
            return pd.DataFrame(columns=["sample_id", "sha256"]).set_index("sample_id")
        cursor = con.execute(f"SELECT {columns} FROM {_TABLE}")
        names = [d[0] for d in cursor.description]
        # In chunks: a list of Python tuples costs ten times the frame it becomes.
        parts = [pd.DataFrame(rows, columns=names)
                 for rows in iter(lambda: cursor.fetchmany(5000), [])]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    return frame.set_index("sample_id")


def _store(ws, batch, embedding_path: Path) -> list[tuple[str, str]]:
    """Append a batch's embeddings to disk, then its properties to the catalog."""
    good = [i for i, error in enumerate(batch["error"]) if error is None]
    errors = [(batch["id"][i], batch["error"][i]) for i, e in enumerate(batch["error"]) if e]
    if not good:
        return errors
    embedding_path.parent.mkdir(parents=True, exist_ok=True)
    records = np.zeros(len(good), dtype=RECORD)
    records["embedding"] = np.stack([batch["embedding"][i] for i in good])
    records["thumb"] = np.stack([batch["thumb"][i] for i in good])
    with open(embedding_path, "ab") as handle:
        end = handle.tell()
        if end % RECORD.itemsize:  # a torn record from a killed run: never referenced, cut it
            handle.truncate(end - end % RECORD.itemsize)
        first_row = handle.tell() // RECORD.itemsize
        handle.write(records.tobytes())
        handle.flush()
        os.fsync(handle.fileno())  # rows on disk before the catalog points at them
    rows = [(batch["id"][i], batch["sha256"][i], first_row + offset,
             *(batch[name][i] for name in PROPERTIES)) for offset, i in enumerate(good)]
    marks = ", ".join("?" * (3 + len(PROPERTIES)))
    with ws.catalog.write() as con:
        _ensure_table(con)
        con.executemany(f"INSERT OR REPLACE INTO {_TABLE} VALUES ({marks})", rows)
        # The catalog references the embeddings file, so later stages find it by name.
        con.execute(
            "INSERT OR REPLACE INTO artifacts(name, path, kind, fingerprint, meta, created_at)"
            " VALUES (?, ?, 'records', ?, ?, ?)",
            (f"audit.vectors.v{PROPERTIES_VERSION}",
             embedding_path.relative_to(ws.path).as_posix(), str(PROPERTIES_VERSION),
             json.dumps({"dtype": RECORD.descr, "rows_from": _TABLE + ".embedding_row"}),
             now()))
    return errors


class _RecordFile:
    """Reads the audit's record file with plain reads, not a memory map: pages of a map
    count in the process's resident memory, read pages only in the OS cache."""

    _BLOCK = 4096  # records per sequential read

    def __init__(self, path: Path):
        self.path = path

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        """float32 embeddings of ``rows``, read block by block in file order."""
        out = np.empty((len(rows), EMBEDDING_DIM), dtype=np.float32)
        if not len(rows):
            return out
        order = np.argsort(rows)
        ordered = rows[order]
        with open(self.path, "rb") as handle:
            for start in range(0, int(ordered[-1]) + 1, self._BLOCK):
                picked = np.flatnonzero((ordered >= start) & (ordered < start + self._BLOCK))
                if not picked.size:
                    continue
                handle.seek(start * RECORD.itemsize)
                block = np.fromfile(handle, dtype=RECORD, count=self._BLOCK)
                out[order[picked]] = block["embedding"][ordered[picked] - start]
        return out

    def thumbs(self, rows: np.ndarray) -> np.ndarray:
        """Gray verification thumbnails of ``rows`` (one read each)."""
        out = np.empty((len(rows), THUMB_SIDE, THUMB_SIDE), dtype=np.uint8)
        offset = RECORD.fields["thumb"][1]
        size = THUMB_SIDE * THUMB_SIDE
        with open(self.path, "rb") as handle:
            descriptor = handle.fileno()
            for i, row in enumerate(rows):
                data = os.pread(descriptor, size, int(row) * RECORD.itemsize + offset)
                out[i] = np.frombuffer(data, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE)
        return out


def embeddings(ws, sample_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """The audit's pixel embeddings: ``(ids, vectors)``, vectors ``(n, EMBEDDING_DIM)``
    float32, L2-normalised, for ``sample_ids`` (default: every measured sample) that the
    audit has measured, in the order asked. Run :func:`audit` first."""
    rows = _load_cached(ws, "sample_id, embedding_row")["embedding_row"]
    if rows.empty:
        raise EmptyDataError("No audit embeddings yet: run 'smartset audit' first.")
    if sample_ids is not None:
        rows = rows.reindex(list(sample_ids)).dropna()
    vectors = _RecordFile(_vector_file(ws)).embeddings(rows.to_numpy(dtype=np.int64))
    return rows.index.to_numpy(dtype=object), vectors


def _duplicates(props: pd.DataFrame, embeddings: np.ndarray, thumbs, *, k: int,
                candidate_similarity: float, min_similarity: float, threshold: float | None):
    n = len(props)
    exact_pairs = []
    for column in ("sha256", "pixel_hash"):
        for members in props.groupby(column).indices.values():
            exact_pairs.extend((int(members[0]), int(m)) for m in members[1:])
    exact_groups = group_pairs(n, exact_pairs)
    indices, sims = knn(embeddings, k)
    near, threshold = near_duplicate_pairs(indices, sims, thumbs,
                                           candidate_similarity=candidate_similarity,
                                           min_similarity=min_similarity, threshold=threshold)
    exact_of = {m: g for g, members in enumerate(exact_groups) for m in members}
    near = [(i, j, s) for i, j, s in near if exact_of.get(i, -1) != exact_of.get(j, -2)]
    near_groups = group_pairs(n, near)
    best_sim: dict[int, float] = {}
    for i, j, s in near:
        best_sim[i] = max(best_sim.get(i, 0.0), s)
        best_sim[j] = max(best_sim.get(j, 0.0), s)
    return exact_groups, near_groups, best_sim, indices, sims, threshold


def _describe_group(props: pd.DataFrame, members: list[int]) -> tuple[list[str], str]:
    labels = sorted({str(v) for v in props["label"].iloc[members] if v is not None})
    splits = sorted(set(props["split"].iloc[members]))
    scopes = []
    if len(labels) > 1:
        scopes.append("label conflict")
    if len(splits) > 1:
        scopes.append("split leakage")
    if not scopes:
        scopes.append("same class" if labels else "unlabeled")
    detail = []
    if len(labels) > 1:
        detail.append(f"labels {' / '.join(labels)}")
    if len(splits) > 1:
        detail.append(f"splits {' / '.join(splits)}")
    return scopes, ", ".join(detail)


def audit(ws, version: str | None = None, *, thresholds: dict[str, float] | None = None,
          neighbours: int = 10, near_duplicate_similarity: float = 0.98,
          candidate_similarity: float = 0.85, outlier_fence: float = 4.0,
          engine: str | Engine | None = None, workers: int | None = None,
          show_progress: bool | None = None, report: bool = True,
          out_dir: str | Path | None = None, seed: int = 0,
          embedding_model: str | Path | None = None) -> AuditResult:
    """Audit the samples of ``version`` (default: the live catalog); see :mod:`smartset.audit`.

    ``embedding_model``: a smartset checkpoint (or training run id) whose backbone features
    replace the pixel embedding for outliers and class outliers (near duplicates stay on
    pixels, where copies are alike).
    """
    started = time.perf_counter()
    if not 0.0 < near_duplicate_similarity <= 1.0:
        raise ValueError(f"near_duplicate_similarity must be in (0, 1], got {near_duplicate_similarity}")
    if not -1.0 <= candidate_similarity <= 1.0:
        raise ValueError(f"candidate_similarity must be in [-1, 1], got {candidate_similarity}")
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    samples = ws.samples(version)
    if samples.empty:
        raise EmptyDataError(
            f"Nothing to audit: {'version ' + repr(version) if version else 'the catalog'} has "
            f"no available samples. Add images with 'smartset ingest', or check "
            f"'smartset issues' for files that could not be ingested.")
    config = {"version": version, "thresholds": thresholds or {}, "neighbours": neighbours,
              "near_duplicate_similarity": near_duplicate_similarity,
              "candidate_similarity": candidate_similarity, "outlier_fence": outlier_fence,
              "embedding_model": None if embedding_model is None else str(embedding_model)}
    run_id = ws.catalog.start_run("audit", config, seed=seed)
    with ws.catalog.failing_run(run_id):
        measured = _load_cached(ws, "sample_id, sha256")["sha256"]
        todo = samples[samples["id"].map(measured).ne(samples["sha256"])]
        embedding_path = _vector_file(ws)
        mean_size = float(todo["size"].mean()) if len(todo) else 1.0
        batch_size = int(min(512, max(16, 2_000_000 / max(mean_size, 1.0))))
        results = get_engine(engine, workers=workers).map_batches(
            compute_properties, batches_of({"id": todo["id"].tolist(), "path": todo["path"].tolist(),
                                            "sha256": todo["sha256"].tolist()}, batch_size))
        errors = []
        with progress_bar(len(todo), "measuring images", enabled=show_progress) as advance:
            for batch in results:
                errors.extend(_store(ws, batch, embedding_path))
                advance(len(batch["id"]))

        props = samples.join(_load_cached(ws).drop(columns=["sha256"]), on="id")
        failed = {sid for sid, _ in errors}
        props = props[props["embedding_row"].notna() & ~props["id"].isin(failed)].reset_index(drop=True)
        for name in PROPERTIES:
            if name != "pixel_hash":
                props[name] = pd.to_numeric(props[name], errors="coerce")
        props = add_derived_properties(props)
        props["aspect_ratio"] = props["width"] / props["height"]
        props["megapixels"] = props["width"] * props["height"] / 1e6
        props["file_bytes"] = props["size"]
        rows = props["embedding_row"].astype(np.int64).to_numpy()
        vectors = _RecordFile(embedding_path)
        embeddings = vectors.embeddings(rows)

        def thumbs(positions: np.ndarray) -> np.ndarray:
            return vectors.thumbs(rows[positions])

        skipped: dict[str, str] = {}
        findings = [{"kind": "unreadable", "sample_id": sid, "score": 1.0, "threshold": None,
                     "reason": f"could not be decoded for the audit: {error}"} for sid, error in errors]
        for issue in ws.issues().itertuples():
            findings.append({"kind": "unreadable", "sample_id": None, "score": 1.0, "threshold": None,
                             "reason": f"{issue.relpath}: {issue.reason} ({issue.detail})",
                             "group": issue.reason})
        thresholds = dict(thresholds or {})
        near_given = thresholds.pop("near_duplicate", None)
        check_findings, used = run_checks(props, thresholds)
        # A flat image has no edges, and a tiny one too few pixels to tell: "blurry" would only
        # repeat "low information" or "odd size" there.
        larger = props.set_index("id")["larger"]
        explained = {f["sample_id"] for f in check_findings
                     if f["kind"] == "low_information"
                     or (f["kind"] == "odd_size" and not larger[f["sample_id"]])}
        check_findings = [f for f in check_findings
                          if not (f["kind"] == "blurry" and f["sample_id"] in explained)]
        findings.extend(check_findings)
        for name, info in used.items():
            if "skipped" in info:
                skipped[name] = info["skipped"]

        duplicate_groups = []
        if len(props) >= 2:
            exact_groups, near_groups, best_sim, indices, sims, near_threshold = _duplicates(
                props, embeddings, thumbs, k=neighbours, candidate_similarity=candidate_similarity,
                min_similarity=near_duplicate_similarity, threshold=near_given)
            used["near_duplicate"] = {
                "property": "verified similarity", "direction": "high", "threshold": near_threshold,
                "set_by": ("given" if near_given is not None else
                           "absolute limit" if near_threshold == near_duplicate_similarity
                           else "local density (median shown)"),
                "absolute": near_duplicate_similarity, "fence": None,
                "flagged": sum(len(g) for g in near_groups)}
            for kind, groups in (("exact_duplicate", exact_groups), ("near_duplicate", near_groups)):
                for number, members in enumerate(groups, start=1):
                    key = f"{kind.split('_')[0]}-{number}"
                    scopes, detail = _describe_group(props, members)
                    duplicate_groups.append({"group": key, "kind": kind, "scopes": scopes,
                                             "members": props["id"].iloc[members].tolist()})
                    for m in members:
                        score = 1.0 if kind == "exact_duplicate" else best_sim.get(m, 1.0)
                        what = "same bytes or pixels" if kind == "exact_duplicate" else "near copy"
                        findings.append({
                            "kind": kind, "sample_id": props["id"].iloc[m], "score": score,
                            "threshold": None if kind == "exact_duplicate" else near_threshold,
                            "group": key,
                            "reason": (f"{what} in a set of {len(members)} ({', '.join(scopes)}"
                                       f"{': ' + detail if detail else ''})")})
            if embedding_model is not None:
                embeddings = _model_embeddings(ws, version, props, embedding_model)
                _, sims = knn(embeddings, neighbours)
            findings.extend(_outliers(props, sims, embeddings, fence=outlier_fence, skipped=skipped))
        else:
            skipped["duplicates"] = skipped["outlier"] = "fewer than 2 images"
        findings.extend(_imbalance(props, skipped))

        labels = props["label"]
        if labels.notna().sum() >= 10 and labels.dropna().nunique() >= 2:
            probe_columns = [c for c in PROBED_PROPERTIES if c in props]
            bias = bias_probe(props[probe_columns], labels, seed=seed)
            for row in bias[bias["flagged"]].itertuples():
                best = max(row.lift_by_class.items(), key=lambda kv: kv[1], default=None)
                extra = f"; predicts '{best[0]}' {best[1]:.1f}x better than chance" if best else ""
                findings.append({"kind": "bias", "sample_id": None, "score": row.skill,
                                 "threshold": 0.2, "group": row.property,
                                 "reason": (f"'{row.property}' alone predicts the label: accuracy "
                                            f"{row.accuracy:.2f} vs {row.baseline:.2f} for always "
                                            f"guessing the majority class{extra}")})
        else:
            bias = bias_probe(pd.DataFrame(index=props.index), labels)
            skipped["bias"] = "needs at least 10 labeled images in 2 or more classes"
        findings.extend(_error_bias(ws, props, skipped))

        frame = pd.DataFrame(findings, columns=["kind", "sample_id", "score", "threshold", "reason",
                                                "group"])
        frame = frame.astype({"group": object}).where(frame.notna(), None)
        with ws.catalog.write() as con:
            con.executemany(
                "INSERT INTO audit_findings(run_id, version, kind, sample_id, score, threshold,"
                " reason, grp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, version, r.kind, r.sample_id, r.score, r.threshold, r.reason, r.group)
                 for r in frame.itertuples()])
        result = AuditResult(run_id, version, frame, props.drop(columns=["embedding_row"]), used, bias,
                             duplicate_groups, {}, 0.0, computed=len(todo), skipped=skipped)
        result.summary = {"n_samples": int(len(samples)), "n_audited": int(len(props)),
                          "computed": int(len(todo)), "cached": int(len(samples) - len(todo)),
                          "findings": result.counts(), "skipped": skipped,
                          "duplicate_groups": {k: sum(g["kind"] == k for g in duplicate_groups)
                                               for k in ("exact_duplicate", "near_duplicate")},
                          "label_conflicts": sum("label conflict" in g["scopes"] for g in duplicate_groups),
                          "split_leakage": sum("split leakage" in g["scopes"] for g in duplicate_groups)}
        if report:
            from smartset.audit.report import write_report

            target = Path(out_dir) if out_dir else ws.reports_dir / "audit" / (version or "live")
            result.report_path, result.json_path = write_report(ws, result, target)
        result.seconds = round(time.perf_counter() - started, 3)
    ws.catalog.finish_run(run_id, {**result.summary, "seconds": result.seconds})
    return result


def _model_embeddings(ws, version, props: pd.DataFrame, model) -> np.ndarray:
    """A trained network's features of the audited images, unit-normed, in ``props`` order."""
    from smartset.learn._workspace import _load_model
    from smartset.learn.data import load_version

    estimator, _ = _load_model(ws, model)
    channels, height, width = estimator.input_shape_
    data = load_version(ws, version, size=(height, width), mode="L" if channels == 1 else "RGB",
                        labeled_only=False, progress=False)
    position = {sid: i for i, sid in enumerate(data.ids)}
    missing = [sid for sid in props["id"] if sid not in position]
    if missing:
        raise EmptyDataError(f"{len(missing)} audited images could not be decoded for the "
                             f"embedding model (e.g. {missing[0]}).")
    features = estimator.transform(data.images[[position[s] for s in props["id"]]])
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def _error_bias(ws, props: pd.DataFrame, skipped: dict) -> list[dict]:
    """Properties that predict the model's out-of-fold errors (when predictions exist)."""
    from smartset.predictions import PredictionsNotFoundError

    try:
        predictions = ws.predictions(kind="oof")
    except PredictionsNotFoundError:
        skipped["error_bias"] = "no out-of-fold predictions yet ('smartset predict --oof')"
        return []
    correct = pd.Series(predictions.predicted == predictions.labels,
                        index=predictions.sample_ids)
    ids = props["id"]
    known = ids.isin(correct.index)
    if known.sum() < 50:
        skipped["error_bias"] = "fewer than 50 audited samples have out-of-fold predictions"
        return []
    columns = [c for c in PROBED_PROPERTIES if c in props]
    table = error_probe(props.loc[known, columns].set_axis(ids[known].to_numpy()),
                        correct.reindex(ids[known].to_numpy()).to_numpy())
    findings = []
    for row in table[table["flagged"]].itertuples():
        findings.append({
            "kind": "error_bias", "sample_id": None, "score": row.ratio, "threshold": 2.0,
            "group": row.property,
            "reason": (f"'{row.property}' between {row.low:.3g} and {row.high:.3g}: the model "
                       f"(run {predictions.run_id}, out-of-fold) is wrong on {row.error_rate:.1%}"
                       f" of {row.n} images vs {row.overall:.1%} overall ({row.ratio:.1f}x)")})
    return findings


def _outliers(props: pd.DataFrame, sims: np.ndarray, embeddings: np.ndarray, *, fence: float,
              skipped: dict) -> list[dict]:
    findings = []
    k = min(5, sims.shape[1])
    finite = np.where(np.isfinite(sims[:, :k]), sims[:, :k], np.nan)
    isolation = pd.Series(1.0 - np.nanmean(finite, axis=1), index=props.index)
    limit = robust_fence(isolation, "high", fence)
    for i in np.flatnonzero(isolation.to_numpy() > limit):
        findings.append({"kind": "outlier", "sample_id": props["id"].iloc[i],
                         "score": float(isolation.iloc[i]), "threshold": limit,
                         "reason": (f"unlike the rest: mean similarity to its {k} nearest images "
                                    f"{1 - isolation.iloc[i]:.2f}, below {1 - limit:.2f}")})
    labeled = props["label"].notna()
    if labeled.sum() == 0 or props.loc[labeled, "label"].nunique() < 2:
        skipped["class_outlier"] = "needs labels in 2 or more classes"
        return findings
    for label, members in props[labeled].groupby("label").groups.items():
        rows = np.asarray(members)
        if len(rows) < 10:
            continue
        centroid = embeddings[rows].mean(axis=0)
        norm = float(np.linalg.norm(centroid))
        if norm == 0:
            continue
        similarity = pd.Series(embeddings[rows] @ (centroid / norm), index=rows)
        limit = robust_fence(similarity, "low", fence)
        for row in similarity.index[similarity < limit]:
            findings.append({"kind": "class_outlier", "sample_id": props["id"].iloc[row],
                             "score": float(1 - similarity[row]), "threshold": float(1 - limit),
                             "reason": (f"far from its class '{label}': similarity to the class "
                                        f"centre {similarity[row]:.2f}, below {limit:.2f}")})
    return findings


def _imbalance(props: pd.DataFrame, skipped: dict) -> list[dict]:
    counts = props["label"].dropna().value_counts()
    if len(counts) < 2:
        skipped["class_imbalance"] = "needs labels in 2 or more classes"
        return []
    largest, median = int(counts.max()), float(counts.median())
    findings = []
    for label, count in counts.items():
        ratio = largest / count
        if count < 0.5 * median or ratio >= 5:
            findings.append({"kind": "class_imbalance", "sample_id": None,
                             "score": float(count / largest), "threshold": 0.5,
                             "group": str(label),
                             "reason": (f"class '{label}' has {count} images, {ratio:.1f}x fewer "
                                        f"than '{counts.index[0]}' ({largest}); median class "
                                        f"size {median:.0f}")})
    return findings
