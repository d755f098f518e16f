"""One grammar for the command line: the workspace as the first argument or -w for every
command, old spellings kept with a note, usage errors (exit 2) that list the allowed values
before any data is read, help in pipeline order without Rich markup."""


import pytest
import typer
from typer.testing import CliRunner

from smartset import workspace as workspace_module
from smartset._cli_common import (PIPELINE_ORDER, SmartsetGroup, lift_workspace, table_text,
                                  two_workspaces)
from smartset.cli import app
from smartset.errors import WorkspaceError

runner = CliRunner()

# Arguments a command needs besides the workspace, to get as far as opening it.
EXTRA = {
    "ingest": ["SOURCE"],
    "label set": ["s1", "--to", "x"],
    "label rename": ["a", "b"],
    "label undo": ["1"],
    "version create": ["v1"],
    "predict": ["--oof"],
    "evaluate": ["1"],
    "export": ["--format", "folder", "--out", "OUT"],
    "clean apply": ["plan.json"],
    "clean undo": ["1"],
    "augment run": ["--policy", "rotation"],
    "annotations import": ["SOURCE"],
    "annotations export": ["OUT"],
    "annotations relabel": ["a1", "--to", "x"],
    "annotations delete": ["a1"],
    "annotations undo": ["1"],
    "annotations augment": ["--policy", "rotation"],
    "annotations preview": ["--policy", "rotation"],
    "detect evaluate": ["predictions.json"],
    "detect evaluate-masks": ["--baseline"],
    "train": ["--model", "lenet"],
    "study transfer": ["--backbone", "lenet"],
    "detect predict": ["1"],
    "segment predict": ["1"],
}


