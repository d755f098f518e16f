"""Killing ingest at any moment leaves a consistent catalog that a re-run completes."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import smartset

N_FILES = 4000


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("digits")
    with np.load(shared_data / "mnist10k.npz") as archive:
        images, labels = archive["images"], archive["labels"]
    for i in range(N_FILES):
        folder = root / str(labels[i * 2])
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i * 2]).save(folder / f"{i:05d}.png")
    return root


def _count(db, sql):
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_sigkill_mid_ingest_then_rerun_completes(tmp_path, digit_folder):
    workspace = smartset.init(tmp_path / "ws")
    workspace.close()
    db = workspace.catalog.path
    command = [sys.executable, "-m", "smartset", "ingest", str(workspace.path), str(digit_folder),
               "--batch-size", "16"]
    log = tmp_path / "ingest.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    deadline = time.monotonic() + 120
    written = 0
    while time.monotonic() < deadline and process.poll() is None:
        written = _count(db, "SELECT COUNT(*) FROM samples")
        if written >= 64:
            break
        time.sleep(0.005)
    assert process.poll() is None, f"ingest ended before it was killed: {log.read_text()}"
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and its worker processes
    process.wait()
    killed_at = _count(db, "SELECT COUNT(*) FROM samples")
    assert 0 < killed_at < N_FILES

    # Consistent: every sample written has its label event, and the file is sound.
    assert _count(db, "PRAGMA integrity_check") == "ok"
    assert _count(db, "SELECT COUNT(*) FROM samples s WHERE NOT EXISTS "
                      "(SELECT 1 FROM label_events e WHERE e.sample_id = s.id)") == 0
    assert _count(db, "SELECT status FROM runs ORDER BY id DESC LIMIT 1") == "running"

    rerun = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with smartset.open(workspace.path) as ws:
        samples = ws.samples()
        assert len(samples) == N_FILES and samples["id"].is_unique
        history = ws.history()
        assert len(history) == N_FILES  # exactly one ingest event per sample, none doubled
        assert history["sample_id"].is_unique
        assert ws.issues().empty


def test_a_run_whose_process_is_gone_reads_interrupted(tmp_path):
    """A killed or timed-out command leaves its run 'running' in the catalog; once its
    process is gone, `runs` says 'interrupted' (and a live run stays 'running')."""
    import subprocess
    import sys

    import smartset

    ws = smartset.init(tmp_path / "ws")
    script = ("import os, sys, smartset; ws = smartset.open(sys.argv[1]); "
              "print(ws.catalog.start_run('train', {}), flush=True); os._exit(9)")
    done = subprocess.run([sys.executable, "-c", script, str(ws.path)], capture_output=True,
                          text=True, timeout=60)
    killed = int(done.stdout.strip())
    alive = ws.catalog.start_run("train", {})  # this process: still running
    runs = ws.runs().set_index("id")
    assert runs.loc[killed, "status"] == "interrupted"
    assert runs.loc[alive, "status"] == "running"
    stored = dict(ws.catalog.query("SELECT id, status FROM runs"))
    assert stored[killed] == "interrupted"
