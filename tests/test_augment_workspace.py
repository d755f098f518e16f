"""Augmentation on a workspace: offline versions with lineage (and nothing left by a failed
run), the CLI (run, preview, list), preview grids, and the online Dataset wrapper."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from augment_helpers import Items

import smartset.augment as aug
from smartset.augment._cli import augment_app
from smartset.data import ImageDataset
from smartset.errors import VersionError

runner = CliRunner()
cli = typer.Typer()
cli.add_typer(augment_app, name="augment")


def _invoke(*args):
    result = runner.invoke(cli, ["augment", *[str(a) for a in args]])
    return result


def _digits(n=12, seed=0):
    """Blob 'digits' in two classes, 28 x 28 grey, as a .npz to ingest."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(5, 14, 2)
        images[i, r:r + 10, c:c + 4 + (i % 2) * 5] = rng.integers(150, 255)
    return images, np.arange(n) % 2


@pytest.fixture
def digit_ws(ws, tmp_path):
    images, labels = _digits()
    np.savez(tmp_path / "digits.npz", images=images, labels=labels)
    ws.ingest(tmp_path / "digits.npz", engine="serial", show_progress=False)
    ws.create_version("original")
    return ws


def test_offline_version_with_lineage_that_replays(digit_ws):
    ws = digit_ws
    result = aug.augment_version(ws, policy="rotation-elastic", factor=3, version="original",
                                 seed=4, constraints="digits", batch_size=5)
    assert result["version"] == "original-rotation-elastic-x3"
    assert (result["n_original"], result["n_augmented"], result["n_samples"]) == (12, 24, 36)
    info = ws.version(result["version"])
    assert info["params"]["factor"] == 3 and info["params"]["policy"] == {"named": "rotation-elastic"}
    samples = ws.samples(result["version"])
    derived = samples[samples["origin_id"].notna()]
    assert len(derived) == 24
    assert (derived.groupby("origin_id").size() == 2).all()
    originals = ws.samples("original").set_index("id")
    assert (derived["label"].to_numpy() == originals.loc[derived["origin_id"], "label"].to_numpy()).all()
    lineage = ws.lineage().set_index("sample_id")
    for sid, origin in derived[["id", "origin_id"]].head(5).itertuples(index=False):
        params = lineage.loc[sid, "params"]
        assert lineage.loc[sid, "stage"] == "augment" and params["copy"] in (1, 2)
        source = torch.from_numpy(np.array(Image.open(originals.loc[origin, "path"])))[None]
        written = np.array(Image.open(samples.set_index("id").loc[sid, "path"]))
        assert np.array_equal(aug.replay(source, params)[0].numpy(), written)
    # the same seed writes the same files
    again = aug.augment_version(ws, policy="rotation-elastic", factor=3, version="original",
                                seed=4, batch_size=5, name="again")
    first = sorted(Image.open(p).tobytes() for p in derived["path"])
    second_frame = ws.samples(again["version"])
    second = sorted(Image.open(p).tobytes() for p in
                    second_frame[second_frame["origin_id"].notna()]["path"])
    assert first == second
    with pytest.raises(VersionError, match="exists already"):
        aug.augment_version(ws, policy="rotation", factor=2, name="again")


def test_a_failing_run_leaves_nothing(digit_ws, monkeypatch):
    ws = digit_ws
    before = (len(ws.samples(include_unavailable=True)), list(ws.versions()["name"]))
    calls = {"n": 0}
    original = aug.Rotation._forward

    def breaks_on_second_batch(self, params, size):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("disk on fire")
        return original(self, params, size)
    monkeypatch.setattr(aug.Rotation, "_forward", breaks_on_second_batch)
    # in this process: a spawned worker would not see the patch (the local engine spawns
    # rather than forks once any thread runs, e.g. an earlier test's OpenCV pool)
    with pytest.raises(RuntimeError, match="disk on fire"):
        aug.augment_version(ws, policy="rotation", factor=2, name="broken", batch_size=4,
                            engine="serial")
    assert (len(ws.samples(include_unavailable=True)), list(ws.versions()["name"])) == before
    assert not (ws.path / "data" / "augment-broken").exists()
    runs = ws.runs()
    assert runs.iloc[-1]["command"] == "augment" and runs.iloc[-1]["status"] == "failed"
    monkeypatch.undo()
    # a constraint violation stops before anything is written
    with pytest.raises(aug.ConstraintError, match="hflip"):
        aug.augment_version(ws, policy=aug.Compose([aug.HorizontalFlip()]), factor=2,
                            constraints="digits", name="flipped")
    assert not (ws.path / "data" / "augment-flipped").exists()
    # a folder left by a killed run is cleared and the name reused
    leftover = ws.path / "data" / "augment-retry" / "ab"
    leftover.mkdir(parents=True)
    (leftover / "half.png").write_bytes(b"\x89PNG")
    done = aug.augment_version(ws, policy="rotation", factor=2, name="retry")
    assert done["n_augmented"] == 12 and not (leftover / "half.png").exists()


