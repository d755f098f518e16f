"""The ``smartset`` entry point (``smartset.cli:main``): a fast path for the command
scripts call most, ``smartset samples [WS] --json``, and the Typer app
(:mod:`smartset._cli_app`) for everything else.

Written by hand because Typer 0.29 passes every non-boolean option through pydantic and
builds the click command on each start: about 0.2 s of imports before ``samples --json``
reads a row. The fast path recognises only the exact shapes the Typer command accepts
without a question (the workspace as first argument or ``-w``, ``--json``, ``--limit`` as
plain digits, ``--split``, ``--version``), calls the same workspace function and prints
with the same writer; anything else (help, other options, values that look like options,
two workspaces) goes to Typer, and so does any error met on the fast path before it
printed, so that messages and exit codes are Typer's own. A test keeps the two paths'
output byte for byte equal and checks that the fast path imports neither Typer nor
pydantic.

``from smartset.cli import app`` (and any other name of the Typer module) still works:
module attributes not defined here are read from :mod:`smartset._cli_app`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

__all__ = ["main", "fast_samples_args"]

_DIGITS = re.compile(r"0|[1-9][0-9]{0,17}")
_VALUE_OPTIONS = {"--limit": "limit", "--split": "split", "--version": "version",
                  "--workspace": "workspace", "-w": "workspace"}


def fast_samples_args(argv: list[str]) -> dict | None:
    """The arguments of ``samples ... --json`` when ``argv`` (without the program name) has
    a shape the fast path answers exactly as the Typer command would, else None.

    Returns ``{"workspace": str | None, "positional": bool, "version", "split",
    "limit": int}``. Each option at most once; a value may not start with ``-``.
    """
    if len(argv) < 2 or argv[0] != "samples":
        return None
    given: dict[str, str] = {}
    positional: list[str] = []
    as_json = False
    i, rest = 0, argv[1:]
    while i < len(rest):
        token = rest[i]
        if token == "--json":
            as_json = True
            i += 1
            continue
        name, eq, value = token.partition("=")
        if token.startswith("-w") and not token.startswith("--") and len(token) > 2:
            name, eq, value = "-w", "=", token[2:]  # -wPATH
        if name in _VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(rest):
                    return None
                value = rest[i + 1]
            key = _VALUE_OPTIONS[name]
            if key in given or not value or value.startswith("-"):
                return None
            given[key] = value
            i += 1 if eq else 2
            continue
        if token.startswith("-"):
            return None  # --help, another option, "--", "-": Typer answers
        positional.append(token)
        i += 1
    if not as_json or len(positional) > 1:
        return None
    if "limit" in given and not _DIGITS.fullmatch(given["limit"]):
        return None
    workspace = given.get("workspace")
    if positional:
        if workspace is not None or not _is_workspace(positional[0]):
            return None  # Typer compares the two, or says what the argument is not
        workspace = positional[0]
    elif workspace is None:
        workspace = os.environ.get("SMARTSET_WORKSPACE") or None  # as click reads envvar
    return {"workspace": workspace, "positional": bool(positional),
            "version": given.get("version"), "split": given.get("split"),
            "limit": int(given.get("limit", 20))}


def _is_workspace(path: str) -> bool:
    """As :func:`smartset._cli_common.is_workspace` (which imports Typer)."""
    from smartset.catalog import CATALOG_FILE

    try:
        return (Path(path).expanduser() / CATALOG_FILE).is_file()
    except (OSError, ValueError):
        return False


def _fast_samples(args: dict) -> bool:
    """Print ``samples --json``; False (nothing printed) when anything went wrong."""
    from smartset._json_out import print_json
    from smartset.workspace import open_workspace

    try:
        ws = open_workspace(Path(args["workspace"]) if args["workspace"] is not None else None)
        try:
            total, shown = ws.sample_records(args["version"], split=args["split"],
                                             limit=args["limit"] or None)
        finally:
            ws.close()
    except Exception:  # noqa: BLE001 - Typer runs the command again and says what it is
        return False
    print_json({"total": total, "samples": shown})
    return True


def run_typer(argv: list[str] | None = None) -> None:
    """The Typer app with each command built when first used (``argv``: sys.argv[1:])."""
    from smartset._cli_app import app
    from smartset._cli_common import build_lazily

    build_lazily(app)(args=argv, prog_name="smartset")


def main(argv: list[str] | None = None) -> None:
    """The ``smartset`` entry point: ``samples --json`` on the fast path, the rest (and
    any error) through the Typer app."""
    args = fast_samples_args(sys.argv[1:] if argv is None else argv)
    if args is not None and _fast_samples(args):
        return
    run_typer(argv)


def __getattr__(name: str):
    # The Typer app and its helpers, imported when first asked for.
    if name.startswith("__"):
        raise AttributeError(name)
    from smartset import _cli_app

    try:
        return getattr(_cli_app, name)
    except AttributeError:
        raise AttributeError(f"module 'smartset.cli' has no attribute {name!r}") from None
