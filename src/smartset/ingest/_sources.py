"""Turning a source (folder, table, array file) into a plan: which files, which labels.

Planning reads directory entries and file metadata only, never image bytes; the bytes are
read once, in parallel, by :func:`smartset.imageio.inspect_files`. Folder layouts also
take an fsspec URL (``file:///data/photos``, ``s3://bucket/photos``): listed through
fsspec, see :mod:`smartset.storage`.
"""

from __future__ import annotations

import csv
import difflib
import errno
import math
import os
import re
import stat as stat_module
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from smartset._names import MAX_LABEL_LENGTH, label_problem  # one rule, below every stage
from smartset.errors import ColumnNotFoundError, SourceError
from smartset.imageio import IMAGE_EXTENSIONS
from smartset.storage import is_url, list_dir, list_files, path_kind
from smartset.tags import split_tags

LAYOUTS = ("folders", "split-folders", "filenames", "csv", "numpy", "unlabeled")

SPLIT_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
    "unlabeled": "unlabeled", "unlabelled": "unlabeled",
}
SPLITS = ("train", "val", "test", "unlabeled")

FILENAME_PRESETS = {
    # smartphone_101.jpg, Dog-12.png, great pyrenees 3.jpg -> the words before the number
    "prefix": r"^(?P<label>[^\W\d_]+(?:[ _-][^\W\d_]+)*?)[ _.-]*\d",
    # dog.3.jpg (Kaggle dogs-vs-cats) -> the text before the first dot
    "dot": r"^(?P<label>[^.]+)\.",
    # great_pyrenees_173.jpg (Oxford pets) -> everything before the last _number
    "suffix-number": r"^(?P<label>.+?)[_ -]\d+\.[^.]+$",
}

def _checked_label(plan: "SourcePlan", label: str | None, relpath: str, where: str = ""
                   ) -> str | None:
    """``label``, or None with a ``bad_label`` issue when :func:`label_problem` refuses it."""
    if label is None:
        return None
    problem = label_problem(label)
    if problem is None:
        return label
    shown = label if len(label) <= 40 else f"{label[:40]}..."
    plan.issues.append(Issue("bad_label", f"{where}label {shown!r} is refused: {problem}; "
                             f"ingested unlabeled. Fix the label in the source and ingest again.",
                             relpath))
    return None


_PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "file_path", "image",
                 "image_path", "img", "img_path", "image_id", "name")
_LABEL_COLUMNS = ("label", "class", "class_name", "category", "labels", "y", "target")
_SPLIT_COLUMNS = ("split", "subset", "fold_name", "set")


@dataclass(frozen=True)
class Entry:
    """One file a source names, with the label, targets and split the source gives it."""

    relpath: str
    size: int
    mtime_ns: int
    label: str | None = None
    targets: tuple[float, ...] | None = None
    split: str = "train"
    tags: tuple[str, ...] | None = None  # several classes (a table's tags column)


@dataclass(frozen=True)
class Issue:
    """Something ingest could not take as it is; ``relpath`` is '' for the whole source."""

    reason: str
    detail: str
    relpath: str = ""
    size: int | None = None
    mtime_ns: int | None = None


@dataclass
class SourcePlan:
    layout: str
    root: Path | str  # a local folder, or an fsspec URL
    source: str
    detected: str
    entries: list[Entry] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)


# -- walking folders -------------------------------------------------------------------

def _relpath_text(relpath: str) -> str | None:
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return relpath


def stat_file(root: str | Path, relpath: str) -> os.stat_result | Issue:
    """``os.stat`` of a file under ``root``, or the issue that stops it being read."""
    full = os.path.join(os.fspath(root), relpath)  # not pathlib: this runs once per file
    try:
        info = os.stat(full)
    except FileNotFoundError:
        if os.path.islink(full):
            target = os.readlink(full)
            return Issue("broken_symlink", f"links to '{target}', which does not exist", relpath)
        return Issue("missing_file", f"'{full}' does not exist", relpath)
    except PermissionError as error:
        return Issue("unreadable", str(error), relpath)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return Issue("symlink_loop", "symbolic links point at each other", relpath)
        return Issue("unreadable", str(error), relpath)
    if stat_module.S_ISDIR(info.st_mode):
        return Issue("not_a_file", "it is a folder", relpath)
    if not stat_module.S_ISREG(info.st_mode):
        return Issue("not_a_file", "it is not a regular file (a pipe, socket or device)", relpath)
    return info


