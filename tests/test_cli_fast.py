"""The entry point's fast path for ``smartset samples [WS] --json``: it prints byte for
byte what the Typer command prints, hands every other shape (and every error) to Typer,
and imports neither Typer nor pydantic (checked in sys.modules of a fresh process)."""

import json
import shutil
import subprocess
import sys

import pytest

from smartset import cli

SLOW = ("typer", "pydantic", "click", "rich", "pandas", "numpy")


@pytest.fixture
def workspace(ws, tmp_path, fixtures):
    """Seven images in split folders, one relabeled, and a version of the train split."""
    root = tmp_path / "src"
    for split, cls, names in (("train", "cat", "abc"), ("train", "dog", "de"),
                              ("test", "cat", "f"), ("test", "dog", "g")):
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(fixtures / "good.png", root / split / cls / f"{name}.png")
    ws.ingest(root, engine="serial", show_progress=False)
    first = ws.samples()["id"].iloc[0]
    ws.relabel([first], "bird ü [red]", origin="test")
    ws.create_version("v1", split="train")
    return ws.path


def _run(function, argv, capsys) -> tuple[int, str, str]:
    code = 0
    try:
        function(argv)
    except SystemExit as exit:
        code = exit.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


FAST_SHAPES = [
    ["samples", "{ws}", "--json"],
    ["samples", "--json", "{ws}"],
    ["samples", "-w", "{ws}", "--json"],
    ["samples", "--workspace={ws}", "--json", "--limit", "3"],
    ["samples", "{ws}", "--json", "--limit=0"],
    ["samples", "{ws}", "--json", "--split", "test"],
    ["samples", "{ws}", "--json", "--version", "v1", "--limit", "2"],
    ["samples", "--json"],  # the workspace from $SMARTSET_WORKSPACE
]

TYPER_SHAPES = [  # Typer answers: help, errors, other options, values it must judge
    ["samples", "{ws}"],
    ["samples", "{ws}", "--json", "--help"],
    ["samples", "{ws}", "--json", "--version", "nope"],
    ["samples", "{ws}", "--json", "--limit", "-1"],
    ["samples", "{ws}", "--json", "--limit", "x"],
    ["samples", "{ws}", "--json", "--limit", "1", "--limit", "2"],
    ["samples", "{ws}", "--json", "--bogus"],
    ["samples", "{ws}", "-w", "{tmp}", "--json"],
    ["samples", "{tmp}/missing", "--json"],
    ["samples", "{ws}", "--json", "--split"],
]


def _argv(shape, ws, tmp_path):
    return [part.format(ws=ws, tmp=tmp_path) for part in shape]


@pytest.mark.parametrize("shape", FAST_SHAPES, ids=" ".join)
def test_fast_path_prints_what_typer_prints(shape, workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SMARTSET_WORKSPACE", str(workspace))
    argv = _argv(shape, workspace, tmp_path)
    expected = _run(cli.run_typer, argv, capsys)
    assert expected[0] == 0, expected
    with monkeypatch.context() as patch:
        patch.setattr(cli, "run_typer", lambda argv: pytest.fail(f"Typer ran for {argv}"))
        got = _run(cli.main, argv, capsys)
    assert got == expected
    assert json.loads(got[1])["total"] >= 1


@pytest.mark.parametrize("shape", TYPER_SHAPES, ids=" ".join)
def test_other_shapes_and_errors_go_to_typer(shape, workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SMARTSET_WORKSPACE", raising=False)
    argv = _argv(shape, workspace, tmp_path)
    expected = _run(cli.run_typer, argv, capsys)
    called, typer_main = [], cli.run_typer
    monkeypatch.setattr(cli, "run_typer", lambda argv: called.append(argv) or typer_main(argv))
    assert _run(cli.main, argv, capsys) == expected
    assert called == [argv]


def test_shapes_the_parser_accepts(tmp_path, monkeypatch):
    monkeypatch.delenv("SMARTSET_WORKSPACE", raising=False)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "catalog.sqlite").write_bytes(b"")
    ws = str(tmp_path / "ws")
    parse = cli.fast_samples_args
    assert parse(["samples", ws, "--json"]) == {
        "workspace": ws, "positional": True, "version": None, "split": None, "limit": 20}
    assert parse(["samples", f"-w{ws}", "--json", "--limit", "007"]) is None  # Typer judges
    assert parse(["samples", f"-w{ws}", "--json", "--split=val"])["split"] == "val"
    assert parse(["samples", "--json"])["workspace"] is None
    monkeypatch.setenv("SMARTSET_WORKSPACE", ws)
    assert parse(["samples", "--json"])["workspace"] == ws
    for argv in (["samples", ws], ["stats", ws, "--json"], ["samples", "elsewhere", "--json"],
                 ["samples", ws, "--json", "--", "x"], ["samples", ws, ws, "--json"],
                 ["samples", ws, "--json", "--split", "--json"], []):
        assert parse(argv) is None, argv


PROBE = """
import json, sys
wanted = set(json.loads(sys.argv[2]))
sys.argv = ["smartset", *json.loads(sys.argv[1])]
from smartset.cli import main
main()
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & wanted)))
"""


def test_fast_path_imports_no_typer_nor_pydantic(workspace, tmp_path):
    for shape in (["samples", "{ws}", "--json"], ["samples", "-w", "{ws}", "--json",
                                                   "--limit", "0"]):
        done = subprocess.run([sys.executable, "-c", PROBE,
                               json.dumps(_argv(shape, workspace, tmp_path)), json.dumps(SLOW)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        listing, _, imported = done.stdout.rstrip().rpartition("\n")
        assert json.loads(imported) == [], imported
        assert json.loads(listing)["total"] == 7


def test_the_typer_app_is_still_reachable_from_smartset_cli():
    from smartset._cli_app import LAYOUTS, app

    assert cli.app is app and cli.LAYOUTS == LAYOUTS
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        cli.nothing_here  # noqa: B018
