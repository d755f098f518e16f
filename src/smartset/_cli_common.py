"""What every ``smartset`` command shares: consoles, the workspace and --json options, the
error handler, opening the workspace, and :class:`SmartsetGroup`, the command group that
gives every command the same grammar.

The grammar (one rule, kept here so that every command follows it):

- **The workspace.** Every command that opens a workspace takes it as its first argument
  or as ``-w/--workspace``; else ``$SMARTSET_WORKSPACE``; else the current folder. A first
  argument is taken as the workspace when it is a folder holding ``catalog.sqlite``, so
  commands with arguments of their own (``label set [WORKSPACE] SAMPLE... --to L``,
  ``predict [WORKSPACE] [RUN]``) read it the same way. Two different workspaces given is a
  usage error (exit code 2).
- **Old spellings** keep working and print a one-line note on stderr naming the new one
  (:func:`deprecated`).
- **Usage errors** (a bad choice value, two workspaces) exit with code 2 and list the
  allowed values; errors of smartset exit with 1, one line saying what to do.

Written by hand rather than with Typer alone because Typer has no hook for a positional
that may precede a command's own positionals, nor for lazily imported command modules
(``smartset --help`` must start without importing pandas or torch).
"""

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
from typer.core import TyperGroup

try:  # newer typer carries its own trimmed click: its exceptions are the ones it catches
    from typer._click.exceptions import UsageError
    from typer._click.globals import get_current_context
    from typer._click.utils import make_default_short_help
except ImportError:  # typer over the click package
    from click import UsageError, get_current_context
    from click.utils import make_default_short_help

from smartset.errors import SmartsetError

# soft_wrap: a message written to a pipe or a file is never hard-wrapped at a width (scripts
# parse it; tests must not depend on the terminal or the length of a path); emoji=False: a
# class named "dog" stays "dog" wherever ":dog:" appears in data; markup=False: brackets in
# data or messages ("[ray]", a class named "[red]") print as they are, in tables too.
# Rich is imported when a command first prints (not for --help or --json).
class _Console:
    """A ``rich.console.Console`` made on first use."""

    def __init__(self, **options):
        self._options = options
        self._console = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


out = _Console(soft_wrap=True, emoji=False, markup=False)
err = _Console(stderr=True, soft_wrap=True, emoji=False, markup=False)


def Table(*args, **kwargs):  # noqa: N802 - stands for the class it makes
    """A ``rich.table.Table`` (rich imported when a table is first made)."""
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)

WORKSPACE_HELP = ("Workspace folder; also accepted as the first argument (a folder holding "
                  "catalog.sqlite). Default: $SMARTSET_WORKSPACE, else the current folder.")
WorkspaceOption = Annotated[Optional[Path], typer.Option(
    "--workspace", "-w", envvar="SMARTSET_WORKSPACE", help=WORKSPACE_HELP)]
WorkspaceArgument = Annotated[Optional[Path], typer.Argument(
    metavar="WORKSPACE", show_default=False,
    help="The workspace (else -w, $SMARTSET_WORKSPACE or the current folder).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]


def check_engine(ctx: typer.Context | None, param: typer.CallbackParam | None,
                 value: str | None) -> str | None:
    """An ``--engine`` callback: an unknown engine is a usage error (exit 2) naming the
    engines, raised before any data is read. The registry is open
    (:func:`smartset.engine.register_engine`), so it is read when a value is given."""
    if value is None:
        return None
    from smartset.engine import available_engines

    known = sorted(set(available_engines()) | {"ray"})
    if value not in known:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, known))}.",
                                 ctx=ctx, param=param)
    return value


def one_of(values):
    """An option callback: each value given (one, or a list for a repeatable option) must be
    one of ``values``, else a usage error (exit 2) listing them, before the command runs."""

    def check(ctx: typer.Context | None, param: typer.CallbackParam | None, value):
        for item in [value] if isinstance(value, str) else (value or ()):
            if item not in values:
                raise typer.BadParameter(f"{item!r} is not one of "
                                         f"{', '.join(map(repr, values))}.", ctx=ctx,
                                         param=param)
        return value

    return check


EngineOption = Annotated[Optional[str], typer.Option(
    envvar="SMARTSET_ENGINE", callback=check_engine,
    help="local (default), serial, or ray (Ray Data: pip install 'smartset[ray]').")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    envvar="SMARTSET_RAY_ADDRESS",
    help="With --engine ray: the cluster to join (auto, ray://host:10001); default: a local "
         "Ray runtime.")]
WorkersOption = Annotated[Optional[int], typer.Option(
    min=1, help="Worker processes (default: all cores).")]


from smartset._json_out import json_safe as _json_safe, print_json  # noqa: E402,F401


def _say(kind: str, message: str, as_json: bool) -> None:
    if as_json:
        print_json({"error": {"type": kind, "message": message}})
    else:
        from rich.markup import escape

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


