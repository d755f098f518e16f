"""A fast start: `smartset --help` and `smartset samples WS --json` import no heavy library
(checked in sys.modules of a fresh process, not with a clock), and the entry point's lazily
built commands behave as Typer's eagerly built ones."""

import json
import subprocess
import sys

import typer

from smartset._cli_common import build_lazily
from smartset.cli import app

HEAVY = ("pandas", "numpy", "torch", "PIL", "cv2", "sklearn", "matplotlib")

PROBE = """
import contextlib, io, json, sys
wanted = json.loads(sys.argv[2])
sys.argv = ["smartset", *json.loads(sys.argv[1])]
from smartset.cli import main
buffer = io.StringIO()
code = 0
with contextlib.redirect_stdout(buffer):
    if len(sys.argv) > 1:
        try:
            main()
        except SystemExit as exit:
            code = exit.code or 0
heavy = sorted(m for m in wanted if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "output": buffer.getvalue()}))
"""


def _probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args)),
                           json.dumps(HEAVY)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_heavy_library():
    assert _probe()["heavy"] == []


def test_help_and_samples_json_import_no_heavy_library(tmp_path):
    from smartset.workspace import init

    ws = init(tmp_path / "ws")
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "a.png").write_bytes(
        bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                      "3a7e9b550000000a49444154789c63600000000200015a7e0d4d0000000049454e44ae426082"))
    ws.ingest(tmp_path / "src", engine="serial")
    expected = ws.samples().to_dict(orient="records")
    ws.close()
    result = _probe("--help")
    assert result["code"] == 0 and "ingest" in result["output"] and result["heavy"] == []
    result = _probe("samples", str(tmp_path / "ws"), "--json")
    assert result["code"] == 0 and result["heavy"] == []
    listed = json.loads(result["output"])
    assert listed["total"] == 1
    assert listed["samples"] == json.loads(json.dumps(expected, default=str))


def test_sample_records_match_samples(labeled):
    ws, _ = labeled
    ws.relabel([ws.samples()["id"][0]], "bird", origin="test")
    frame = ws.samples()
    total, records = ws.sample_records()
    assert total == len(frame) and [r["id"] for r in records] == list(frame["id"])
    assert list(records[0]) == list(frame.columns)
    for record, row in zip(records, frame.to_dict(orient="records")):
        assert {k: v for k, v in record.items() if k != "label_event_id"} == {
            k: v for k, v in row.items() if k != "label_event_id"}
        assert record["label_event_id"] == row["label_event_id"]
    assert ws.sample_records(limit=2) == (total, records[:2])


def _help(group, *path) -> str:
    try:
        from typer._click import Context, HelpFormatter
    except ImportError:  # typer over the click package
        from click import Context, HelpFormatter
    command, parent = group, None
    for name in path:
        parent = Context(command, info_name=command.name, parent=parent)
        command = command.get_command(parent, name)
    formatter = HelpFormatter(width=100)
    command.format_help(Context(command, info_name=command.name, parent=parent), formatter)
    return formatter.getvalue()


def test_lazy_entry_point_matches_typer():
    eager, lazy = typer.main.get_command(app), build_lazily(app)
    assert _help(lazy) == _help(eager)
    assert lazy.list_commands(None) == eager.list_commands(None)
    for name in eager.list_commands(None):
        assert _help(lazy, name) == _help(eager, name), name
    assert _help(lazy, "label", "set") == _help(eager, "label", "set")
