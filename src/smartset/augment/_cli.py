"""``smartset augment``: offline expansion into a new version, preview grids, and the list
of named policies and transforms. Mounted by the main CLI as ``app.add_typer(augment_app,
name="augment")``; importing this module does not import torch (commands do, when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from smartset._cli_common import (EngineOption, JsonOption, RayAddressOption, SmartsetGroup, Table,
                                  WorkersOption, WorkspaceOption, handle_errors, open_workspace,
                                  print_json, show_progress, use_ray_address)
from smartset._cli_common import out as console  # `out` is an option of preview

augment_app = typer.Typer(
    help="Augmentation: grow a version with augmented copies (run), look first (preview), "
         "see the named policies and transforms (list).",
    no_args_is_help=True,
    cls=SmartsetGroup,
    rich_markup_mode=None,
)

@augment_app.command("run")
@handle_errors
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
    seed: Annotated[int, typer.Option(min=0, help="Seed of every random parameter.")] = 0,
    constraints: Annotated[Optional[str], typer.Option(
        help="Domain constraints to check the policy against, e.g. digits, ct, physical-units.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Source images per batch (one task of the engine; the files do not depend on it).")] = 256,
    mode: Annotated[Optional[str], typer.Option(help="Decode images as this Pillow mode (L, RGB; default: as stored).")] = None,
    description: Annotated[Optional[str], typer.Option(help="What the new version is.")] = None,
    split: Annotated[Optional[list[str]], typer.Option(
        help="Augment this split (repeatable; 'all': every split). Default: every split but "
             "test/val, whose samples join the new version unaugmented.")] = None,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    workers: WorkersOption = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a new version: the source's samples plus augmented copies, with lineage.
    Every engine writes the same files for the same seed."""
    from smartset.augment.offline import augment_version

    ws = open_workspace(workspace)
    show = show_progress(as_json)
    use_ray_address(ray_address)
    result = augment_version(ws, policy=policy, factor=factor, version=version, name=name,
                             seed=seed, constraints=constraints, batch_size=batch_size,
                             mode=mode, description=description, splits=split,
                             engine=engine, workers=workers, show_progress=show)
    if as_json:
        print_json(result)
        return
    splits = ", ".join(result["augmented_splits"]) or "none"
    console.print(f"Version {result['version']!r}: {result['n_samples']} samples "
               f"({result['n_original']} originals + {result['n_augmented']} augmented "
               f"copies of split {splits}, x{result['factor']}, policy {result['policy']!r}, seed "
               f"{result['seed']}) in {result['seconds']:.1f} s. Files: {result['folder']}")
    if result["n_kept_as_is"]:
        kept = ", ".join(f"{k} {v}" for k, v in result["kept_splits"].items())
        console.print(f"Not augmented, kept as they are: {kept} (held-out splits; --split "
                      f"all to augment them too). The copies have lineage: train, evaluate "
                      f"and the folds keep each with its original and score originals only.")


@augment_app.command("preview")
@handle_errors
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

    result = write_preview(open_workspace(workspace), policy=policy, n=n, k=k, out=out, seed=seed,
                           version=version, mode=mode)
    if as_json:
        print_json(result)
    else:
        console.print(f"Preview of {result['policy']!r} ({result['columns']} samples, "
                   f"{result['rows']} rows): {result['path']}")


@augment_app.command("list")
@handle_errors
def list_(as_json: JsonOption = False) -> None:
    """The named policies (with the study's factors), the transforms and the constraints."""
    import inspect

    from smartset.augment.policy import (DOMAIN_CONSTRAINTS, TASK_POLICIES, available_policies,
                                         photo_policies)
    from smartset.augment.transforms import available_transforms, transform_class

    transforms = []
    for name in available_transforms():
        cls = transform_class(name)
        signature = inspect.signature(cls.__init__)
        # A None default may stand for a class-level default (``default_size``).
        options = {p: (None if v.default is inspect.Parameter.empty
                       else getattr(cls, f"default_{p}", None) if v.default is None
                       else v.default)
                   for p, v in signature.parameters.items() if p != "self"}
        transforms.append({"name": name, "kind": cls.kind, "tags": sorted(cls.tags),
                           "options": options,
                           "summary": " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())})
    data = {"policies": available_policies(), "task_policies": TASK_POLICIES,
            "photo_policies": photo_policies(),
            "transforms": transforms,
            "constraints": {k: {"forbid": sorted(v.forbid), "max_rotation": v.max_rotation,
                                "why": v.why} for k, v in DOMAIN_CONSTRAINTS.items()}}
    if as_json:
        print_json(data)
        return
    table = Table(title="Named policies (the MNIST study's combinations)")
    for column in ("name", "steps", "factors"):
        table.add_column(column)
    for name, info in data["policies"].items():
        table.add_row(name, " + ".join(info["steps"]) or "(none)",
                      ", ".join(f"x{f}" for f in info["factors"]))
    console.print(table)
    table = Table(title="Task policies (the knife and whale studies; --policy NAME anywhere)")
    for column in ("name", "steps"):
        table.add_column(column)
    for name, spec in TASK_POLICIES.items():
        table.add_row(name, " + ".join(
            step["op"] + "(" + ", ".join(f"{k}={v}" for k, v in step.items() if k != "op") + ")"
            for step in spec["transforms"]))
    console.print(table)
    table = Table(title="Photo policies (--policy NAME anywhere; RandAugment and TrivialAugment "
                        "over the registry)")
    for column in ("name", "steps"):
        table.add_column(column)
    for name, summary in data["photo_policies"].items():
        table.add_row(name, summary)
    console.print(table)
    table = Table(title=f"{len(transforms)} transforms")
    for column in ("name", "kind", "tags", "summary"):
        table.add_column(column)
    for t in transforms:
        table.add_row(t["name"], t["kind"], ", ".join(t["tags"]), t["summary"][:90])
    console.print(table)
    console.print("Constraints: " + "; ".join(
        f"{k} forbids {', '.join(v['forbid']) or 'nothing'}" for k, v in data["constraints"].items()))
