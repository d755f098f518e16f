"""The ``smartset`` command line as a Typer app: a thin layer over
:mod:`smartset.workspace` and the stages. The entry point is :func:`smartset.cli.main`,
which answers ``samples --json`` without importing Typer and hands everything else to
:data:`app` (``from smartset.cli import app`` reads it from here).

Every command takes ``--json`` for scripts (one JSON document on stdout; progress and
messages go to stderr). Exit codes: 0 done, 1 a smartset error (the message says what to
do), 2 a usage error, 3 ``--strict`` ingest that met bad files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from smartset._cli_common import (EngineOption, JsonOption, RayAddressOption, SmartsetGroup, Table,
                                  WorkspaceArgument, WorkspaceOption, handle_errors,
                                  open_workspace, out, print_json, show_progress, table_text,
                                  use_ray_address)
from smartset.augment._cli import augment_app
from smartset.detection._cli import annotations_app, detect_app, synth_app
from smartset.errors import SmartsetError
from smartset.learn._cli import register as register_learn_commands
from smartset._embed_cli import register as register_embed_command

# The layouts and splits ingest knows, spelled here so that a bad value is a usage error
# listing them without importing ingest (a test keeps them equal to smartset.ingest's).
LAYOUTS = ("folders", "split-folders", "filenames", "csv", "numpy", "unlabeled")
SPLITS = ("train", "val", "test", "unlabeled")
EXPORT_FORMATS = ("folder", "csv", "hf", "coco", "yolo", "voc", "masks", "pairs")


class _MainGroup(SmartsetGroup):
    # Stage CLIs whose packages import pandas or torch when imported: loaded when run.
    lazy = {
        "clean": ("smartset.clean._cli", "clean_app",
                  "Cleaning: find wrong labels, ambiguous images, classes to merge and "
                  "duplicates, as a reviewable plan (clean plan; 'smartset clean' alone does "
                  "the same); apply it (clean apply PLAN) into a new version; undo (clean "
                  "undo RUN); clean rounds: predict, plan and apply the label actions, twice. "
                  "Reports: clean imbalance, clean reduce."),
        "review": ("smartset.review._cli", "review_app",
                   "Review labels in a local web app, by keyboard: suspicious labels, "
                   "duplicate sets, audit issues, one class at a time, what nobody reviewed "
                   "yet, cleaning plans. Every decision is a label or mark event. Prints the "
                   "URL (with its session token)."),
        "segment": ("smartset.detection._segment_cli", "segment_app",
                    "Train a segmenter (a U-Net decoder on EfficientNet-Lite0) on a version's "
                    "masks and predict mask PNGs and COCO RLEs that 'detect evaluate-masks' "
                    "scores."),
    }


app = typer.Typer(
    name="smartset",
    cls=_MainGroup,
    help="Turn a raw image collection into a quality data set. Commands are listed in "
         "pipeline order. Every command that opens a workspace takes it as its first "
         "argument or -w (else $SMARTSET_WORKSPACE, else the current folder). Exit codes: "
         "0 done, 1 an error (the message says what to do), 2 a usage error, 3 'ingest "
         "--strict' met bad files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
label_app = typer.Typer(help="Change labels (as events: nothing is lost) and read their history.",
                        no_args_is_help=True, cls=SmartsetGroup, rich_markup_mode=None)
version_app = typer.Typer(help="Named, immutable data set versions.", no_args_is_help=True,
                          cls=SmartsetGroup, rich_markup_mode=None)
app.add_typer(label_app, name="label")
app.add_typer(version_app, name="version")
app.add_typer(augment_app, name="augment")
app.add_typer(annotations_app, name="annotations")
app.add_typer(detect_app, name="detect")
app.add_typer(synth_app, name="synth")
register_learn_commands(app)
register_embed_command(app)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("smartset")
        except PackageNotFoundError:  # run from a source tree that is not installed
            number = "unknown (not installed)"
        typer.echo(f"smartset {number}")
        raise typer.Exit()


@app.callback()
def _main(show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print smartset's version and exit.")] = False) -> None:
    """Turn a raw image collection into a quality data set."""


@app.command()
@handle_errors
def init(workspace: Annotated[Path, typer.Argument(help="Folder to create (new or empty).")],
         as_json: JsonOption = False) -> None:
    """Create a workspace: a catalog (SQLite), a cache and folders for outputs."""
    from smartset.workspace import init as init_workspace

    ws = init_workspace(workspace)
    if as_json:
        print_json({"workspace": str(ws.path)})
    else:
        out.print(f"Workspace ready: {ws.path}")


@app.command()
@handle_errors
def ingest(
    args: Annotated[list[str], typer.Argument(
        metavar="[WORKSPACE] SOURCE",
        help="The workspace (optional: else -w, $SMARTSET_WORKSPACE or the current folder), "
             "then a folder, a .csv/.tsv table or a .npz archive. A folder may be an fsspec "
             "URL: file:///data/photos, s3://bucket/photos (pip install s3fs).")],
    workspace: WorkspaceOption = None,
    layout: Annotated[Optional[Literal[LAYOUTS]], typer.Option(
        help="folders, split-folders, filenames, csv, numpy or unlabeled (default: detected).")] = None,
    pattern: Annotated[Optional[str], typer.Option(
        help="Labels from file names: a regex with a (?P<label>...) group, or a preset: "
             "prefix (smartphone_101.jpg), dot (dog.3.jpg), suffix-number (great_pyrenees_17.jpg).")] = None,
    split: Annotated[Optional[Literal[SPLITS]], typer.Option(help="train, val, test or unlabeled, for all files.")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Folder table paths are relative to (default: the table's).")] = None,
    path_column: Annotated[Optional[str], typer.Option(help="Table column of image paths.")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Table column of class labels.")] = None,
    target_columns: Annotated[Optional[str], typer.Option(help="Comma-separated numeric target columns (regression).")] = None,
    split_column: Annotated[Optional[str], typer.Option(help="Table column of split names.")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated names for integer labels of a .npz.")] = None,
    tags_column: Annotated[Optional[str], typer.Option(help="Table column of several tags per image (multi-label; detected when named 'tags').")] = None,
    tag_sep: Annotated[Optional[str], typer.Option(help="What separates tags in a cell, e.g. '|' or ' ' (default: the first of | ; , in the cell, else whitespace).")] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels (decompression bombs).")] = 100_000_000,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Files per batch, one catalog transaction each (default: about 2 MB of files).")] = None,
    strict: Annotated[bool, typer.Option(help="Exit with code 3 if any file could not be ingested.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add images to the catalog. Re-running reads only new or changed files."""
    if len(args) > 2:
        raise typer.BadParameter(f"expected [WORKSPACE] SOURCE, got {len(args)} arguments")
    ws = open_workspace(Path(args[0]) if len(args) == 2 else None, workspace)
    use_ray_address(ray_address)
    report = ws.ingest(
        args[-1], layout=layout, pattern=pattern, split=split, root=root, path_column=path_column,
        label_column=label_column, split_column=split_column,
        target_columns=[t.strip() for t in target_columns.split(",")] if target_columns else None,
        classes=[c.strip() for c in classes.split(",")] if classes else None,
        tags_column=tags_column, tag_sep=tag_sep, max_pixels=max_pixels, engine=engine, workers=workers, batch_size=batch_size,
        show_progress=show_progress(as_json))
    if as_json:
        print_json(report.to_dict())
    else:
        _print_ingest(report)
    if strict and report.issues:
        raise typer.Exit(3)


