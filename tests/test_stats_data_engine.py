"""Stats on generated data, the torch Dataset, the engines, and layout detection."""

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import smartset
from smartset.engine import LocalEngine, SerialEngine, batches_of, get_engine
from smartset.imageio import inspect_files
from smartset.ingest import detect_layout
from smartset.stats import compute_stats, write_plots


def _frame(labels, sizes):
    return pd.DataFrame({
        "label": labels, "split": ["train"] * len(labels), "targets": [None] * len(labels),
        "width": [s[0] for s in sizes], "height": [s[1] for s in sizes],
        "size": [1000] * len(labels), "format": ["PNG"] * len(labels), "mode": ["L"] * len(labels),
    })


def test_compute_stats_imbalance_and_sizes():
    labels = ["a"] * 8 + ["b"] * 1 + ["c"] * 4 + [None]
    sizes = [(100, 50)] * 13 + [(10, 10)]
    stats = compute_stats(_frame(labels, sizes))
    assert stats["imbalance_ratio"] == 8.0
    assert stats["minority_classes"] == ["b"]
    assert stats["n_unlabeled"] == 1 and stats["n_classes"] == 3
    assert stats["aspect_ratio"]["median"] == 2.0 and stats["width"]["min"] == 10
    assert compute_stats(_frame(["a"], [(5, 5)]))["imbalance_ratio"] is None


def test_plots_and_montage_with_odd_class_names(tmp_path, fixtures):
    paths = [str(fixtures / "good.jpg"), str(fixtures / "truncated.jpg"), str(fixtures / "one_pixel.png")]
    frame = _frame(["ça/va <b>", "ça/va <b>", "x"], [(64, 48), (64, 48), (1, 1)])
    frame["path"] = paths
    written = write_plots(frame, tmp_path / "plots", seed=1)
    montage_paths = written["montages"]
    assert set(montage_paths) == {"ça/va <b>", "x"}
    image = Image.open(montage_paths["ça/va <b>"])
    assert image.size[0] > 100
    # The undecodable image is drawn as a red cross instead of failing the montage.
    pixels = np.asarray(image.convert("RGB"))
    assert ((pixels[..., 0] > 150) & (pixels[..., 1] < 60)).any()


def test_dataset_over_a_version(ws, tmp_path, fixtures):
    import torch

    root = tmp_path / "src"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for name in ("good.jpg", "good.png", "gray16.png", "palette.png", "cmyk.jpg"):
            shutil.copy(fixtures / name, root / cls / name)
    ws.ingest(root, engine="serial", show_progress=False)
    ws.create_version("v1")
    dataset = ws.dataset("v1")
    assert len(dataset) == 10 and dataset.classes == ["cat", "dog"]
    image, label = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64) and label == 0
    assert all(dataset[i][0].shape == (3, 48, 64) for i in range(len(dataset)))
    gray = ws.dataset("v1", mode="L", transform=lambda t: t.float() / 255)
    assert gray[5][0].shape == (1, 48, 64) and gray[5][0].max() <= 1.0 and gray[5][1] == 1
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[3][0], dataset[3][0])
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch[0].shape == (4, 3, 48, 64) and batch[1].tolist() == [0, 0, 0, 0]


def test_dataset_regression_and_unlabeled(tmp_path, fixtures):
    import torch

    from smartset.data import ImageDataset

    paths = [str(fixtures / "good.png")] * 2
    dataset = ImageDataset(paths, [None, None], targets=[[1.5, 2.0], None], mode=None)
    image, target = dataset[0]
    assert image.shape == (1, 48, 64) and torch.equal(target, torch.tensor([1.5, 2.0]))
    assert dataset[1][1] == -1
    with pytest.raises(ValueError, match="same length"):
        ImageDataset(paths, ["a"])
    with pytest.raises(smartset.ImageDecodeError, match="truncated.*Re-export"):
        ImageDataset([str(fixtures / "truncated.jpg")])[0]


