"""``smartset review``: start the review app, or export the reviewed version."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from smartset._cli_common import (JsonOption, WorkspaceArgument, WorkspaceOption, deprecated,
                                  err, handle_errors, open_workspace, out, print_json)

__all__ = ["review", "review_app"]


@handle_errors
def review(
    workspace_arg: WorkspaceArgument = None,
    workspace: WorkspaceOption = None,
    host: Annotated[str, typer.Option(
        help="Address to bind. Anything but the loopback needs --allow-remote.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 0,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow --host beyond 127.0.0.1: anyone who can reach it and "
                               "has the token can change labels.")] = False,
    open_browser: Annotated[bool, typer.Option(
        "--open", help="Open the app in the default browser.")] = False,
    author: Annotated[Optional[str], typer.Option(
        help="Who decisions are recorded as (default: $SMARTSET_AUTHOR, else $USER).")] = None,
    export: Annotated[bool, typer.Option(
        "--export", hidden=True,
        help="Deprecated: 'smartset version create NAME --reviewed'.")] = False,
    name: Annotated[Optional[str], typer.Option(
        hidden=True, help="With --export: the version's name.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Review labels in a local web app, by keyboard: suspicious labels, duplicate sets,
    audit issues, one class at a time, what nobody reviewed yet, cleaning plans. Every
    decision is a label or mark event. Prints the URL (with its session token)."""
    from smartset.review.server import is_loopback, serve

    if export:
        deprecated("smartset review --export", "smartset version create NAME --reviewed")
    ws = open_workspace(workspace_arg, workspace)
    if export:
        from smartset.review.actions import export_version

        info = export_version(ws, name)
        ws.close()
        if as_json:
            print_json(info)
        else:
            out.print(f"Version {info['name']!r}: {info['n_samples']} samples (the reviewed "
                      f"state), fingerprint {info['fingerprint'][:12]}.")
        return
    path = ws.path
    ws.close()
    if not is_loopback(host):
        if not allow_remote:
            raise typer.BadParameter(f"--host {host} would expose the workspace beyond this "
                                     f"machine; add --allow-remote if that is meant.")
        err.print(f"warning: serving on {host}: anyone who can reach this "
                  f"machine and has the URL's token can read images and change labels.")

    def ready(url: str) -> None:
        if as_json:  # one line, so a script can read it while the server runs
            sys.stdout.write(json.dumps({"url": url, "workspace": str(path)}) + "\n")
        else:
            out.print(f"Reviewing {path}\nOpen: {url}\n(the token in the URL is this "
                      f"session's key; Ctrl+C stops the server)", highlight=False)
        sys.stdout.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    serve(path, host=host, port=port, author=author, allow_remote=allow_remote,
          on_ready=ready)


# Mounted lazily by the main CLI (importing smartset.review imports pandas).
review_app = typer.Typer(rich_markup_mode=None, add_completion=False)
review_app.command("review")(review)