def _print_ingest(report) -> None:
    out.print(f"Detected: {report.detected}")
    rate = report.files_read / report.seconds if report.seconds else 0.0
    out.print(f"Ingested {report.ok} images: {report.new} new, {report.updated} changed, "
              f"{report.unchanged} unchanged; {report.relabeled} relabeled by the source, "
              f"{report.missing} gone missing. Read {report.files_read} files in "
              f"{report.seconds:.2f} s ({rate:.0f} files/s).")
    if report.classes:
        shown = ", ".join(f"{c} {n}" for c, n in list(report.classes.items())[:12])
        out.print(f"Classes: {shown}{' ...' if len(report.classes) > 12 else ''}")
    if report.ignored:
        out.print("Ignored non-image files: " +
                  ", ".join(f"{ext} {n}" for ext, n in sorted(report.ignored.items())))
    if report.issues:
        from smartset.imageio import ISSUE_REASONS

        table = Table(title=f"{sum(report.issues.values())} issues (see 'smartset issues')")
        for column in ("reason", "count", "meaning", "example"):
            table.add_column(column)
        for reason, count in sorted(report.issues.items()):
            example = next((e for e in report.issue_examples if e["reason"] == reason), None)
            table.add_row(reason, str(count), ISSUE_REASONS.get(reason, ""),
                          f"{example['relpath']}: {example['detail']}" if example else "")
        out.print(table)
    else:
        out.print("No issues.")


