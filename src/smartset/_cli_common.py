"""What every ``smartset`` command shares: consoles, the workspace and --json options, the
error handler, and opening the workspace. Stage CLIs (cli.py, augment/_cli.py) import it."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.console import Console

from smartset.errors import SmartsetError

# soft_wrap: a message written to a pipe or a file is never hard-wrapped at a width (scripts
# parse it; tests must not depend on the terminal or the length of a path); emoji=False: a
# class named "dog" stays "dog" wherever ":dog:" appears in data.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)

WorkspaceOption = Annotated[Optional[Path], typer.Option(
    "--workspace", "-w", envvar="SMARTSET_WORKSPACE",
    help="Workspace folder (default: $SMARTSET_WORKSPACE, else the current folder).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
EngineOption = Annotated[Optional[str], typer.Option(
    envvar="SMARTSET_ENGINE",
    help="local (default), serial, or ray (Ray Data: pip install 'smartset[ray]').")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    envvar="SMARTSET_RAY_ADDRESS",
    help="With --engine ray: the cluster to join (auto, ray://host:10001); default: a local "
         "Ray runtime.")]
WorkersOption = Annotated[Optional[int], typer.Option(
    min=1, help="Worker processes (default: all cores).")]


def _json_safe(value):
    """``value`` with every NaN and infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays
        return _json_safe(value.tolist())
    return value


def print_json(data) -> None:
    """One JSON document on stdout: valid JSON always (NaN and infinities become null)."""
    sys.stdout.write(json.dumps(_json_safe(data), indent=2, default=str, ensure_ascii=False,
                                allow_nan=False) + "\n")


def _say(kind: str, message: str, as_json: bool) -> None:
    if as_json:
        print_json({"error": {"type": kind, "message": message}})
    else:
        # escaped: a message may hold brackets ("pip install 'smartset[ray]'")
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_UNCHANGED = ("each catalog write is one transaction, so the catalog is as it was before the "
              "write that failed")


def environment_fault(error: BaseException) -> tuple[str, str] | None:
    """``(kind, one-line message)`` when ``error`` (or an error it was raised from) is a
    fault of the machine, not of smartset or its input: a full disk or quota, a read-only
    or forbidden path, a catalog SQLite cannot open, write or lock. Else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sqlite3.OperationalError):
            text = str(error).lower()
            if "disk is full" in text or "disk i/o error" in text:
                return ("DiskFullError",
                        f"The disk holding the workspace is full or failing ({error}): free some "
                        f"space (or move the workspace), then run the command again; "
                        f"{_UNCHANGED}.")
            if "readonly" in text or "read-only" in text:
                return ("ReadOnlyError",
                        f"The workspace's catalog cannot be written ({error}): make the "
                        f"workspace writable (chmod -R u+w, or mount it read-write); reading "
                        f"works as it is.")
            if "unable to open database" in text:
                return ("CatalogOpenError",
                        f"The workspace's catalog cannot be opened ({error}): check that "
                        f"catalog.sqlite and its folder exist and are readable (and writable "
                        f"to change them).")
            if "locked" in text or "busy" in text:
                return ("WorkspaceBusyError",
                        f"The catalog stayed locked by another process for too long ({error}): "
                        f"wait for it to finish, then run the command again.")
        text = str(error)
        if "No space left on device" in text or "file write failed" in text:
            # torch.save and other C++ writers raise RuntimeError, errno lost on the way
            return ("DiskFullError",
                    f"No space left on the device while writing ({text.splitlines()[-1][:200]}"
                    f"): free some space (or move the workspace), then run the command again; "
                    f"{_UNCHANGED}.")
        if isinstance(error, OSError) and error.errno is not None:
            where = f" '{error.filename}'" if error.filename else ""
            if error.errno in _NO_SPACE:
                return ("DiskFullError",
                        f"No space left on the device while writing{where} ({error.strerror}): "
                        f"free some space (or move the workspace), then run the command "
                        f"again; {_UNCHANGED}.")
            if error.errno in _NOT_WRITABLE:
                return ("ReadOnlyError",
                        f"Cannot write{where} ({error.strerror}): make it writable, or choose "
                        f"a folder you can write.")
            if error.errno == errno.EIO:
                return ("DiskError",
                        f"The disk reported an input/output error{' at' + where if where else ''}"
                        f": check the device, then run the command again; {_UNCHANGED}.")
        error = error.__cause__ or error.__context__
    return None


def handle_errors(command):
    """Show a SmartsetError, a missing optional extra, or a fault of the machine (disk full,
    read-only, catalog locked) as one clear line (JSON with --json), exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            return command(*args, **kwargs)
        except SmartsetError as error:
            _say(type(error).__name__, str(error), as_json)
            raise typer.Exit(1) from None
        except ImportError as error:  # an optional extra (timm, ray, datasets): one line
            if "pip install" not in str(error):
                raise
            _say("ImportError", str(error), as_json)
            raise typer.Exit(1) from None
        except (OSError, sqlite3.Error, RuntimeError) as error:
            fault = environment_fault(error)
            if fault is None:
                raise
            kind, message = fault
            _say(kind, " ".join(message.split()), as_json)  # one line, whatever it held
            raise typer.Exit(1) from None

    return wrapper


def open_workspace(workspace: Path | None):
    from smartset.workspace import open_workspace as open_

    return open_(workspace)


def show_progress(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty()


def use_ray_address(address: str | None) -> None:
    """``--ray-address``: the Ray engine reads it from SMARTSET_RAY_ADDRESS."""
    if address:
        os.environ["SMARTSET_RAY_ADDRESS"] = address