def _commands(group, prefix=()):
    """Every command (path, click command) under ``group``, lazy ones included."""
    names = group.list_commands(None) if isinstance(group, SmartsetGroup) else list(group.commands)
    for name in names:
        command = group.get_command(None, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _with_workspace():
    root = typer.main.get_command(app)
    return sorted(" ".join(path) for path, command in _commands(root)
                  if any("--workspace" in getattr(p, "opts", ()) for p in command.params))


WITH_WORKSPACE = _with_workspace()


@pytest.fixture
def opened(monkeypatch):
    """Record the workspace a command opens, and stop it there (exit code 1)."""
    seen = []

    def fake_open(path=None):
        seen.append(path)
        raise WorkspaceError(f"opened {path}")

    monkeypatch.setattr(workspace_module, "open_workspace", fake_open)
    monkeypatch.delenv("SMARTSET_WORKSPACE", raising=False)
    return seen


def test_every_workspace_command_is_listed():
    # the grammar applies to the commands as they are: a new one is tested below as well
    assert {"stats", "samples", "predict", "label set", "version create", "clean plan",
            "export", "annotations relabel", "detect evaluate", "study augment",
            "review", "embed", "augment run"} <= set(WITH_WORKSPACE)
    assert "init" not in WITH_WORKSPACE and "synth shapes" not in WITH_WORKSPACE


@pytest.mark.parametrize("command", WITH_WORKSPACE)
def test_workspace_first_or_with_w(command, tmp_path, opened):
    ws = workspace_module.init(tmp_path / "ws").path
    words = command.split()
    extra = [str(tmp_path / a) if a in ("SOURCE", "OUT") else a
             for a in EXTRA.get(command, [])]
    for spelling in ([*words, str(ws), *extra], [*words, "-w", str(ws), *extra],
                     [*words, *extra, "--workspace", str(ws)]):
        result = runner.invoke(app, spelling)
        assert result.exit_code == 1, f"{spelling}: exit {result.exit_code}\n{result.output}"
        assert f"opened {ws}" in " ".join(result.output.split()), result.output
    assert len(opened) == 3


@pytest.mark.parametrize("args", [["samples", "WS", "-w", "OTHER"],
                                  ["label", "set", "WS", "s1", "--to", "x", "-w", "OTHER"],
                                  ["predict", "WS", "--oof", "--workspace=OTHER"],
                                  ["stats", "NOT_A_WS", "-w", "WS"]])
def test_two_workspaces_are_a_usage_error(args, tmp_path, opened):
    workspace_module.init(tmp_path / "ws")
    workspace_module.init(tmp_path / "other")
    names = {"WS": tmp_path / "ws", "OTHER": tmp_path / "other", "NOT_A_WS": tmp_path / "x"}
    result = runner.invoke(app, [str(names.get(a, a)) for a in args])
    assert result.exit_code == 2, result.output
    assert "two workspaces given" in " ".join(result.output.split())
    assert opened == []


def test_the_same_workspace_twice_and_the_environment(tmp_path, opened, monkeypatch):
    ws = workspace_module.init(tmp_path / "ws").path
    other = workspace_module.init(tmp_path / "other").path
    result = runner.invoke(app, ["runs", str(ws), "-w", str(ws)])
    assert result.exit_code == 1 and opened == [ws], result.output
    monkeypatch.setenv("SMARTSET_WORKSPACE", str(other))  # an argument beats the environment
    assert runner.invoke(app, ["runs", str(ws)]).exit_code == 1
    assert runner.invoke(app, ["version", "list", str(ws)]).exit_code == 1
    assert runner.invoke(app, ["version", "list"]).exit_code == 1
    assert [str(p) for p in opened[1:]] == [str(ws), str(ws), str(other)]


def test_lift_workspace_reads_only_a_workspace_folder(tmp_path):
    ws = str(workspace_module.init(tmp_path / "ws").path)
    command = typer.main.get_command(app).get_command(None, "label").get_command(None, "set")
    assert lift_workspace(command, [ws, "s1", "--to", "x"]) == ["--workspace", ws, "s1",
                                                                "--to", "x"]
    # an option's value is not the first argument; a sample id is not a workspace
    assert lift_workspace(command, ["--to", ws, "s1"]) == ["--to", ws, "s1"]
    assert lift_workspace(command, ["--reason", "why", ws, "s1", "--to", "x"])[:2] == [
        "--workspace", ws]
    assert lift_workspace(command, ["s1", "--to", "x"]) == ["s1", "--to", "x"]
    assert lift_workspace(command, ["--", ws, "s1"])[:2] == ["--workspace", ws]
    with pytest.raises(type(two_workspaces("a", "b"))):
        lift_workspace(command, [ws, "s1", f"-w{tmp_path}"])


def test_deprecated_spellings_say_the_new_one(tmp_path, opened):
    ws = str(workspace_module.init(tmp_path / "ws").path)
    cases = [(["clean", ws, "--undo", "3"], "smartset clean undo RUN"),
             (["clean", "-w", ws, "--apply=plan.json"], "smartset clean apply PLAN"),
             (["annotations", "relabel", "a1", "--category", "x", "-w", ws],
              "smartset annotations relabel --to C"),
             (["annotations", "export", str(tmp_path / "o"), "-w", ws],
              "smartset export --out OUT --format F"),
             (["review", ws, "--export"], "smartset version create NAME --reviewed"),
             (["clean", "apply", ws, "plan.json", "--version", "v"],
              "smartset clean apply --name NAME")]
    for args, new in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, f"{args}: {result.output}"
        assert f"is deprecated; use '{new}'." in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 + result.stderr.count("error")
    # 'smartset clean' alone is the plan, without a note
    result = runner.invoke(app, ["clean", ws])
    assert result.exit_code == 1 and "is deprecated" not in result.stderr, result.output
    assert len(opened) == len(cases) + 1


@pytest.mark.parametrize("args, allowed", [
    (["ingest", "WS", "SRC", "--layout", "folder"], "'folders', 'split-folders'"),
    (["ingest", "WS", "SRC", "--split", "training"], "'train', 'val', 'test', 'unlabeled'"),
    (["ingest", "WS", "SRC", "--engine", "foo"], "'local', 'ray', 'serial'"),
    (["predict", "WS", "--oof", "--engine", "spark"], "'local', 'ray', 'serial'"),
    (["embed", "WS", "--engine", "spark"], "'local', 'ray', 'serial'"),
    (["augment", "run", "WS", "--policy", "rotation", "--engine", "x"], "'serial'"),
    (["export", "WS", "--format", "x", "--out", "o"], "'folder', 'csv', 'hf', 'coco'"),
    (["evaluate", "WS", "1", "--shift", "darker", "--shift", "y"], "'darker', 'brighter'"),
    (["clean", "plan", "WS", "--features", "pixels"], "'auto', 'oof', 'backbone'"),
])
def test_bad_choices_exit_2_before_anything_runs(args, allowed, tmp_path, opened):
    workspace_module.init(tmp_path / "ws")
    names = {"WS": str(tmp_path / "ws"), "SRC": str(tmp_path)}
    result = runner.invoke(app, [names.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert allowed in " ".join(result.output.split())
    assert opened == []  # nothing was read


def test_help_in_pipeline_order_without_markup():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    ranked = [name for name in PIPELINE_ORDER if name in listed]
    assert listed[:len(ranked)] == ranked and listed[:5] == ["init", "ingest", "stats",
                                                             "issues", "samples"]
    for command in (["ingest"], ["predict"], ["embed"], ["augment", "run"]):
        text = " ".join(runner.invoke(app, [*command, "--help"]).output.split())
        assert "pip install 'smartset[ray]'" in text, (command, text)
        assert "\\[" not in text


def _command_list(group) -> str:
    try:
        from typer._click import Context, HelpFormatter
    except ImportError:  # typer over the click package
        from click import Context, HelpFormatter
    formatter = HelpFormatter(width=120)
    group.format_commands(Context(group), formatter)
    return formatter.getvalue()


def test_lazy_commands_list_their_own_short_help():
    group = typer.main.get_command(app)
    lazy_help = _command_list(group)
    assert "clean" in lazy_help and "review" in lazy_help
    for name in group.lazy:
        group.get_command(None, name)  # imports the module: the real command replaces it
        assert name in group.commands
    assert _command_list(group) == lazy_help


def test_table_cells_never_read_nan_or_none():
    assert [table_text(v) for v in (None, float("nan"), "dog", 0, "[red]x")] == [
        "", "", "dog", "0", "[red]x"]


def test_last_without_a_training_run_says_what_to_run(tmp_path):
    ws = str(workspace_module.init(tmp_path / "ws").path)
    for args in (["evaluate", ws, "last"], ["predict", ws, "last", "--folder", str(tmp_path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "No finished training run yet: run 'smartset train' first" in " ".join(
            result.output.split())