def test_engines_agree_and_keep_order(fixtures):
    paths = sorted(str(p) for p in fixtures.glob("*.*g")) * 3
    batches = list(batches_of({"path": paths}, 4))
    assert [len(b["path"]) for b in batches] == [4] * (len(paths) // 4) + ([len(paths) % 4] if len(paths) % 4 else [])
    serial = list(SerialEngine().map_batches(inspect_files, batches))
    local = list(LocalEngine(workers=2).map_batches(inspect_files, batches, fn_kwargs={"max_pixels": 10**8}))
    assert serial == local
    assert list(LocalEngine(workers=2).map_batches(inspect_files, [])) == []


def test_engine_registry_and_batch_checks(monkeypatch):
    with pytest.raises(ValueError, match="unknown engine 'spark'.*local, ray, serial"):
        get_engine("spark")
    monkeypatch.setenv("SMARTSET_ENGINE", "serial")
    assert get_engine().name == "serial"
    with pytest.raises(ValueError, match="equal lengths"):
        list(batches_of({"a": [1, 2], "b": [1]}, 2))
    with pytest.raises(ValueError, match="at least 1"):
        LocalEngine(workers=0)


def _touch_images(folder, names, fixtures):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(fixtures / "good.png", folder / name)


def test_layout_detection_and_label_patterns(ws, tmp_path, fixtures):
    split_root = tmp_path / "splits"
    _touch_images(split_root / "train" / "cat", ["1.png", "2.png"], fixtures)
    _touch_images(split_root / "train" / "dog", ["3.png"], fixtures)
    _touch_images(split_root / "Test", ["4.png", "5.png"], fixtures)  # an unlabeled test set
    assert detect_layout(split_root) == "split-folders"
    report = ws.ingest(split_root, engine="serial", show_progress=False)
    samples = ws.samples().set_index("relpath")
    assert samples.loc["train/cat/1.png", ["label", "split"]].tolist() == ["cat", "train"]
    assert samples.loc["Test/4.png", "split"] == "test" and samples.loc["Test/4.png", "label"] is None
    assert "2 classes" in report.detected

    names_root = tmp_path / "names"
    _touch_images(names_root, ["smartphone_101.png", "smartphone_7.png", "pistol-3.png",
                               "pistol 12.png", "Knife_1.png", "knife_2.png"], fixtures)
    assert detect_layout(names_root) == "filenames"
    other = smartset.init(tmp_path / "ws2")
    other.ingest(names_root, engine="serial", show_progress=False)
    labels = other.samples().set_index("relpath")["label"]
    assert labels["smartphone_101.png"] == "smartphone" and labels["pistol 12.png"] == "pistol"
    assert "label_variants" in set(other.issues()["reason"])  # Knife vs knife

    dots = tmp_path / "dots"
    _touch_images(dots, ["dog.1.png", "cat.2.png", "weird.png"], fixtures)
    third = smartset.init(tmp_path / "ws3")
    third.ingest(dots, pattern=r"^(?P<label>[a-z]+)\.\d+\.", engine="serial", show_progress=False)
    labels = third.samples().set_index("relpath")["label"]
    assert labels["dog.1.png"] == "dog" and labels["weird.png"] is None
    assert third.issues()["reason"].tolist() == ["label_pattern_mismatch"]
    with pytest.raises(smartset.SourceError, match="group named 'label'"):
        third.ingest(dots, pattern=r"^[a-z]+(\.)(\d)", show_progress=False)
    loose = tmp_path / "loose"
    _touch_images(loose, ["a.png", "b.png", "c.png"], fixtures)
    assert detect_layout(loose) == "unlabeled"
    for workspace in (other, third):
        workspace.close()


def test_numpy_variants(ws, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x=rng.random((6, 3, 8, 8)), y=np.array([0, 1, 0, 1, 0, 1]),
             classes=np.array(["cat", "dog"]))
    report = ws.ingest(path, engine="serial", show_progress=False)
    assert report.new == 6 and ws.classes() == ["cat", "dog"]
    assert set(ws.samples()["mode"]) == {"RGB"}
    targets = tmp_path / "reg.npz"
    np.savez(targets, images=rng.integers(0, 255, (3, 5, 5), dtype=np.uint8), targets=[1.0, 2.5, 3.0])
    ws.ingest(targets, engine="serial", show_progress=False)
    assert sorted(t[0] for t in ws.samples()["targets"] if t) == [1.0, 2.5, 3.0]
    for bad, match in [({"labels": [1]}, "no 'images' array; found: labels"),
                       ({"images": np.zeros((2, 4))}, "shape"),
                       ({"images": np.full((2, 4, 4), 3.0)}, "floats in \\[0, 1\\]"),
                       ({"images": np.zeros((2, 4, 4), np.uint8), "labels": [1, 2, 3]}, "3 entries")]:
        np.savez(tmp_path / "bad.npz", **bad)
        with pytest.raises(smartset.SourceError, match=match):
            ws.ingest(tmp_path / "bad.npz", show_progress=False)


def _die_on_second(batch):
    import os
    import signal

    if batch["n"][0] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return batch


def test_a_killed_worker_fails_loudly_instead_of_hanging():
    from concurrent.futures.process import BrokenProcessPool

    batches = list(batches_of({"n": list(range(6))}, 1))
    with pytest.raises(BrokenProcessPool):
        list(LocalEngine(workers=2).map_batches(_die_on_second, batches))


def test_ingest_from_an_unguarded_script(tmp_path, fixtures):
    """Scripts without `if __name__ == '__main__'` (and stdin) work: workers are forked."""
    import subprocess
    import sys

    root = tmp_path / "src"
    _touch_images(root / "a", [f"{i}.png" for i in range(40)], fixtures)
    script = (f"import smartset\nws = smartset.init({str(tmp_path / 'ws')!r})\n"
              f"r = ws.ingest({str(root)!r}, batch_size=4, show_progress=False)\nprint(r.new)\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "40"