def is_workspace(path: str | Path) -> bool:
    """Whether ``path`` is a workspace folder: a folder holding the catalog."""
    from smartset.catalog import CATALOG_FILE

    try:
        return (Path(path).expanduser() / CATALOG_FILE).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a workspace
        return False


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def two_workspaces(first, second) -> UsageError:
    """The usage error (exit code 2) for two different workspaces in one command."""
    return UsageError(f"two workspaces given ({first} and {second}): give one, as the "
                            f"first argument or with -w.")


def pick_workspace(positional: Path | None, option: Path | None) -> Path | None:
    """The workspace of a command that declares a ``[WORKSPACE]`` argument and ``-w``: the
    one given; both given and different is a usage error (exit 2). A ``-w`` that came from
    ``$SMARTSET_WORKSPACE`` yields to the argument. None: the environment or current folder
    (:func:`smartset.workspace.find_workspace`)."""
    if positional is None or option is None:
        return positional if positional is not None else option
    context = get_current_context(silent=True)
    source = context.get_parameter_source("workspace") if context is not None else None
    if source is not None and source.name == "ENVIRONMENT":
        return positional
    if not _same_path(positional, option):
        raise two_workspaces(positional, option)
    return positional


def open_workspace(workspace: Path | None, option: Path | None = None):
    """Open the workspace of a command: ``workspace`` (the argument or -w), or, for commands
    that declare both, :func:`pick_workspace` of the two."""
    from smartset.workspace import open_workspace as open_

    return open_(pick_workspace(workspace, option))


def deprecated(old: str, new: str) -> None:
    """The one-line note an old spelling prints on stderr (it keeps working)."""
    sys.stderr.write(f"note: '{old}' is deprecated; use '{new}'.\n")


def _options(command) -> list:
    return [p for p in command.params if getattr(p, "param_type_name", "") == "option"]


def _workspace_option(command):
    return next((p for p in _options(command) if "--workspace" in p.opts), None)


def lift_workspace(command, args: list[str]) -> list[str]:
    """``args`` of ``command`` with a leading workspace argument turned into ``--workspace``.

    The first positional argument (options and their values skipped) is the workspace when
    it is a folder holding ``catalog.sqlite`` and the command has ``-w/--workspace``. A
    ``-w`` naming another folder as well is a usage error (exit code 2). Commands without
    ``-w`` (``init``, ``synth shapes``) are left alone.
    """
    option = _workspace_option(command)
    if option is None or not args:
        return args
    takes_value = {name for param in _options(command) if not param.is_flag and not param.count
                   for name in (*param.opts, *param.secondary_opts)}
    index, given = None, []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":  # what follows is positional
            if index is None and i + 1 < len(args):
                index = i + 1
            break
        if token.startswith("-") and token != "-":
            name, eq, value = token.partition("=")
            if name in option.opts:
                if eq:
                    given.append(value)
                elif i + 1 < len(args):
                    given.append(args[i + 1])
            elif token.startswith("-w") and not token.startswith("--"):
                given.append(token[2:])  # -wPATH
            i += 2 if (not eq and name in takes_value) else 1
            continue
        if index is None:
            index = i
        i += 1
    if index is None or not is_workspace(args[index]):
        return args
    workspace = args[index]
    for other in given:
        if not _same_path(other, workspace):
            raise two_workspaces(workspace, other)
    return ["--workspace", workspace] + args[:index] + args[index + 1:]


# The order commands are listed in: the pipeline's, then the rest alphabetically.
PIPELINE_ORDER = ("init", "ingest", "stats", "issues", "samples", "audit", "embed", "clean",
                  "review", "label", "version", "augment", "models", "baseline", "train",
                  "predict", "evaluate", "study", "export", "annotations", "detect", "segment",
                  "synth", "runs")


