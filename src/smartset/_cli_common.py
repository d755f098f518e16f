"""What every ``smartset`` command shares: consoles, the workspace and --json options, the
error handler, and opening the workspace. Stage CLIs (cli.py, augment/_cli.py) import it."""

from __future__ import annotations

import functools
import json
import math
import os
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


def handle_errors(command):
    """Show a SmartsetError as one clear message (JSON with --json), exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SmartsetError as error:
            if kwargs.get("as_json"):
                print_json({"error": {"type": type(error).__name__, "message": str(error)}})
            else:
                # escaped: a message may hold brackets ("pip install 'smartset[ray]'")
                err.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False)
            raise typer.Exit(1) from None
        except ImportError as error:  # an optional extra (timm, ray, datasets): one line
            if "pip install" not in str(error):
                raise
            if kwargs.get("as_json"):
                print_json({"error": {"type": "ImportError", "message": str(error)}})
            else:
                err.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False)
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
