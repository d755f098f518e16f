"""Names that become paths: checked once, here, before anything is written or deleted.

Every user-given name that smartset turns into part of a path (a version name, which names
``data/augment-NAME/`` and ``data/oversample-NAME/``; a policy label in a report file name;
any stage folder) goes through :func:`check_name`. Every folder smartset deletes goes
through :func:`remove_tree`, which refuses anything that does not resolve inside the
workspace, so a name that slipped past a check still cannot reach outside it.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from pathlib import Path

from smartset.errors import SmartsetError

__all__ = ["MAX_LABEL_LENGTH", "label_problem", "NameError_", "InvalidNameError", "check_name", "safe_name", "inside", "remove_tree",
           "NAME_RULE", "MAX_NAME"]

MAX_NAME = 100
_ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# Names Windows reserves for devices (a workspace may live on a shared drive).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}
NAME_RULE = (f"letters, digits and . _ + - only, starting with a letter or digit, at most "
             f"{MAX_NAME} characters, no '/', '\\' or '..'")


class InvalidNameError(SmartsetError, ValueError):
    """A name that would become part of a path breaks :data:`NAME_RULE`."""


NameError_ = InvalidNameError


def check_name(name, what: str = "name", *, example: str = "v2-augmented",
               error: type[InvalidNameError] = InvalidNameError) -> str:
    """Return ``name`` if it is safe as one path component, else raise ``error`` (an
    :class:`InvalidNameError`) naming the rule it broke and a valid example."""
    def refuse(why: str):
        shown = repr(name if not isinstance(name, str) or len(name) <= 60 else name[:60] + "...")
        raise error(f"{what.capitalize()} {shown} is not valid: {why}. Use {NAME_RULE}"
                               f", e.g. {example!r}.")

    if not isinstance(name, str):
        refuse(f"it is a {type(name).__name__}, not text")
    if not name:
        refuse("it is empty")
    if len(name) > MAX_NAME:
        refuse(f"it has {len(name)} characters")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        refuse("it holds a path separator")
    if ".." in name:
        refuse("it holds '..'")
    bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._+-]", c)})
    if bad:
        refuse(f"it holds {', '.join(repr(c) for c in bad[:5])}")
    if not _ALLOWED.fullmatch(name):
        refuse("it must start with a letter or digit")
    if name.split(".")[0].lower() in _RESERVED:
        refuse("it is a name Windows reserves for a device")
    return name


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """A default name made from ``text`` (a policy label, a version): characters outside
    the rule become '-', '..' is broken up, cut to the length limit."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "-", str(text))
    name = re.sub(r"\.{2,}", ".", name).lstrip("._+-")[:MAX_NAME] or fallback
    return name if name.split(".")[0].lower() not in _RESERVED else f"{name}-"[:MAX_NAME]


def inside(root: str | Path, path: str | Path) -> Path:
    """``path`` resolved, if it lies strictly inside ``root`` (resolved, links followed);
    else :class:`InvalidNameError`."""
    root_r = Path(root).resolve()
    target = Path(path).resolve()
    if target == root_r or root_r not in target.parents:
        raise InvalidNameError(f"'{path}' resolves to '{target}', outside the workspace "
                               f"'{root_r}': smartset writes and deletes only inside it.")
    return target


def remove_tree(workspace: str | Path, folder: str | Path, *, missing_ok: bool = True) -> None:
    """Delete ``folder`` and its files, only if it resolves inside ``workspace`` (and is not
    a link: a link is removed itself, never what it points to)."""
    folder = Path(folder)
    if folder.is_symlink():
        inside(workspace, folder.parent)
        folder.unlink()
        return
    if not folder.exists():
        if missing_ok:
            return
    target = inside(workspace, folder)
    shutil.rmtree(target)


MAX_LABEL_LENGTH = 200
"""Longest class label ingest (and the review app) accepts, in characters."""


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class name (None when it can): blank, longer than
    :data:`MAX_LABEL_LENGTH`, or holding a control or format character (NUL, newline, tab,
    zero-width and direction marks).
    Checked at the door by every source and by the review app's rename, merge and set."""
    if not isinstance(label, str):
        return f"it is {type(label).__name__}, not text"
    if not label.strip():
        return "it is blank"
    if len(label) > MAX_LABEL_LENGTH:
        return f"it has {len(label):,} characters (at most {MAX_LABEL_LENGTH})"
    bad = next((c for c in label if unicodedata.category(c) in ("Cc", "Cf", "Cs")), None)
    if bad is not None:
        return f"it holds the control character {bad!r}"
    return None
