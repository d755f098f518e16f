"""`clean imbalance` and `clean reduce` through the CLI: thin layers over
clean.imbalance.workspace_imbalance and clean.reduction.workspace_reduction."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from smartset.cli import app
from smartset.clean.imbalance import workspace_imbalance
from smartset.workspace import init

runner = CliRunner()


def cli(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    return result


@pytest.fixture(scope="module")
def digits(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("digits")
    data = np.load(shared_data / "mnist10k.npz")
    keep = np.concatenate([np.flatnonzero(data["labels"] == 0)[:30],
                           np.flatnonzero(data["labels"] == 1)[:10]])
    np.savez(root / "d.npz", images=data["images"][keep], labels=data["labels"][keep])
    ws = init(root / "ws")
    ws.ingest(root / "d.npz", engine="serial")
    return ws


def test_imbalance_without_and_with_the_audit(digits):
    ws = digits
    before = json.loads(cli("clean", "imbalance", ws.path, "--json").stdout)
    assert before["counts"] == {"0": 30, "1": 10} and before["imbalance_ratio"] == 3.0
    assert "enn_undersample" not in before and "smartset audit" in before["enn_note"]
    assert "ENN flags: none" in cli("clean", "imbalance", ws.path).stdout
    result = cli("clean", "reduce", ws.path, code=1)
    assert "run 'smartset audit' first" in " ".join(result.output.split())
    cli("audit", ws.path, "--features", "pixels", "--no-report", "--json")
    after = workspace_imbalance(ws)
    assert "enn_note" not in after and set(after["enn_undersample"]) == {"0", "1"}
    reduced = json.loads(cli("clean", "reduce", ws.path, "--seed", 1, "--json").stdout)
    assert reduced["n_train"] + reduced["n_test"] == 40 and reduced["curve"]
    assert all(0 <= row["accuracy"] <= 1 for row in reduced["curve"])
    again = json.loads(cli("clean", "reduce", "-w", ws.path, "--seed", 1, "--json").stdout)
    def timeless(result):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in result["curve"]]

    assert timeless(again) == timeless(reduced)  # seeded: the same split and subsets
