"""Offline augmentation on the executor seam: every engine and batch size writes the same
bytes and the same catalog rows, because each copy's parameters come from (seed, sample,
copy) alone. (Ray against local: tests/test_engine_ray.py.)"""

import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import smartset.augment as aug
from smartset.augment._cli import augment_app
from smartset.augment.offline import augment_files, sample_rng

from engine_helpers import augmented_state, write_mixed_images

runner = CliRunner()
cli = typer.Typer()
cli.add_typer(augment_app, name="augment")


@pytest.fixture
def mixed_ws(ws, tmp_path):
    ws.ingest(write_mixed_images(tmp_path / "src"), engine="serial", show_progress=False)
    return ws


def test_engines_and_batch_sizes_write_the_same_files_and_rows(mixed_ws):
    ws = mixed_ws
    states = {}
    for engine, batch_size in (("serial", 256), ("serial", 3), ("local", 4)):
        name = f"{engine}-{batch_size}"
        result = aug.augment_version(ws, policy="rotation-elastic-centering", factor=3,
                                     seed=11, name=name, engine=engine, workers=2,
                                     batch_size=batch_size)
        assert (result["n_original"], result["n_augmented"]) == (14, 28)
        states[name] = augmented_state(ws, name)
    reference_rows, reference_files = states["serial-256"]
    assert len(set(reference_files.values())) == 28  # every copy differs
    for name, (rows, files) in states.items():
        assert files == reference_files, name
        assert rows.equals(reference_rows), name


def test_a_copy_depends_on_seed_sample_and_copy_only(mixed_ws, tmp_path):
    ws = mixed_ws
    frame = ws.samples().sort_values("relpath")
    ids, paths = frame["id"].tolist(), frame["path"].tolist()
    policy = aug.named_policy("rotation-elastic")
    options = {"policy": policy, "copies": 2, "seed": 5, "mode": None}
    whole = augment_files({"id": ids, "path": paths}, folder=str(tmp_path / "a"), **options)
    # the same samples, reversed and cut into other batches
    parts = [augment_files({"id": ids[i:i + 3][::-1], "path": paths[i:i + 3][::-1]},
                           folder=str(tmp_path / "b"), **options) for i in range(0, len(ids), 3)]
    by_key = {(o, c): r for part in parts
              for o, c, r in zip(part["origin"], part["copy"], part["record"])}
    assert whole["origin"] == [sid for sid in ids for _ in range(2)]  # input order
    for origin, copy, record, relpath in zip(whole["origin"], whole["copy"], whole["record"],
                                             whole["relpath"]):
        assert by_key[(origin, copy)] == record
        assert ((tmp_path / "a" / relpath).read_bytes()
                == (tmp_path / "b" / relpath).read_bytes())
    # the generator is a function of (seed, sample, copy) alone
    assert sample_rng(5, ids[0], 1).random() == sample_rng(5, ids[0], 1).random()
    assert sample_rng(5, ids[0], 1).random() != sample_rng(5, ids[0], 2).random()
    assert sample_rng(5, ids[0], 1).random() != sample_rng(6, ids[0], 1).random()


def test_a_written_copy_replays_from_its_record(mixed_ws):
    ws = mixed_ws
    aug.augment_version(ws, policy="rotation-elastic-centering", factor=2, seed=1, name="r",
                        engine="serial")
    frame = ws.samples("r").set_index("id")
    lineage = ws.lineage().set_index("sample_id")
    import torch

    for sid in frame[frame["origin_id"].notna()].index:
        origin = np.array(Image.open(frame.loc[lineage.loc[sid, "origin_id"], "path"]))
        origin = origin[:, :, None] if origin.ndim == 2 else origin
        source = torch.from_numpy(np.ascontiguousarray(origin.transpose(2, 0, 1)))
        written = np.array(Image.open(frame.loc[sid, "path"]))
        replayed = aug.replay(source, lineage.loc[sid, "params"]).permute(1, 2, 0).numpy()
        assert np.array_equal(replayed.squeeze(-1) if written.ndim == 2 else replayed, written)


def test_bad_seed_is_refused(mixed_ws):
    with pytest.raises(aug.AugmentParameterError, match="seed must be a whole number >= 0"):
        aug.augment_version(mixed_ws, policy="rotation", factor=2, seed=-1)


def test_cli_engine_option(mixed_ws):
    result = runner.invoke(cli, ["augment", "run", "--policy", "rotation", "--factor", "2",
                                 "--engine", "serial", "--name", "viacli", "-w",
                                 str(mixed_ws.path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_augmented"] == 14
    result = runner.invoke(cli, ["augment", "run", "--policy", "rotation", "--factor", "2",
                                 "--seed", "-3", "-w", str(mixed_ws.path)])
    assert result.exit_code == 2, result.output
