"""The ingest run: plan a source, read only what is new or changed, write the catalog.

What it writes, and the SQL of it, is the stage's store (:mod:`smartset.ingest.store`).
Incremental by file metadata: a file whose path, size and modification time match the
catalog (as a sample, or as a known bad file) is not read again. Each batch of results is
written in one transaction together with its label events, so a run killed at any moment
leaves a consistent catalog, and the next run picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smartset._progress import progress_bar
from smartset.catalog import Catalog, now
from smartset.engine import Engine, batches_of, get_engine
from smartset.errors import SourceError
from smartset.imageio import DEFAULT_MAX_PIXELS, inspect_files
from smartset.ingest._numpy import plan_numpy
from smartset.ingest._sources import (FILENAME_PRESETS, LAYOUTS, SPLITS, Entry, SourcePlan, detect_layout, flag_label_variants,
                                      plan_csv, plan_filenames, plan_folders, plan_unlabeled,
                                      source_kind)
from smartset.storage import is_url
from smartset.ingest.store import (finish_source, insert_lineage, insert_samples,
                                   known_bad_files, known_samples, origin_rows, register_root,
                                   sample_id, source_issues, taken_relpaths, targets_json,
                                   write_batch)

__all__ = ["IngestReport", "ingest", "add_derived", "sample_id"]


@dataclass
class IngestReport:
    """What an ingest run found and did (``to_dict()`` for ``--json``)."""

    source: str
    layout: str
    detected: str
    root: str
    run_id: int
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    relabeled: int = 0
    missing: int = 0
    files_read: int = 0
    seconds: float = 0.0
    issues: dict[str, int] = field(default_factory=dict)
    issue_examples: list[dict] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.new + self.updated + self.unchanged

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _plan(source: Path | str, data_dir: Path, *, layout, pattern, split, csv_options, classes,
          show_progress) -> SourcePlan:
    if layout is None:
        layout = "filenames" if pattern else detect_layout(source)
    if layout not in LAYOUTS:
        raise SourceError(f"Unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}.")
    if split is not None and split not in SPLITS:
        raise SourceError(f"Unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
    if layout in ("csv", "numpy") and is_url(source):
        raise SourceError(f"Layout {layout!r} is read from a local file; '{source}' is a URL. "
                          f"Copy the {'table' if layout == 'csv' else 'archive'} to a local "
                          f"path, or ingest a folder URL (folders, split-folders, filenames, "
                          f"unlabeled).")
    kind = source_kind(source)
    if layout in ("csv", "numpy") and kind != "file":
        raise SourceError(f"Layout {layout!r} needs a file, but '{source}' is not one.")
    if layout not in ("csv", "numpy") and kind != "dir":
        raise SourceError(f"Layout {layout!r} needs a folder, but '{source}' is not one.")
    if layout != "csv" and (csv_options.get("tags_column") or csv_options.get("tag_sep")):
        raise SourceError(f"Tags (--tags-column, --tag-sep) come from a table, but '{source}' "
                          f"was read as layout {layout!r}: ingest a .csv/.tsv with a tags "
                          f"column (--layout csv). Images filed under several class folders "
                          f"get several tags without it.")
    if layout == "csv":
        return plan_csv(source, split=split, **csv_options)
    if layout == "numpy":
        return plan_numpy(source, data_dir, split=split, classes=classes,
                          show_progress=show_progress)
    if layout == "filenames":
        return plan_filenames(source, pattern=pattern or "prefix", split=split)
    if layout == "unlabeled":
        return plan_unlabeled(source, split=split)
    return plan_folders(source, split=split, layout=layout)


def ingest(catalog: Catalog, workspace: Path, source: str | Path, *,
           layout: str | None = None, pattern: str | None = None, split: str | None = None,
           root: str | Path | None = None, path_column: str | None = None,
           label_column: str | None = None, target_columns: list[str] | None = None,
           split_column: str | None = None, classes: list[str] | None = None,
           tags_column: str | None = None, tag_sep: str | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS, engine: str | Engine | None = None,
           workers: int | None = None, batch_size: int | None = None, author: str = "ingest",
           show_progress: bool | None = None) -> IngestReport:
    """Ingest ``source`` into ``catalog``; see :meth:`smartset.Workspace.ingest`."""
    started = time.perf_counter()
    # A URL is stored as given (less a trailing '/'): the catalog's paths are URLs then.
    source = source.rstrip("/") if is_url(source) else Path(source).expanduser().resolve()
    if pattern is not None and pattern not in FILENAME_PRESETS and "(" not in pattern:
        raise SourceError(f"Label pattern {pattern!r} is neither a preset "
                          f"({', '.join(FILENAME_PRESETS)}) nor a regex with a (?P<label>...) group.")
    if max_pixels < 1:
        raise SourceError(f"max_pixels must be at least 1, got {max_pixels}.")
    csv_options = {"root": Path(root).resolve() if root else None, "path_column": path_column,
                   "label_column": label_column, "target_columns": target_columns,
                   "split_column": split_column, "tags_column": tags_column,
                   "tag_sep": tag_sep}
    # One writer of samples at a time: a second ingest (or augment) meanwhile is told which
    # process holds the workspace, instead of racing it for the same sample ids and files.
    with catalog.exclusive("ingest"):
        plan = _plan(source, workspace / "data", layout=layout, pattern=pattern, split=split,
                     csv_options=csv_options, classes=classes, show_progress=show_progress)
        flag_label_variants(plan)
        config = {"source": str(source), "layout": plan.layout, "pattern": pattern,
                  "split": split, "max_pixels": max_pixels,
                  **{k: (str(v) if v else v) for k, v in csv_options.items()}}
        return _ingest_locked(catalog, workspace, plan, config, started, engine=engine,
                              workers=workers, batch_size=batch_size, max_pixels=max_pixels,
                              author=author, show_progress=show_progress)


def _ingest_locked(catalog, workspace, plan, config, started, *, engine, workers, batch_size,
                   max_pixels, author, show_progress) -> IngestReport:
    run_id = catalog.start_run("ingest", config)
    with catalog.failing_run(run_id):
        with catalog.write() as con:
            root_id, root_key = register_root(con, plan.root, workspace)
        known = known_samples(catalog, root_id)
        known_bad = known_bad_files(catalog, plan.source)
        entries = {entry.relpath: entry for entry in plan.entries}
        todo = [e for e in plan.entries if not _seen_as_is(e, known, known_bad)]
        report = IngestReport(plan.source, plan.layout, plan.detected, str(plan.root), run_id,
                              unchanged=sum(e.relpath in known for e in plan.entries)
                              - sum(e.relpath in known for e in todo),
                              ignored=dict(plan.ignored))

        engine = get_engine(engine, workers=workers)
        if batch_size is None:
            # About 2 MB of files per batch: few transactions for small files, an even spread
            # over workers for large ones.
            mean_size = sum(e.size for e in todo) / max(1, len(todo))
            batch_size = int(min(1024, max(16, 2_000_000 / max(mean_size, 1))))
        root_text = os.fspath(plan.root)
        paths = [os.path.join(root_text, e.relpath) for e in todo]
        batches = batches_of({"relpath": [e.relpath for e in todo], "path": paths}, batch_size)
        results = engine.map_batches(inspect_files, batches, fn_kwargs={"max_pixels": max_pixels})
        with progress_bar(len(todo), "reading images", enabled=show_progress) as advance:
            for batch in results:
                with catalog.write() as con:
                    write_batch(con, batch, entries, known, known_bad, plan.source, root_id,
                                 root_key, run_id, author, report)
                report.files_read += len(batch["path"])
                advance(len(batch["path"]))

        with catalog.write() as con:
            finish_source(con, plan, entries, root_id, root_key, run_id, author, report)
        rows = source_issues(catalog, plan.source)
        report.issues = dict(Counter(row["reason"] for row in rows))
        report.issue_examples = [dict(row) for row in rows[:20]]
        bad = {row["relpath"] for row in rows}
        report.classes = dict(Counter(e.label for e in plan.entries
                                      if e.label is not None and e.relpath not in bad).most_common())
        report.seconds = round(time.perf_counter() - started, 3)
    catalog.finish_run(run_id, {k: v for k, v in report.to_dict().items()
                                if k not in ("issue_examples", "detected")})
    return report


def _seen_as_is(entry: Entry, known: dict, known_bad: dict) -> bool:
    """True if the file was read before (as a sample or as a bad file) and has not changed
    since: same size and modification time, and not marked missing."""
    stamp = (entry.size, entry.mtime_ns)
    sample = known.get(entry.relpath)
    if sample is not None and sample["status"] != "missing":
        return (sample["size"], sample["mtime_ns"]) == stamp
    return known_bad.get(entry.relpath) == stamp


def add_derived(catalog: Catalog, workspace: Path, folder: str | Path, relpaths: list[str], *,
                origin_ids: list[str], params: list[dict], stage: str,
                labels: list[str | None] | None = None,
                targets: list | None = None, splits: list[str] | None = None,
                engine: str | Engine | None = None, author: str = "smartset",
                then=None) -> list[str]:
    """Add files smartset wrote under ``folder`` (inside the workspace) as samples derived
    from ``origin_ids``, with the ``params`` that replay each; see
    :meth:`smartset.Workspace.add_derived_samples`. All are added in one transaction;
    ``then(con, ids)`` runs inside it last (to make the version that holds them)."""
    folder = Path(folder).resolve()
    try:
        folder.relative_to(workspace)
    except ValueError:
        raise SourceError(f"Derived files must live inside the workspace ({workspace}), "
                          f"not in '{folder}'.") from None
    n = len(relpaths)
    for name, values in (("origin_ids", origin_ids), ("params", params), ("labels", labels),
                         ("targets", targets), ("splits", splits)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} files")
    origins = origin_rows(catalog)
    unknown = sorted(set(origin_ids) - set(origins))
    if unknown:
        raise SourceError(f"Unknown origin sample id(s): {', '.join(unknown[:5])}")
    catalog.check_writable()
    root_key = folder.relative_to(workspace).as_posix()
    source = f"{stage}:{folder}"
    ids = []
    rows, events, lineage = [], [], []
    results = get_engine(engine).map_batches(
        inspect_files, batches_of({"path": [os.fspath(folder / r) for r in relpaths],
                                   "index": list(range(n))}, 256)) if n else []
    for batch in results:
        bad = [(p, r, d) for p, r, d in zip(batch["path"], batch["reason"], batch["detail"]) if r]
        if bad:
            raise SourceError(f"smartset wrote '{bad[0][0]}' but cannot read it back "
                              f"({bad[0][1]}: {bad[0][2]}); nothing was added.")
        stamp = now()
        for i, index in enumerate(batch["index"]):
            origin = origins[origin_ids[index]]
            relpath = relpaths[index]
            stat = os.stat(folder / relpath)
            sid = sample_id(root_key, relpath)
            split = splits[index] if splits else origin["split"]
            label = labels[index] if labels is not None else origin["label"]
            target = (targets[index] if targets is not None else
                      json.loads(origin["targets"]) if origin["targets"] else None)
            rows.append([batch["sha256"][i], stat.st_size, stat.st_mtime_ns, batch["format"][i],
                         batch["width"][i], batch["height"][i], batch["mode"][i],
                         batch["channels"][i], split, source, sid, None, relpath, stamp, stamp])
            events.append((sid, label, targets_json(target), author, stamp,
                           f"derived from {origin_ids[index]}", stage))
            lineage.append((sid, origin_ids[index], stage, json.dumps(params[index]), stamp))
            ids.append(sid)
    # One transaction: the root, every sample, its label event and lineage, and what the
    # caller adds (the version that holds them): a failure or a kill leaves none of them.
    with catalog.write() as con:
        root_id, _ = register_root(con, folder, workspace)
        for row in rows:
            row[11] = root_id
        taken = taken_relpaths(con, root_id, relpaths)
        if taken:
            raise SourceError(f"'{folder / taken[0]}' is a sample of the catalog already; "
                              f"write derived files to a new folder (another version name).")
        insert_samples(con, rows, events)
        insert_lineage(con, lineage)
        if then is not None:
            then(con, ids)
    return ids
