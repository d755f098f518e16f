"""Issue #18, classes 1, 3, 4, 5: names that become paths are checked once before anything is
written or deleted, and nothing outside the workspace is ever deleted; derived samples and
their version are one transaction (a failure or a kill leaves no orphan, a re-run
completes); a read-only workspace reads, and faults of the machine (read-only, disk full)
are one line and exit code 1; two processes on one workspace get a clear answer."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import smartset
from smartset._names import InvalidNameError, check_name, remove_tree
from smartset.cli import app

runner = CliRunner()
SMARTSET = [sys.executable, "-m", "smartset"]

# Names that must never become a path: traversal, absolute, separators, dots, control
# characters, reserved device names, empty, too long, not text.
BAD_NAMES = ["../../../../victim", "../victim", "..", ".", "/tmp/victim", "a/b", "a\\b",
             "victim/..", "x/../../victim", "", " ", "-rf", ".hidden", "_x", "a b", "a\nb",
             "a\x00b", "CON", "nul.txt", "com1", "x" * 101, "ünïcode", "a..b", "a:b", "a*b"]


def _images(root: Path, n_per_class: int = 6, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(
                root / cls / f"{i:04d}.png")
    return root


@pytest.fixture
def small(tmp_path):
    """A workspace of 12 ingested images, a sentinel folder beside it (with a file), and a
    ``data/augment-..`` folder like a finished run leaves."""
    source = _images(tmp_path / "src")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(source, engine="serial", show_progress=False)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (ws.path / "data" / "augment-..").mkdir()
    yield ws, victim
    ws.close()


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *needles):
    text = result.output.strip()
    assert result.exit_code == 1, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:"), text
    for needle in needles:
        assert needle.lower() in text.lower(), text


def _integrity(db: Path) -> str:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


# -- class 1: names become paths only once they are checked ------------------------------------
@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses_with_the_rule_and_an_example(name):
    with pytest.raises(InvalidNameError, match=r"not valid: .*e\.g\. 'v2-augmented'"):
        check_name(name, "version name")


@pytest.mark.parametrize("name", ["v2", "original", "live-rotation-x5", "a.b_c+d-1", "9",
                                  "x" * 100])
def test_check_name_accepts_ordinary_names(name):
    assert check_name(name) == name


def _entry_points(ws):
    from smartset.augment.offline import augment_version
    from smartset.clean.imbalance import oversample
    from smartset.detection.augment import expand_version

    return {
        "create_version": lambda n: ws.create_version(n),
        "augment_version": lambda n: augment_version(ws, policy="rotation", factor=2, name=n,
                                                     engine="serial", show_progress=False),
        "expand_version": lambda n: expand_version(ws, policy="whale-scale", factor=2, name=n),
        "oversample": lambda n: oversample(ws, policy="rotation", name=n, engine="serial"),
    }


def test_bad_names_are_refused_by_every_api_entry_point_and_touch_nothing(small):
    ws, victim = small
    before = len(ws.samples(include_unavailable=True))
    data_before = sorted(p.name for p in (ws.path / "data").iterdir())
    refused = 0
    for entry, call in _entry_points(ws).items():
        for name in BAD_NAMES:
            with pytest.raises(InvalidNameError):
                call(name)
            refused += 1
            assert (victim / "precious.txt").read_text() == "keep me", (entry, name)
    assert refused == 4 * len(BAD_NAMES)
    assert len(ws.samples(include_unavailable=True)) == before
    assert sorted(p.name for p in (ws.path / "data").iterdir()) == data_before
    assert ws.versions().empty and ws.runs()["command"].tolist() == ["ingest"]


@pytest.mark.parametrize("command", [
    ["augment", "run", "--policy", "rotation", "--factor", "2", "--engine", "serial"],
    ["annotations", "augment", "--policy", "whale-scale", "--factor", "2"],
    ["clean", "imbalance", "--oversample", "rotation"],
])
@pytest.mark.parametrize("name", ["../../../../victim", "/tmp/x"])
def test_bad_names_are_refused_by_the_cli_in_one_line(small, command, name):
    ws, victim = small
    if command[0] == "clean":
        help_text = _cli("clean", "imbalance", "--help").output
        if "--name" not in help_text:
            pytest.skip("clean imbalance has no --name here")
    result = _cli(*command, "--name", name, "-w", ws.path)
    _one_line_error(result, "not valid")
    assert (victim / "precious.txt").read_text() == "keep me"
    assert (ws.path / "data" / "augment-..").is_dir()  # nothing of the workspace went either


def test_version_create_cli_refuses_a_traversal_name(small):
    ws, victim = small
    _one_line_error(_cli("version", "create", "../../victim", "-w", ws.path), "not valid")


def test_remove_tree_never_deletes_outside_the_workspace(small, tmp_path):
    ws, victim = small
    with pytest.raises(InvalidNameError, match="outside the workspace"):
        remove_tree(ws.path, ws.path / "data" / ".." / ".." / "victim")
    with pytest.raises(InvalidNameError, match="outside the workspace"):
        remove_tree(ws.path, ws.path)
    # a stage folder that is a link out of the workspace: refused, never written or cleared
    link = ws.path / "data" / "augment-v9"
    link.symlink_to(victim, target_is_directory=True)
    from smartset.augment.offline import augment_version

    with pytest.raises(InvalidNameError, match="outside the workspace"):
        augment_version(ws, policy="rotation", factor=2, name="v9", engine="serial",
                        show_progress=False)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "keep me"
    remove_tree(ws.path, link)  # the link itself goes, never its target
    assert not link.is_symlink() and (victim / "precious.txt").is_file()


# -- class 3: no half-done writes -----------------------------------------------------------------
def test_a_failing_version_leaves_no_orphan_samples_and_no_files(small, monkeypatch):
    ws, _ = small
    import smartset.workspace as workspace_module
    from smartset.augment.offline import augment_version

    n = len(ws.samples(include_unavailable=True))

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(workspace_module, "_insert_version", full)
    with pytest.raises(sqlite3.OperationalError):
        augment_version(ws, policy="rotation", factor=3, name="v2", engine="serial",
                        show_progress=False)
    assert len(ws.samples(include_unavailable=True)) == n  # no sample of no version
    assert ws.lineage().empty
    assert not (ws.path / "data" / "augment-v2").exists()
    assert ws.runs()["status"].tolist()[-1] == "failed"
    monkeypatch.undo()
    again = augment_version(ws, policy="rotation", factor=3, name="v2", engine="serial",
                            show_progress=False)
    assert again["n_samples"] == 3 * n and len(ws.samples()) == 3 * n


def test_a_bad_name_fails_before_any_sample_is_registered(small):
    ws, _ = small
    from smartset.augment.offline import augment_version

    n = len(ws.samples(include_unavailable=True))
    with pytest.raises(InvalidNameError):
        augment_version(ws, policy="rotation", factor=3, name="has space", engine="serial",
                        show_progress=False)
    assert len(ws.samples(include_unavailable=True)) == n and ws.lineage().empty


def _mnist_folder(root: Path, shared_data: Path, n: int) -> Path:
    with np.load(shared_data / "mnist10k.npz") as archive:
        images, labels = archive["images"][:n], archive["labels"][:n]
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i:05d}.png")
    return root


def test_sigkill_mid_augment_leaves_no_orphans_and_a_rerun_completes(tmp_path, shared_data):
    source = _mnist_folder(tmp_path / "digits", shared_data, 120)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(source, engine="serial", show_progress=False)
    ws.close()
    db = ws.catalog.path
    command = SMARTSET + ["augment", "run", "-w", str(ws.path), "--policy", "rotation-elastic",
                          "--factor", "6", "--name", "big", "--engine", "serial",
                          "--batch-size", "4"]
    folder = ws.path / "data" / "augment-big"
    log = tmp_path / "augment.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if folder.exists() and sum(1 for _ in folder.rglob("*.png")) >= 40:
            break
        time.sleep(0.01)
    assert process.poll() is None, log.read_text()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert _integrity(db) == "ok"
    with smartset.open(ws.path) as opened:
        assert len(opened.samples(include_unavailable=True)) == 120  # no orphan copies
        assert opened.lineage().empty and opened.versions().empty
        assert opened.runs()["status"].tolist()[-1] == "interrupted"
    rerun = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with smartset.open(ws.path) as opened:
        assert opened.version("big")["n_samples"] == 720
        assert len(opened.samples(include_unavailable=True)) == 720
        assert len(list(folder.rglob("*.png"))) == 600  # the killed run's files replaced


# -- class 4: read-only workspaces and full disks -------------------------------------------------
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_ws(small, tmp_path):
    """The small workspace, copied to a read-only place: a tmpfs remounted read-only when
    this process may mount (root ignores file modes), else a folder without write bits."""
    ws, _ = small
    ws.close()
    mount = tmp_path / "ro"
    if _mount_tmpfs(mount, "64m"):
        shutil.copytree(ws.path, mount / "ws", symlinks=True)
        if subprocess.run(["mount", "-o", "remount,ro", str(mount)],
                          capture_output=True).returncode != 0:
            _umount(mount)
            pytest.skip("cannot remount a tmpfs read-only here")
        yield mount / "ws"
        _umount(mount)
    elif os.geteuid() != 0:
        shutil.copytree(ws.path, mount / "ws", symlinks=True)
        for path in [mount / "ws", *(mount / "ws").rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        yield mount / "ws"
        for path in [mount / "ws", *(mount / "ws").rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    else:
        pytest.skip("root without mount: no way to make a read-only workspace")


def test_a_read_only_workspace_reads(read_only_ws):
    for command in (["samples", read_only_ws, "--json"], ["stats", read_only_ws, "--json"],
                    ["version", "list", "-w", read_only_ws], ["runs", "-w", read_only_ws],
                    ["issues", read_only_ws]):
        result = _cli(*command)
        assert result.exit_code == 0, (command, result.output)
    with smartset.open(read_only_ws) as ws:
        assert len(ws.samples()) == 12 and ws.stats()["n_samples"] == 12


def test_a_read_only_workspace_refuses_writes_in_one_line(read_only_ws, tmp_path):
    source = _images(tmp_path / "more", seed=1)
    for command in (["version", "create", "v2", "-w", read_only_ws],
                    ["ingest", read_only_ws, source],
                    ["augment", "run", "--policy", "rotation", "--factor", "2", "--name", "v3",
                     "-w", read_only_ws, "--engine", "serial"],
                    ["label", "set", "nope", "--to", "b", "-w", read_only_ws]):
        result = _cli(*command)
        _one_line_error(result, "read-only")


@pytest.fixture
def full_disk(tmp_path):
    mount = tmp_path / "full"
    if not _mount_tmpfs(mount, "3m"):
        pytest.skip("mounting a small tmpfs is not allowed here")
    yield mount
    _umount(mount)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_one_line_and_the_catalog_stays_sound(full_disk, tmp_path):
    source = _images(tmp_path / "src", n_per_class=20, size=64)
    more = _images(tmp_path / "more", n_per_class=20, size=64, seed=3)
    ws = smartset.init(full_disk / "ws")
    ws.ingest(source, engine="serial", show_progress=False)
    ws.close()
    filler = _fill(full_disk)
    commands = [["augment", "run", "--policy", "rotation", "--factor", "5", "--name", "v2",
                 "-w", ws.path, "--engine", "serial"],
                ["ingest", ws.path, more, "--engine", "serial"],
                ["version", "create", "v3", "-w", ws.path],
                ["stats", ws.path],
                ["init", full_disk / "other"]]
    faults = 0
    for command in commands:
        result = _cli(*command)  # in this process: the same handler as the CLI's
        if result.exit_code == 0:
            continue  # small enough to fit in what was left
        faults += 1
        _one_line_error(result)
        assert "full" in result.output or "space" in result.output, (command, result.output)
    assert faults >= 2
    filler.unlink()
    with smartset.open(ws.path) as opened:
        assert len(opened.samples()) >= 40
        assert _integrity(ws.path / "catalog.sqlite") == "ok"
        unowned = opened.catalog.query(
            "SELECT COUNT(*) FROM lineage g WHERE g.sample_id NOT IN (SELECT sample_id FROM "
            "version_members)")[0][0]
        assert unowned == 0


@pytest.mark.parametrize("fault", [
    OSError(28, "No space left on device", "/ws/reports/stats/live/x.png"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("disk I/O error"),
    OSError(30, "Read-only file system", "/ws/cache/x"),
])
def test_faults_of_the_machine_are_one_line_exit_1(small, monkeypatch, fault):
    ws, _ = small
    import smartset.stats
    import smartset.workspace as workspace_module

    def broken(*args, **kwargs):
        raise fault

    monkeypatch.setattr(smartset.stats, "write_plots", broken)
    monkeypatch.setattr(workspace_module, "_insert_version", broken)
    for command in (["stats", ws.path], ["version", "create", "v2", "-w", ws.path]):
        result = _cli(*command)
        _one_line_error(result)
        assert any(word in result.output for word in ("full", "space", "I/O", "input/output",
                                                      "write"))
    result = _cli("version", "create", "v2", "-w", ws.path, "--json")
    assert result.exit_code == 1 and '"error"' in result.output
    assert _integrity(ws.catalog.path) == "ok" and ws.versions().empty


# -- class 5: two processes on one workspace --------------------------------------------------------
def test_a_second_writer_is_told_who_holds_the_workspace_until_it_dies(small, tmp_path):
    ws, _ = small
    source = _images(tmp_path / "more", seed=2)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from smartset.catalog import Catalog; "
         "c = Catalog(sys.argv[1]); held = c.exclusive('test holder'); held.__enter__(); "
         "print('held', flush=True); time.sleep(120)", str(ws.catalog.path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in (["ingest", ws.path, source],
                        ["augment", "run", "--policy", "rotation", "--factor", "2", "--name",
                         "v2", "-w", ws.path, "--engine", "serial"],
                        ["annotations", "augment", "--policy", "whale-scale", "--factor", "2",
                         "--name", "v3", "-w", ws.path]):
            result = _cli(*command)
            _one_line_error(result, "busy", f"PID {holder.pid}", "test holder")
    finally:
        holder.kill()  # kill -9: the kernel releases the lock, nothing stale is left
        holder.wait()
        holder.stdout.close()
    assert _cli("ingest", ws.path, source).exit_code == 0
    assert len(ws.samples()) == 24 and ws.versions().empty


def _race(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    processes = [subprocess.Popen(SMARTSET + [str(c) for c in command], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for command in commands]
    results = []
    for command, process in zip(commands, processes):
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


def _assert_clear(results, *allowed):
    for result in results:
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode:
            assert result.returncode == 1, result.stderr
            line = result.stderr.strip()
            assert len(line.splitlines()) == 1 and any(a in line for a in allowed), line
    assert any(r.returncode == 0 for r in results), [r.stderr for r in results]


def test_two_ingests_of_one_folder(tmp_path, shared_data):
    source = _mnist_folder(tmp_path / "digits", shared_data, 600)
    ws = smartset.init(tmp_path / "ws")
    ws.close()
    command = ["ingest", ws.path, source, "--batch-size", "16", "--engine", "serial"]
    _assert_clear(_race([command, command]), "busy")
    with smartset.open(ws.path) as opened:
        samples = opened.samples()
        assert len(samples) == 600 and samples["id"].is_unique
        assert opened.history()["sample_id"].is_unique  # one ingest event per sample
    assert _integrity(ws.path / "catalog.sqlite") == "ok"


def test_two_version_creates_of_one_name(small):
    ws, _ = small
    results = _race([["version", "create", "v2", "-w", ws.path]] * 2)
    _assert_clear(results, "exists already", "busy")
    assert ws.version("v2")["n_samples"] == 12 and len(ws.versions()) == 1


def test_two_augment_runs_of_one_name(tmp_path, shared_data):
    source = _mnist_folder(tmp_path / "digits", shared_data, 100)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(source, engine="serial", show_progress=False)
    ws.close()
    command = ["augment", "run", "--policy", "rotation", "--factor", "3", "--name", "v2",
               "-w", ws.path, "--engine", "serial"]
    _assert_clear(_race([command, command]), "busy", "exists already")
    with smartset.open(ws.path) as opened:
        members = opened.samples("v2")
        assert len(members) == 300
        assert all(Path(p).is_file() for p in members["path"])  # nobody deleted the other's
        assert len(opened.samples(include_unavailable=True)) == 300
    assert _integrity(ws.path / "catalog.sqlite") == "ok"
