"""The command line, through Typer's runner: exit codes, --json, and errors that say what to do."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from smartset.cli import app

runner = CliRunner()


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture
def source(tmp_path, fixtures):
    root = tmp_path / "src"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        shutil.copy(fixtures / "good.jpg", root / cls / "one.jpg")
        shutil.copy(fixtures / "good.png", root / cls / "two.png")
    shutil.copy(fixtures / "truncated.jpg", root / "cat" / "bad.jpg")
    return root


def test_version_flag_prints_the_installed_version():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"smartset {version('smartset')}"


def test_help_lists_the_stages():
    output = run("--help").output
    for command in ("init", "ingest", "stats", "samples", "issues", "label", "version", "runs"):
        assert command in output


def test_init_ingest_stats_end_to_end(tmp_path, source):
    ws = tmp_path / "ws"
    run("init", ws)
    result = run("ingest", ws, source, "--engine", "serial")
    assert "folders layout: 2 classes" in result.output
    assert "truncated" in result.output and "4 new" in result.output
    report = json.loads(run("ingest", ws, source, "--json").output)
    assert report["files_read"] == 0 and report["unchanged"] == 4
    assert report["issues"] == {"truncated": 1}
    run("ingest", ws, source, "--strict", code=3)
    stats = json.loads(run("stats", ws, "--json").output)
    assert stats["classes"] == {"cat": {"train": 2, "total": 2}, "dog": {"train": 2, "total": 2}}
    assert stats["imbalance_ratio"] == 1.0 and stats["issues"] == {"truncated": 1}
    for name in ("class_histogram", "sizes"):
        with open(stats["plots"][name], "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(stats["plots"]["montages"]) == {"cat", "dog"}
    assert "imbalance ratio 1.00" in run("stats", ws).output
    issues = json.loads(run("issues", ws, "--json").output)
    assert [i["reason"] for i in issues] == ["truncated"]
    samples = json.loads(run("samples", ws, "--json").output)
    assert samples["total"] == 4


def test_workspace_from_environment_and_label_commands(tmp_path, source, monkeypatch):
    ws = tmp_path / "ws"
    run("init", ws)
    monkeypatch.setenv("SMARTSET_WORKSPACE", str(ws))
    run("ingest", source, "--engine", "serial")  # the workspace comes from the environment
    sample = json.loads(run("samples", "--json").output)["samples"][0]
    event = json.loads(run("label", "set", sample["id"], "--to", "bird", "--json").output)
    run("label", "undo", event["events"][0])
    history = json.loads(run("label", "history", sample["id"], "--json").output)
    assert [h["label"] for h in history] == [sample["label"], "bird", sample["label"]]
    run("label", "rename", "dog", "canine")
    run("version", "create", "v1", "--description", "first")
    versions = json.loads(run("version", "list", "--json").output)
    assert versions[0]["name"] == "v1" and versions[0]["n_samples"] == 4
    runs = json.loads(run("runs", "--json").output)
    assert [r["command"] for r in runs] == ["ingest"]


def test_errors_are_one_clear_message(tmp_path, source):
    result = run("stats", tmp_path / "nowhere", code=1)
    assert "not a smartset workspace" in result.output and "smartset init" in result.output
    ws = tmp_path / "ws"
    run("init", ws)
    table = tmp_path / "t.csv"
    table.write_text("file,klass\ncat/one.jpg,cat\n")
    result = run("ingest", ws, table, "--root", source, "--label-column", "class", code=1)
    assert "Column 'class'" in result.output and "file, klass" in result.output
    result = run("ingest", ws, table, "--label-column", "class", "--json", code=1)
    error = json.loads(result.output)["error"]
    assert error["type"] == "ColumnNotFoundError" and "line 1" in error["message"]
    text = " ".join(run("ingest", ws, source, "--layout", "coco", code=2).output.split())
    assert "'coco' is not one of 'folders', 'split-folders', 'filenames'" in text
    assert "Unknown sample id" in run("label", "set", "nope", "--to", "x", "-w", ws, code=1).output
    run("ingest", ws, source, table, "extra", code=2)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    assert "not empty" in run("init", busy, code=1).output