@app.command()
@handle_errors
def stats(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    version: Annotated[Optional[str], typer.Option(help="A data set version (default: the live catalog).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for plots (default: WORKSPACE/reports/stats).")] = None,
    plots: Annotated[bool, typer.Option(help="Write the class histogram, size scatter and montages.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for choosing montage thumbnails.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Counts per class and split, imbalance, sizes, formats; plots and montages."""
    from smartset._atomic import write_text
    from smartset.stats import compute_stats, write_plots

    ws = open_workspace(workspace_arg, workspace)
    samples = ws.samples(version)
    result = compute_stats(samples, ws.issues())
    target = out_dir or ws.reports_dir / "stats" / (version or "live")
    if out_dir is None and ws.catalog.read_only:  # read-only workspace: the numbers only
        from smartset._cli_common import err

        err.print("The workspace is read-only: no plots or stats.json written (--out DIR "
                  "writes them elsewhere).", highlight=False)
        result["output"] = None
    else:
        if plots:
            result["plots"] = write_plots(samples, target, seed=seed)
        write_text(target / "stats.json", json.dumps(result, indent=2, default=str))
        result["output"] = str(target)
    if as_json:
        print_json(result)
        return
    _print_stats(result)


def _fmt(summary: dict | None, key: str, digits: int = 0) -> str:
    return "-" if not summary else f"{summary[key]:.{digits}f}"


def _print_stats(result: dict) -> None:
    out.print(f"{result['n_samples']} images: {result['n_labeled']} labeled, "
              f"{result['n_with_targets']} with targets, {result['n_unlabeled']} unlabeled; "
              f"splits: " + ", ".join(f"{k} {v}" for k, v in result["splits"].items()))
    derived = result.get("derived") or {}
    if derived.get("n"):
        out.print(f"  of them {result['n_original']} originals and {derived['n']} "
                  f"derived (augmented or oversampled copies, with lineage; splits: "
                  + ", ".join(f"{k} {v}" for k, v in derived["splits"].items())
                  + "). Counts below include the copies; train and evaluate keep each copy "
                  "with its original and score originals only.")
    if result["classes"]:
        splits = sorted({s for c in result["classes"].values() for s in c if s != "total"})
        table = Table(title=f"{result['n_classes']} classes, imbalance ratio "
                            f"{result['imbalance_ratio'] or 1:.2f} (largest / smallest)")
        table.add_column("class")
        for split in splits + ["total"]:
            table.add_column(split, justify="right")
        for name, counts in sorted(result["classes"].items(), key=lambda kv: -kv[1]["total"]):
            flag = " (minority)" if name in result["minority_classes"] else ""
            table.add_row(name + flag, *[str(counts.get(s, 0)) for s in splits + ["total"]])
        out.print(table)
    table = Table(title="sizes")
    for column in ("", "min", "median", "p95", "max"):
        table.add_column(column, justify="right")
    for key, digits in (("width", 0), ("height", 0), ("aspect_ratio", 2), ("megapixels", 3)):
        summary = result[key]
        table.add_row(key, *[_fmt(summary, q, digits) for q in ("min", "median", "p95", "max")])
    out.print(table)
    out.print("formats: " + ", ".join(f"{k} {v}" for k, v in result["formats"].items())
              + "; modes: " + ", ".join(f"{k} {v}" for k, v in result["modes"].items()))
    if result["issues"]:
        out.print("ingest issues: " + ", ".join(f"{k} {v}" for k, v in result["issues"].items()))
    if result["output"]:
        out.print(f"Output: {result['output']}")


@app.command()
@handle_errors
def audit(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    version: Annotated[Optional[str], typer.Option(help="A data set version (default: the live catalog).")] = None,
    threshold: Annotated[Optional[list[str]], typer.Option(
        help="Override a threshold, e.g. --threshold dark=0.25 (repeatable). Checks: dark, "
             "bright, blurry, low_information, odd_size, odd_aspect_ratio, grayscale, near_duplicate.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: WORKSPACE/reports/audit/VERSION).")] = None,
    report: Annotated[bool, typer.Option(help="Write report.html and issues.json.")] = True,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    embedding_model: Annotated[Optional[str], typer.Option(help="A training run id or checkpoint whose features find outliers (default: the --features embedding).")] = None,
    features: Annotated[str, typer.Option(help="What near duplicates, outliers and far-from-class read: auto (a pretrained backbone on photos, aligned pixels on small gray images, pixels otherwise or without torch), pixels, or a backbone name (efficientnet_lite0, timm:NAME). Near-duplicate candidates are always verified on pixels.")] = "auto",
    reference: Annotated[Optional[bool], typer.Option(
        "--reference/--experiment",
        help="Whether later stages (splits, clean, review) read this audit. Default: yes, "
             "unless a threshold is changed or the report goes outside the workspace.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Find what is wrong with the data: dark, bright, blurry, flat, odd sizes, duplicates
    (and label conflicts and leakage among them), outliers, imbalance, and bias."""
    from smartset.audit import audit as run_audit

    overrides = {}
    for item in threshold or []:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"--threshold takes CHECK=NUMBER, got {item!r}") from None
    ws = open_workspace(workspace_arg, workspace)
    model = None
    if embedding_model is not None:  # the audit is below learn: it takes the loaded model
        from smartset.learn import load_model

        model = load_model(ws, embedding_model)
    try:
        use_ray_address(ray_address)
        result = run_audit(ws, version, thresholds=overrides, engine=engine, workers=workers,
                           report=report, out_dir=out_dir, show_progress=show_progress(as_json),
                           embedding_model=model, features=features,
                           reference=reference)
    except SmartsetError:
        raise
    except ValueError as error:  # a bad threshold name or value: a usage error
        raise typer.BadParameter(str(error)) from None
    if as_json:
        print_json({**result.summary, "run_id": result.run_id, "seconds": result.seconds,
                     "thresholds": result.thresholds,
                     "report": str(result.report_path) if result.report_path else None,
                     "issues_json": str(result.json_path) if result.json_path else None})
        return
    table = Table(title=f"Audit: {result.summary['n_audited']} images "
                        f"({result.computed} measured, {result.summary['cached']} cached) "
                        f"in {result.seconds:.1f} s")
    for column in ("finding", "count", "example"):
        table.add_column(column)
    for kind, count in result.counts().items():
        example = result.findings[result.findings["kind"] == kind]["reason"].iloc[0]
        table.add_row(kind, str(count), example[:90])
    out.print(table)
    for name, why in result.skipped.items():
        out.print(f"not checked: {name}: {why}")
    used = result.summary.get("features")
    if used:
        out.print(f"features: near-duplicate candidates from {used['near_duplicate']['candidates']}, "
                  f"verified on pixels; outliers on {used['outlier']}"
                  + (f" ({used['note']})" if used.get("note") else ""))
    if not result.summary.get("reference", True):
        kept = result.summary.get("reference_run")
        out.print(f"An experiment: splits, clean and the review app keep reading "
                  f"{'audit run ' + str(kept) if kept else 'no audit'} (--reference makes this "
                  f"one the audit they read).")
    if result.report_path:
        out.print(f"Report: {result.report_path}\nIssues: {result.json_path}")


@app.command()
@handle_errors
def samples(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    version: Annotated[Optional[str], typer.Option(help="A data set version.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only this split.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show (0: all).")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List samples with their current (or versioned) labels."""
    ws = open_workspace(workspace_arg, workspace)
    total, shown = ws.sample_records(version, split=split, limit=limit or None)  # no pandas
    if as_json:
        print_json({"total": total, "samples": shown})
        return
    n_derived = sum(1 for row in ws.sample_records(version, split=split)[1]
                    if row["origin_id"]) if total > len(shown) else sum(
        1 for row in shown if row["origin_id"])
    table = Table(title=f"{len(shown)} of {total} samples"
                        + (f" ({n_derived} derived: copies of the sample in 'derived from')"
                           if n_derived else ""))
    for column in ("id", "label", "split", "width", "height", "relpath", "derived from"):
        table.add_column(column)
    for row in shown:
        table.add_row(row["id"], table_text(row["label"]), row["split"], str(row["width"]),
                      str(row["height"]), row["relpath"], row["origin_id"] or "")
    out.print(table)


@app.command()
@handle_errors
def issues(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Files and table rows that could not be ingested, with the reason and the fix."""
    frame = open_workspace(workspace_arg, workspace).issues()
    if as_json:
        print_json(frame.to_dict(orient="records"))
        return
    table = Table(title=f"{len(frame)} ingest issues")
    for column in ("reason", "file", "detail"):
        table.add_column(column)
    for row in frame.itertuples():
        table.add_row(row.reason, row.relpath, row.detail)
    out.print(table)


@app.command()
@handle_errors
def runs(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every command run on the workspace: config, software versions, status, metrics."""
    frame = open_workspace(workspace_arg, workspace).runs()
    if as_json:
        print_json(frame.to_dict(orient="records"))
        return
    table = Table(title=f"{len(frame)} runs")
    for column in ("id", "command", "started", "status", "metrics"):
        table.add_column(column)
    for row in frame.itertuples():
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in (row.metrics or {}).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        table.add_row(str(row.id), row.command, row.started_at[:19], row.status, metrics[:80])
    out.print(table)


@label_app.command("set")
@handle_errors
def label_set(
    sample_ids: Annotated[list[str], typer.Argument(help="Sample ids (see 'smartset samples').")],
    to: Annotated[str, typer.Option("--to", help="The new label.")],
    reason: Annotated[Optional[str], typer.Option(help="Why (kept in the history).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Relabel samples (one event each)."""
    events = open_workspace(workspace).relabel(sample_ids, to, reason=reason, origin="cli")
    if as_json:
        print_json({"events": events})
    else:
        out.print(f"Relabeled {len(events)} sample(s) as {to!r}: events {events}. "
                  f"Undo with 'smartset label undo EVENT'.")


@label_app.command("rename")
@handle_errors
def label_rename(
    old: str, new: str,
    reason: Annotated[Optional[str], typer.Option(help="Why (kept in the history).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rename a class, or merge it into another: every sample labeled OLD gets NEW."""
    events = open_workspace(workspace).rename_label(old, new, reason=reason, origin="cli")
    if as_json:
        print_json({"events": events})
    else:
        out.print(f"{len(events)} sample(s) relabeled {old!r} -> {new!r}.")


@label_app.command("undo")
@handle_errors
def label_undo(
    event_id: int,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revert a label event by appending an event that restores the previous label."""
    new_event = open_workspace(workspace).undo(event_id)
    if as_json:
        print_json({"event": new_event, "reverts": event_id})
    else:
        out.print(f"Event {event_id} reverted by event {new_event}.")


@label_app.command("history")
@handle_errors
def label_history(
    sample_id: Annotated[Optional[str], typer.Argument()] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every label event of a sample (or of all samples), oldest first."""
    frame = open_workspace(workspace).history(sample_id)
    if as_json:
        print_json(frame.to_dict(orient="records"))
        return
    table = Table(title=f"{len(frame)} label events")
    for column in ("id", "sample", "label", "origin", "author", "time", "reason"):
        table.add_column(column)
    for row in frame.itertuples():
        table.add_row(str(row.id), row.sample_id, str(row.label), row.origin, row.author,
                      row.time[:19], str(row.reason or ""))
    out.print(table)


@version_app.command("create")
@handle_errors
def version_create(
    name: str,
    split: Annotated[Optional[str], typer.Option(help="Only samples of this split.")] = None,
    parent: Annotated[Optional[str], typer.Option("--from", help="Start from this version's samples.")] = None,
    description: Annotated[Optional[str], typer.Option(help="What this version is.")] = None,
    reviewed: Annotated[bool, typer.Option(
        "--reviewed", help="Record it as the reviewed state (how many samples a person "
                           "reviewed), as 'smartset review --export' did.")] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Freeze the current samples and labels (optionally one split) as a named version."""
    ws = open_workspace(workspace)
    if reviewed:
        if split is not None or parent is not None:
            raise typer.BadParameter("--reviewed freezes the whole reviewed state: leave out "
                                     "--split and --from.")
        from smartset.review.actions import export_version

        info = export_version(ws, name, description=description)
    else:
        info = ws.create_version(name, split=split, parent=parent, description=description)
    if as_json:
        print_json(info)
    else:
        out.print(f"Version {info['name']!r}: {info['n_samples']} samples, fingerprint "
                  f"{info['fingerprint'][:12]}.")


@version_app.command("list")
@handle_errors
def version_list(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """The versions of the workspace, with their lineage."""
    frame = open_workspace(workspace).versions()
    if as_json:
        print_json(frame.to_dict(orient="records"))
        return
    table = Table(title=f"{len(frame)} versions")
    for column in ("name", "parent", "samples", "created", "description"):
        table.add_column(column)
    for row in frame.itertuples():
        parent = row.parent if isinstance(row.parent, str) else ""  # never "nan"
        description = row.description if isinstance(row.description, str) else ""
        table.add_row(row.name, parent, str(row.n_samples), row.created_at[:19], description)
    out.print(table)


@app.command("export")
@handle_errors
def export_command(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    version: Annotated[Optional[str], typer.Option(help="The version to write (default: the live catalog).")] = None,
    format: Annotated[Literal[EXPORT_FORMATS], typer.Option(
        "--format",
        help="folder (SPLIT/CLASS/IMAGE), csv (labels.csv), hf (datasets.load_dataset, label "
             "as a ClassLabel); with boxes or masks: coco, yolo, voc, masks, pairs.")] = ...,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write.")] = ...,
    images: Annotated[Literal["copy", "link"], typer.Option(help="Copy the images, or hard-link them.")] = "copy",
    palette: Annotated[bool, typer.Option(help="Masks as palette PNGs (VOC colours).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a version (images, labels, boxes and masks) in a format other tools read."""
    from smartset.detection.formats_out import export

    result = export(open_workspace(workspace_arg, workspace), version, out_dir,
                    format="imagefolder" if format == "folder" else format, images=images,
                    palette=palette)
    _print_export(result, as_json)


def _print_export(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    left = result.get("left_out") or {}
    out.print(f"{result['format']}: {result['images']} images, {result['annotations']} "
              f"annotations -> {result['out']} ({result['seconds']:.2f} s)"
              + (f"; left out: {left}" if left else ""), markup=False, highlight=False)