class SmartsetGroup(TyperGroup):
    """A command group with smartset's grammar: commands listed in pipeline order, a
    leading workspace argument read as ``-w`` (:func:`lift_workspace`) by every command,
    and commands whose module is imported only when they run or show their own help.

    ``lazy`` maps a command name to ``(module, attribute, short help)``: the attribute is a
    ``typer.Typer`` (a group or a single command); the short help is what ``--help`` lists
    without importing the module (a test keeps it equal to the command's own).
    """

    lazy: dict[str, tuple[str, str, str]] = {}

    def _pending(self) -> dict:
        """Commands registered with :meth:`defer`, not built yet: name -> (build, help)."""
        return self.__dict__.setdefault("_deferred", {})

    def defer(self, name: str, build, short_help: str, *, hidden: bool = False) -> None:
        """Add a command that ``build()`` makes when it is first used; ``--help`` lists it
        with ``short_help`` (nothing listed when ``hidden``)."""
        self._pending()[name] = (build, short_help, hidden)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = list(dict.fromkeys([*self.commands, *self._pending(), *self.lazy]))
        rank = {name: i for i, name in enumerate(PIPELINE_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))

    def get_command(self, ctx: typer.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is None and (cmd_name in self.lazy or cmd_name in self._pending()):
            command = self.load(cmd_name)
        return command

    def load(self, cmd_name: str):
        """Build a deferred command, or import a lazy command's module and build it (kept)."""
        import importlib

        if cmd_name in self._pending():
            command = self._pending().pop(cmd_name)[0]()
        else:
            module, attribute, _ = self.lazy[cmd_name]
            command = build_typer(getattr(importlib.import_module(module), attribute),
                                  cmd_name)
        command.name = cmd_name
        self.add_command(command, cmd_name)
        return command

    def _listed_help(self, name: str) -> tuple[str, bool] | None:
        """(short help, hidden) of a command not built yet, else None."""
        if name in self.commands:
            return None
        if name in self._pending():
            _, text, hidden = self._pending()[name]
            return text, hidden
        if name in self.lazy:
            return self.lazy[name][2], False
        return None

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not hasattr(command, "commands"):  # not a group
            rest = lift_workspace(command, rest)
            if _workspace_option(command) is not None and not any(
                    getattr(p, "param_type_name", "") == "argument"
                    and (p.name == "workspace_arg" or "WORKSPACE" in (p.metavar or ""))
                    for p in command.params):
                command.options_metavar = "[WORKSPACE] [OPTIONS]"
        return name, command, rest

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        """As click's, but a lazy command's short help is read from :attr:`lazy`."""
        rows = []
        for name in self.list_commands(ctx):
            listed = self._listed_help(name)
            if listed is not None:
                if not listed[1]:
                    rows.append((name, make_default_short_help(
                        listed[0], formatter.width - 6 - len(name))))
                continue
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def table_text(value) -> str:
    """A table cell: None and NaN read as empty, never 'None' or 'nan'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def show_progress(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty()


def use_ray_address(address: str | None) -> None:
    """``--ray-address``: the Ray engine reads it from SMARTSET_RAY_ADDRESS."""
    if address:
        os.environ["SMARTSET_RAY_ADDRESS"] = address


def build_typer(instance: typer.Typer, name: str):
    """The click command of a Typer mounted as ``name`` (a group, or its one command), as
    ``add_typer`` would mount it: no completion options of its own."""
    wrapper = typer.Typer(add_completion=False, rich_markup_mode=None,
                          pretty_exceptions_enable=False)
    single = (len(instance.registered_commands) == 1 and not instance.registered_groups
              and instance.registered_callback is None)
    if single:
        wrapper.registered_commands.append(instance.registered_commands[0])
        return typer.main.get_command(wrapper)
    wrapper.add_typer(instance, name=name)
    return typer.main.get_command(wrapper).commands[name]


def _value(setting):
    """A Typer setting's value (Typer wraps defaults in ``DefaultPlaceholder``)."""
    return getattr(setting, "value", setting)


def build_lazily(app: typer.Typer):
    """The click group of ``app`` (a Typer whose group class is a :class:`SmartsetGroup`)
    with each command and sub-group built only when it is run or shows its help.

    Typer builds every command of an app up front (it reads each signature); for
    ``smartset --help`` or ``smartset samples`` that is most of the start-up. The group
    returned behaves as ``typer.main.get_command(app)`` does (a test compares the two).
    """
    import inspect

    commands, groups = app.registered_commands, app.registered_groups
    app.registered_commands, app.registered_groups = [], []
    try:
        group = typer.main.get_command(app)  # the callback and its options, no commands
    finally:
        app.registered_commands, app.registered_groups = commands, groups

    def command_builder(info):
        def build():
            single = typer.Typer(rich_markup_mode=_value(app.rich_markup_mode),
                                 pretty_exceptions_enable=False, add_completion=False)
            single.registered_commands.append(info)
            return typer.main.get_command(single)
        return build

    def group_builder(info, name):
        def build():
            wrapper = typer.Typer(rich_markup_mode=_value(app.rich_markup_mode),
                                  pretty_exceptions_enable=False, add_completion=False)
            wrapper.registered_groups.append(info)
            return typer.main.get_command(wrapper).commands[name]
        return build

    for info in commands:
        name = _value(info.name) or info.callback.__name__.lower().replace("_", "-")
        text = _value(info.help) or inspect.getdoc(info.callback) or ""
        group.defer(name, command_builder(info), _value(info.short_help) or text,
                    hidden=bool(_value(info.hidden)))
    for info in groups:
        name = _value(info.name) or _value(info.typer_instance.info.name)
        text = _value(info.help) or _value(info.typer_instance.info.help) or ""
        group.defer(name, group_builder(info, name), text,
                    hidden=bool(_value(info.hidden) or _value(info.typer_instance.info.hidden)))
    return group
