"""``smartset augment``: offline expansion into a new version, preview grids, and the list
of named policies and transforms. Mounted by the main CLI as ``app.add_typer(augment_app,
name="augment")``; importing this module does not import torch (commands do, when run)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from smartset.errors import SmartsetError

augment_app = typer.Typer(
    help="Augmentation: grow a version with augmented copies (run), look first (preview), "
         "see the named policies and transforms (list).",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True)
_err = Console(stderr=True)

WorkspaceOption = Annotated[Optional[Path], typer.Option(
    "--workspace", "-w", envvar="SMARTSET_WORKSPACE",
    help="Workspace folder (default: $SMARTSET_WORKSPACE, else the current folder).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def _handle_errors(command):
    """A SmartsetError becomes one clear message (JSON with --json) and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SmartsetError as error:
            if kwargs.get("as_json"):
                _print_json({"error": {"type": type(error).__name__, "message": str(error)}})
            else:
                _err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def _open(workspace: Path | None):
    from smartset.workspace import open_workspace

    return open_workspace(workspace)


@augment_app.command("run")
@_handle_errors
def run(
    policy: Annotated[str, typer.Option(
        help="A named policy (see 'smartset augment list'), a registered transform, or a "
             ".yaml/.json policy file.")],
    factor: Annotated[int, typer.Option(
        min=1, help="Size of the new version over the source's (originals included): the "
                    "study's 1, 5, 25.")] = 5,
    version: Annotated[Optional[str], typer.Option(
        help="Source version (default: the live catalog's samples, derived ones left out).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Name of the new version (default: SOURCE-POLICY-xFACTOR).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random parameter.")] = 0,
    constraints: Annotated[Optional[str], typer.Option(
        help="Domain constraints to check the policy against, e.g. digits, ct, physical-units.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per augmentation batch.")] = 256,
    mode: Annotated[Optional[str], typer.Option(help="Decode images as this Pillow mode (L, RGB; default: as stored).")] = None,
    description: Annotated[Optional[str], typer.Option(help="What the new version is.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a new version: the source's samples plus augmented copies, with lineage."""
    from smartset.augment.offline import augment_version

    ws = _open(workspace)
    show = not as_json and sys.stderr.isatty()
    result = augment_version(ws, policy=policy, factor=factor, version=version, name=name,
                             seed=seed, constraints=constraints, batch_size=batch_size,
                             mode=mode, description=description, show_progress=show)
    if as_json:
        _print_json(result)
        return
    _out.print(f"Version {result['version']!r}: {result['n_samples']} samples "
               f"({result['n_original']} originals + {result['n_augmented']} augmented, "
               f"x{result['factor']}, policy {result['policy']!r}, seed {result['seed']}) in "
               f"{result['seconds']:.1f} s. Files: {result['folder']}")


@augment_app.command("preview")
@_handle_errors
def preview(
    policy: Annotated[Optional[str], typer.Option(
        help="Policy to preview (default: one row per named combination of the MNIST study).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Samples (columns).")] = 8,
    k: Annotated[int, typer.Option("--k", min=1, help="Augmentations per sample (rows).")] = 4,
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default: WORKSPACE/reports/augment/).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the samples shown and the augmentations.")] = 0,
    version: Annotated[Optional[str], typer.Option(help="Version to take samples from.")] = None,
    mode: Annotated[Optional[str], typer.Option(help="Decode images as this Pillow mode.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a PNG grid: originals in the first row, augmentations below."""
    from smartset.augment.preview import write_preview

    result = write_preview(_open(workspace), policy=policy, n=n, k=k, out=out, seed=seed,
                           version=version, mode=mode)
    if as_json:
        _print_json(result)
    else:
        _out.print(f"Preview of {result['policy']!r} ({result['columns']} samples, "
                   f"{result['rows']} rows): {result['path']}")


@augment_app.command("list")
@_handle_errors
def list_(as_json: JsonOption = False) -> None:
    """The named policies (with the study's factors), the transforms and the constraints."""
    import inspect

    from smartset.augment.policy import DOMAIN_CONSTRAINTS, available_policies
    from smartset.augment.transforms import available_transforms, transform_class

    transforms = []
    for name in available_transforms():
        cls = transform_class(name)
        signature = inspect.signature(cls.__init__)
        options = {p: (None if v.default is inspect.Parameter.empty else v.default)
                   for p, v in signature.parameters.items() if p != "self"}
        transforms.append({"name": name, "kind": cls.kind, "tags": sorted(cls.tags),
                           "options": options,
                           "summary": " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())})
    data = {"policies": available_policies(), "transforms": transforms,
            "constraints": {k: {"forbid": sorted(v.forbid), "max_rotation": v.max_rotation,
                                "why": v.why} for k, v in DOMAIN_CONSTRAINTS.items()}}
    if as_json:
        _print_json(data)
        return
    table = Table(title="Named policies (the MNIST study's combinations)")
    for column in ("name", "steps", "factors"):
        table.add_column(column)
    for name, info in data["policies"].items():
        table.add_row(name, " + ".join(info["steps"]) or "(none)",
                      ", ".join(f"x{f}" for f in info["factors"]))
    _out.print(table)
    table = Table(title=f"{len(transforms)} transforms")
    for column in ("name", "kind", "tags", "summary"):
        table.add_column(column)
    for t in transforms:
        table.add_row(t["name"], t["kind"], ", ".join(t["tags"]), t["summary"][:90])
    _out.print(table)
    _out.print("Constraints: " + "; ".join(
        f"{k} forbids {', '.join(v['forbid']) or 'nothing'}" for k, v in data["constraints"].items()))