class _UrlStat(NamedTuple):
    """The two fields of ``os.stat_result`` that planning reads, for a file under a URL."""

    st_size: int
    st_mtime_ns: int


def walk_images(root: str | Path) -> tuple[list[tuple[str, os.stat_result]], list[Issue], Counter]:
    """Every image file under ``root`` (following symlinks, safe against loops), a local
    folder or an fsspec URL.

    Returns ``(files, issues, ignored)``: files as sorted ``(relpath, stat)`` pairs with
    '/' separators, the issues met on the way, and a count of skipped non-image files by
    extension.
    """
    if is_url(root):
        return _walk_url(root)
    files, issues, ignored = [], [], Counter()
    root = os.fspath(root)
    visited = {os.path.realpath(root)}

    def on_error(error: OSError) -> None:
        rel = os.path.relpath(error.filename, root) if error.filename else ""
        issues.append(Issue("unreadable", f"cannot list folder: {error.strerror}", rel))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
        reldir = os.path.relpath(dirpath, root)
        reldir = "" if reldir == "." else reldir.replace(os.sep, "/") + "/"
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real in visited:
                issues.append(Issue("symlink_loop",
                                    f"folder links back to '{real}', already walked", reldir + name))
                continue
            visited.add(real)
            kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            relpath = reldir + name
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored[os.path.splitext(name)[1].lower() or "(no extension)"] += 1
                continue
            if _relpath_text(relpath) is None:
                shown = relpath.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                issues.append(Issue("bad_filename",
                                    "rename it to valid UTF-8 to ingest it", shown))
                continue
            info = stat_file(root, relpath)
            if isinstance(info, Issue):
                issues.append(info)
            else:
                files.append((relpath, info))
    files.sort()
    return files, issues, ignored


def _walk_url(root: str) -> tuple[list[tuple[str, _UrlStat]], list[Issue], Counter]:
    """:func:`walk_images` for an fsspec URL (object stores have no symlinks to follow)."""
    files, ignored = [], Counter()
    for info in list_files(root):
        extension = os.path.splitext(info.relpath)[1].lower()
        if extension not in IMAGE_EXTENSIONS:
            ignored[extension or "(no extension)"] += 1
            continue
        files.append((info.relpath, _UrlStat(info.size, info.mtime_ns)))
    return files, [], ignored


# -- folder layouts --------------------------------------------------------------------

def _split_of(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.strip().casefold())


def _subdirs_and_files(root: Path | str) -> tuple[list[str], list[str]]:
    """Names of the (not hidden) folders and of the files directly under ``root``."""
    try:
        if is_url(root):
            folders, files = list_dir(root)
        else:
            entries = list(os.scandir(root))
            folders = sorted(e.name for e in entries if e.is_dir())
            files = sorted(e.name for e in entries if not e.is_dir())
    except OSError as error:
        raise SourceError(f"Cannot list '{root}': {error.strerror or error}. Check that it "
                          f"exists and is readable.") from error
    return [name for name in folders if not name.startswith(".")], files


def source_kind(source: Path | str) -> str | None:
    """``"file"``, ``"dir"`` or None (nothing there) for a local path or an fsspec URL."""
    if is_url(source):
        return path_kind(source)
    return "file" if source.is_file() else "dir" if source.is_dir() else None


