"""``smartset embed``: one backbone embedding per sample, cached for every stage that reads
them (audit, clean, review, baselines, ``predict --oof``). Importing this module does not
import torch (the command does, when run)."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from smartset._cli_common import (JsonOption, RayAddressOption, WorkspaceArgument,
                                  WorkspaceOption, check_engine, handle_errors, open_workspace,
                                  out, print_json, show_progress, use_ray_address)


@handle_errors
def embed_command(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    version: Annotated[Optional[str], typer.Option(help="Data set version (default: the live catalog).")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="A registered backbone (default: efficientnet_lite0), timm:NAME[=weights.pth], or a smartset checkpoint.")] = None,
    engine: Annotated[Optional[str], typer.Option(
        envvar="SMARTSET_ENGINE", callback=check_engine,
        help="serial (default: this process, all its threads; CUDA when present), local (a "
             "process pool) or ray (Ray Data: pip install 'smartset[ray]').")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    ray_address: RayAddressOption = None,
    as_json: JsonOption = False,
) -> None:
    """Embed every sample with a pretrained backbone (cached by content + backbone + size)."""
    from smartset.backbones import DEFAULT_BACKBONE, backbone_spec
    from smartset.embeddings import embed
    from smartset.learn._workspace import embedding_cache_status

    use_ray_address(ray_address)
    spec = backbone_spec(backbone or DEFAULT_BACKBONE)
    ws = open_workspace(workspace_arg, workspace)
    before = embedding_cache_status(ws, version, backbone=spec.name)
    started = time.perf_counter()
    result = embed(ws, version, backbone=spec.name, engine=engine, batch_size=batch_size,
                   progress=show_progress(as_json))
    seconds = time.perf_counter() - started
    paths = ws.samples(version).set_index("id")["relpath"]
    missing = [{"sample_id": sid, "file": str(paths.get(sid, "")), "reason": reason}
               for sid, reason in result.missing]
    cached = min(before["cached"], len(result))
    report = {"backbone": spec.name, "size": spec.size,
              "preprocessing": spec.preprocessing(), "version": version,
              "n": len(result), "dim": int(result.vectors.shape[1]),
              "cached": cached, "computed": len(result) - cached,
              "engine": engine or "serial", "cache": str(before["folder"]),
              "missing": missing, "seconds": round(seconds, 3)}
    if as_json:
        print_json(report)
        return
    out.print(f"{report['n']} samples embedded with {spec.description} "
              f"({report['dim']}-d, {spec.size} px): {report['cached']} cached, "
              f"{report['computed']} computed on {report['engine']} in {seconds:.1f} s")
    out.print(f"cache: {report['cache']}")
    if missing:
        out.print(f"{len(missing)} file(s) could not be decoded (no embedding):")
        for row in missing[:20]:
            out.print(f"  {row['file']}: {row['reason']}")
        if len(missing) > 20:
            out.print(f"  ... and {len(missing) - 20} more (--json lists them all)")


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