def test_cli_run_preview_list(digit_ws, tmp_path):
    ws = digit_ws
    result = _invoke("run", "--policy", "rotation-elastic-centering", "--factor", 2, "--version",
                     "original", "--seed", 3, "-w", ws.path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_samples"] == 24 and data["version"] == "original-rotation-elastic-centering-x2"
    result = _invoke("run", "--policy", "rotation", "--factor", 2, "--name", "plain", "-w", ws.path)
    assert result.exit_code == 0, result.output
    # from the live catalog, the copies of the first run are left out: 12 sources again
    assert "Version 'plain': 24 samples (12 originals + 12 augmented" in result.output
    result = _invoke("run", "--policy", "spin", "--factor", 2, "-w", ws.path, "--json")
    assert result.exit_code == 1
    assert "Named policies: original" in json.loads(result.output)["error"]["message"]
    result = _invoke("run", "--policy", "rotation", "--factor", 0, "-w", ws.path)
    assert result.exit_code == 2, result.output
    # the knife and whale studies' task policies are taken by name here too
    result = _invoke("run", "--policy", "knife-light", "--factor", 2, "--name", "light",
                     "-w", ws.path, "--json")
    assert result.exit_code == 0, result.output
    light = json.loads(result.output)
    assert light["n_augmented"] == 12, light
    assert "gamma" in json.dumps(ws.version("light")["params"])
    out = tmp_path / "grid.png"
    result = _invoke("preview", "--policy", "elastic", "--n", 4, "--k", 3, "--out", out,
                     "-w", ws.path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 4
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.width > 4 * 56
    result = _invoke("preview", "-w", ws.path)  # every named combination
    assert result.exit_code == 0, result.output
    assert (ws.reports_dir / "augment" / "preview-named-policies.png").exists()
    result = _invoke("list", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert len(listing["policies"]) == 12 and "digits" in listing["constraints"]
    assert set(listing["task_policies"]) == {"whale-scale", "knife-light", "detection-basic"}
    assert {t["name"] for t in listing["transforms"]} >= {"elastic", "clahe", "erasing"}
    assert "rotation-elastic-centering" in _invoke("list").output


def test_preview_grid_draws_boxes_and_masks():
    images = torch.zeros((3, 3, 32, 40), dtype=torch.uint8)
    images[:, :, 8:20, 10:30] = 200
    boxes = aug.BoundingBoxes([torch.tensor([[10.0, 8.0, 30.0, 20.0]])] * 3, "xyxy", (32, 40))
    masks = aug.Masks((images[:, :1] > 0).to(torch.uint8))
    grid = aug.preview_grid(images, aug.Rotation(20), k=2, labels=["a", "b", "c"],
                            boxes=boxes, masks=masks, title="boxes")
    pixels = np.asarray(grid)
    assert (pixels == [255, 215, 0]).all(-1).any()  # a box outline
    assert grid.height > 3 * 56


def test_preview_of_the_named_combinations_on_digits(shared_data, tmp_path):
    with np.load(shared_data / "mnist10k.npz") as archive:
        digits = torch.from_numpy(archive["images"][:8, None].copy())
        labels = archive["labels"][:8]
    policies = {name: aug.named_policy(name) for name in aug.NAMED_POLICIES}
    grid = aug.preview_grid(digits, policies, seed=0, labels=[str(v) for v in labels])
    grid.save(tmp_path / "named.png")
    assert grid.height > 13 * 56




def test_online_dataset_deterministic_per_epoch_and_seed(digit_ws):
    images = torch.from_numpy(_digits(16)[0])[:, None]
    per_item = aug.AugmentedDataset(Items(images), "rotation-elastic", seed=5)
    batched = aug.AugmentedDataset(Items(images), "rotation-elastic", seed=5, mode="batch")
    items = torch.stack([per_item[i][0] for i in range(16)])
    loader = DataLoader(batched, batch_size=6, shuffle=True, collate_fn=batched.collate_fn,
                        generator=torch.Generator().manual_seed(0))
    seen = torch.zeros_like(items)
    for out, targets in loader:
        for image, target in zip(out, targets.tolist()):
            index = [i for i in range(16) if torch.equal(items[i], image)]
            assert index and index[0] % 3 == target
            seen[index[0]] = image
    assert torch.equal(seen, items)  # the batch path gives the item path's images
    per_item.set_epoch(1)
    assert not torch.equal(per_item[0][0], items[0])
    per_item.set_epoch(0)
    assert torch.equal(per_item[0][0], items[0])
    # workers give the same images as the main process
    workers = DataLoader(batched, batch_size=4, num_workers=2, collate_fn=batched.collate_fn)
    assert torch.equal(torch.cat([b for b, _ in workers]), items)
    # over a workspace version, with the parameters of each sample
    dataset = aug.AugmentedDataset(ImageDataset.from_workspace(digit_ws, "original", mode="L"),
                                   aug.Rotation(10), seed=1, return_params=True)
    image, target, record = dataset[3]
    assert image.shape == (1, 28, 28) and target in (0, 1) and record["steps"][0]["op"] == "rotation"


def test_online_batches_of_mixed_sizes():
    images = [torch.zeros((3, 20, 30), dtype=torch.uint8), torch.zeros((3, 24, 24), dtype=torch.uint8)]
    mixed = aug.AugmentedDataset(Items(images), aug.Rotation(5), mode="batch")
    with pytest.raises(aug.BatchShapeError, match="size=\\(H, W\\)"):
        mixed.collate_fn([mixed[0], mixed[1]])
    sized = aug.AugmentedDataset(Items(images), aug.Rotation(5), mode="batch", size=(16, 16))
    out, _ = sized.collate_fn([sized[0], sized[1]])
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.uint8


def test_a_policy_named_like_a_path_previews_inside_the_workspace(digit_ws, tmp_path):
    """A policy file's name becomes part of the preview's file name: made safe first."""
    from smartset.augment.preview import write_preview

    policy = tmp_path / "evil.yaml"
    policy.write_text("name: ../../../escaped\ntransforms:\n  - rotation: {degrees: 10}\n")
    written = Path(write_preview(digit_ws, policy=str(policy), n=2, k=1)["path"]).resolve()
    assert written.parent == (digit_ws.reports_dir / "augment").resolve()
    assert not (tmp_path / "escaped.png").exists()


def test_version_list_shows_the_parent_of_an_augmented_version(digit_ws):
    """`version list` names the version a derived one was made from and prints no 'nan';
    `runs` rounds its metrics."""
    import re

    from smartset.cli import app as cli_app

    ws = digit_ws
    if "original" not in set(ws.versions()["name"]):
        ws.create_version("original")
    aug.augment_version(ws, policy="rotation", factor=2, version="original", name="rot-x2")
    versions = ws.versions().set_index("name")
    assert versions.loc["rot-x2", "parent"] == "original"
    listed = CliRunner().invoke(cli_app, ["version", "list", "-w", str(ws.path)])
    assert listed.exit_code == 0, listed.output
    assert "nan" not in listed.output and "rot-x2" in listed.output
    runs = CliRunner().invoke(cli_app, ["runs", str(ws.path)])
    assert runs.exit_code == 0, runs.output
    assert re.search(r"\d\.\d{5,}", runs.output) is None  # no 0.123456789 in a table