def detect_layout(source: Path | str) -> str:
    """Name the layout of ``source`` (a folder, a table or an array file; a folder may
    be an fsspec URL)."""
    kind = source_kind(source)
    if kind == "file":
        suffix = os.path.splitext(str(source))[1].lower()
        if suffix in (".csv", ".tsv", ".tab", ".txt"):
            return "csv"
        if suffix == ".npz":
            return "numpy"
        raise SourceError(f"Cannot tell how to ingest '{source}': expected a folder, a "
                          f".csv/.tsv table or a .npz array file. Pass --layout to say which.")
    if kind is None:
        raise SourceError(f"Source '{source}' does not exist. Check the path.")
    subdirs, files = _subdirs_and_files(source)
    if subdirs and all(_split_of(name) for name in subdirs):
        return "split-folders"
    if subdirs:
        return "folders"
    names = [n for n in files if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    pattern = re.compile(FILENAME_PRESETS["prefix"])
    labels = [m.group("label").casefold() for m in map(pattern.match, names) if m]
    # Every name matches, and names repeat: a few classes, not one word per photo.
    if names and len(labels) == len(names) and 2 <= len(set(labels)) <= max(2, len(names) // 2):
        return "filenames"
    return "unlabeled"


def plan_folders(root: Path | str, *, split: str | None, layout: str) -> SourcePlan:
    """ImageFolder trees (``class/x.jpg``), with or without ``train/``/``test/`` on top."""
    files, issues, ignored = walk_images(root)
    plan = SourcePlan(layout, root, f"{layout}:{root}", "", issues=issues, ignored=ignored)
    per_split: Counter = Counter()
    for relpath, info in files:
        parts = relpath.split("/")
        file_split = split or "train"
        if layout == "split-folders":
            file_split, parts = _split_of(parts[0]) or file_split, parts[1:]
        label = _checked_label(plan, parts[0], relpath) if len(parts) > 1 else None
        if label is None and file_split not in ("test", "val"):
            # A loose file beside the class folders: kept, unlabeled.
            file_split = "unlabeled"
        per_split[file_split] += 1
        plan.entries.append(Entry(relpath, info.st_size, info.st_mtime_ns, label, None, file_split))
    classes = sorted({e.label for e in plan.entries if e.label is not None})
    splits = ", ".join(f"{n} {s}" for s, n in sorted(per_split.items()))
    plan.detected = (f"{layout} layout: {len(classes)} classes "
                     f"({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}); {splits}")
    return plan


def plan_filenames(root: Path | str, *, pattern: str, split: str | None) -> SourcePlan:
    """Labels taken from file names by a regex with a ``label`` group (or a preset name)."""
    regex_text = FILENAME_PRESETS.get(pattern, pattern)
    try:
        regex = re.compile(regex_text)
    except re.error as error:
        raise SourceError(f"Label pattern {pattern!r} is not a valid regular expression "
                          f"({error}). Use a preset ({', '.join(FILENAME_PRESETS)}) or fix it.") from error
    if "label" not in regex.groupindex and regex.groups != 1:
        raise SourceError(f"Label pattern {pattern!r} must have a group named 'label', "
                          f"e.g. r'^(?P<label>[a-z]+)_\\d+'.")
    files, issues, ignored = walk_images(root)
    plan = SourcePlan("filenames", root, f"filenames:{root}", "", issues=issues, ignored=ignored)
    for relpath, info in files:
        match = regex.search(relpath.rsplit("/", 1)[-1])
        label = (match.group("label") if "label" in regex.groupindex else match.group(1)) if match else None
        if label and label_problem(label):
            label = _checked_label(plan, label, relpath)
        elif not label:
            plan.issues.append(Issue("label_pattern_mismatch",
                                     f"no label found by pattern {pattern!r}; ingested unlabeled",
                                     relpath))
        entry_split = (split or "train") if label else "unlabeled"
        plan.entries.append(Entry(relpath, info.st_size, info.st_mtime_ns, label or None, None,
                                  entry_split))
    classes = Counter(e.label for e in plan.entries if e.label)
    plan.detected = (f"labels in file names (pattern {pattern!r}): {len(classes)} classes "
                     f"({', '.join(f'{c} {n}' for c, n in classes.most_common(8))})")
    return plan


def plan_unlabeled(root: Path | str, *, split: str | None) -> SourcePlan:
    files, issues, ignored = walk_images(root)
    plan = SourcePlan("unlabeled", root, f"unlabeled:{root}", "", issues=issues, ignored=ignored)
    plan.entries = [Entry(r, i.st_size, i.st_mtime_ns, None, None, split or "unlabeled")
                    for r, i in files]
    plan.detected = f"unlabeled folder: {len(plan.entries)} images"
    return plan


# -- tables -----------------------------------------------------------------------------

def _pick_column(header: list[str], asked: str | None, candidates: tuple[str, ...], *,
                 role: str, option: str, path: Path) -> str | None:
    lowered = {name.casefold(): name for name in header}
    if asked is None:
        return next((lowered[c] for c in candidates if c in lowered), None)
    if asked in header:
        return asked
    if asked.casefold() in lowered:
        return lowered[asked.casefold()]
    close = difflib.get_close_matches(asked, header, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ColumnNotFoundError(
        f"Column '{asked}' ({role}) not found in '{path}' (header on line 1). Found columns: "
        f"{', '.join(header)}.{hint} Pass {option} with one of the found columns.",
        column=asked, found=header, path=str(path), line=1)


def _resolve_in_root(root: Path, text: str) -> str | None:
    """The path of ``text`` relative to ``root`` ('/'-separated), or None if it escapes."""
    candidate = Path(text) if os.path.isabs(text) else root / text
    normal = os.path.normpath(candidate)
    relative = os.path.relpath(normal, root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        return None
    relative = relative.replace(os.sep, "/")
    if not os.path.lexists(root / relative):
        # Names typed on one system and stored on another differ in Unicode normal form.
        for form in ("NFC", "NFD"):
            variant = unicodedata.normalize(form, relative)
            if os.path.lexists(root / variant):
                return variant
    return relative


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise SourceError(f"Table '{path}' is not UTF-8 (line {line}). Save it as UTF-8 "
                          f"and ingest again.") from error
    except OSError as error:
        raise SourceError(f"Cannot read table '{path}': {error.strerror}.") from error
    if path.suffix.lower() in (".tsv", ".tab"):
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = [(number, row) for number, row in enumerate(reader, start=1)]
    if not rows or not any(cell.strip() for cell in rows[0][1]):
        raise SourceError(f"Table '{path}' is empty: expected a header line with a path "
                          f"column (e.g. 'path,label').")
    header = [cell.strip() for cell in rows[0][1]]
    return header, [(n, row) for n, row in rows[1:] if any(cell.strip() for cell in row)]


def plan_csv(table: Path, *, root: Path | None = None, path_column: str | None = None,
             label_column: str | None = None, target_columns: list[str] | None = None,
             split_column: str | None = None, split: str | None = None,
             tags_column: str | None = None, tag_sep: str | None = None) -> SourcePlan:
    """A table of ``path`` + ``label`` (classes) or ``path`` + numeric target columns, or
    ``path`` + a column of several tags (``tags_column``, detected when named ``tags`` and
    no label column is found; cells split by ``tag_sep``, default the first of ``| ; ,``
    the cell holds, else whitespace: ``"cat|dog"``, Planet's ``"clear primary water"``).
    A row with one tag gets it as its label too; a row with several keeps no label (a
    label is one class) and its tags are read by :meth:`smartset.Workspace.tags`."""
    header, rows = _read_table(table)
    root = (root or table.parent).resolve()
    kw = {"path": table}
    path_col = _pick_column(header, path_column, _PATH_COLUMNS, role="image paths",
                            option="--path-column", **kw)
    if path_col is None:
        raise ColumnNotFoundError(
            f"No column of image paths in '{table}' (header on line 1). Found columns: "
            f"{', '.join(header)}. Name one 'path', or pass --path-column.",
            column="path", found=header, path=str(table), line=1)
    targets = [_pick_column(header, name, (), role="regression target",
                            option="--target-columns", **kw) for name in (target_columns or [])]
    label_col = None if targets else _pick_column(
        header, label_column, _LABEL_COLUMNS, role="class labels", option="--label-column", **kw)
    split_col = _pick_column(header, split_column, _SPLIT_COLUMNS, role="split",
                             option="--split-column", **kw)
    tags_col = None
    if tags_column is not None or (label_col is None and not targets and "tags" in header):
        tags_col = _pick_column(header, tags_column or "tags", (), role="tags",
                                option="--tags-column", **kw)
        if label_column is None and label_col == tags_col:
            label_col = None
    index = {name: i for i, name in enumerate(header)}
    plan = SourcePlan("csv", root, f"csv:{table.resolve()}", "")
    first_line: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            hint = ("; quote fields that hold the delimiter" if len(row) > len(header)
                    else "")
            plan.issues.append(Issue("csv_bad_row", f"line {line} has {len(row)} fields, "
                                     f"the header has {len(header)}{hint}", f"line {line}"))
            continue
        cell = row[index[path_col]].strip()
        if not cell:
            plan.issues.append(Issue("csv_bad_row", f"line {line} has an empty path", f"line {line}"))
            continue
        relpath = _resolve_in_root(root, cell)
        if relpath is None:
            plan.issues.append(Issue("outside_root", f"line {line}: '{cell}' is outside the data "
                                     f"root '{root}'; pass --root to widen it", cell))
            continue
        if relpath in first_line:
            plan.issues.append(Issue("csv_duplicate_path", f"line {line} repeats line "
                                     f"{first_line[relpath]}; the first is kept", relpath))
            continue
        first_line[relpath] = line
        label, values, tags = None, None, None
        if label_col is not None:
            label = _checked_label(plan, row[index[label_col]] or None, relpath,
                                   f"line {line}: ")
        if tags_col is not None:
            given = split_tags(row[index[tags_col]], tag_sep)
            tags = tuple(t for t in given if _checked_label(plan, t, relpath,
                                                            f"line {line}: tag ") is not None)
            if len(tags) == 1 and label is None:
                label = tags[0]
            tags = tags or None
        if targets:
            try:
                values = tuple(float(row[index[t]]) for t in targets)
            except ValueError:
                shown = ", ".join(f"{t}={row[index[t]]!r}" for t in targets)
                plan.issues.append(Issue("bad_target", f"line {line}: {shown} is not a number; "
                                         f"ingested without targets", relpath))
            else:
                if not all(math.isfinite(v) for v in values):
                    shown = ", ".join(f"{t}={row[index[t]]!r}" for t in targets)
                    plan.issues.append(Issue("bad_target", f"line {line}: {shown} is not a "
                                             f"finite number (NaN or infinity); ingested "
                                             f"without targets", relpath))
                    values = None
        row_split = split or ("unlabeled" if label is None and values is None and not tags
                              else "train")
        if split_col is not None and row[index[split_col]].strip():
            given = row[index[split_col]].strip()
            if _split_of(given) is None:
                plan.issues.append(Issue("unknown_split", f"line {line}: split {given!r} is not "
                                         f"one of {', '.join(SPLITS)}; used {row_split!r}", relpath))
            else:
                row_split = _split_of(given)
        info = stat_file(root, relpath)
        if isinstance(info, Issue):
            plan.issues.append(Issue(info.reason, f"line {line}: {info.detail}", relpath))
            continue
        plan.entries.append(Entry(relpath, info.st_size, info.st_mtime_ns, label, values, row_split,
                                  tags))
    what = (f"targets {', '.join(targets)}" if targets else
            f"labels from '{label_col}'" if label_col else "no labels")
    if tags_col is not None:
        what += f", tags from '{tags_col}'"
    plan.detected = (f"table '{table.name}': paths from '{path_col}', {what}"
                     f"{f', split from {split_col!r}' if split_col else ''}; {len(rows)} rows")
    return plan


def flag_label_variants(plan: SourcePlan) -> None:
    """Add a ``label_variants`` issue for labels that differ only by case or whitespace."""
    groups: dict[str, Counter] = {}
    for entry in plan.entries:
        if entry.label is not None:
            key = " ".join(entry.label.split()).casefold()
            groups.setdefault(key, Counter())[entry.label] += 1
    for key, spellings in sorted(groups.items()):
        stray = [s for s in spellings if s != s.strip()]
        if len(spellings) > 1 or stray:
            shown = ", ".join(f"{s!r} ({n})" for s, n in spellings.most_common())
            plan.issues.append(Issue(
                "label_variants",
                f"labels {shown} differ only by case or whitespace; kept as given. Merge them "
                f"with 'smartset label rename' if they are one class.", f"label:{key}"))
