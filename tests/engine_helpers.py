"""Shared by the tests of stages on the executor seam (tests/test_augment_engines.py,
tests/test_learn_inference.py, tests/test_engine_ray.py): small generated data sets, and
what must not depend on the engine."""

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_mixed_images(root: Path) -> Path:
    """Two classes of 28 x 28 gray blobs, plus RGB images of another size in each class:
    one batch holds images of several sizes and modes."""
    rng = np.random.default_rng(7)
    for i in range(14):
        folder = root / ("seven" if i % 2 else "one")
        folder.mkdir(parents=True, exist_ok=True)
        if i % 5 == 4:
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        else:
            pixels = np.zeros((28, 28), np.uint8)
            r, c = rng.integers(4, 14, 2)
            pixels[r:r + 10, c:c + 5 + i % 3] = rng.integers(120, 256)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


def augmented_state(ws, version: str):
    """What must not depend on the engine or the batch size: each derived sample's catalog
    row and lineage record (indexed by file name inside the version's folder) and its
    file's SHA-256."""
    frame = ws.samples(version)
    derived = frame[frame["origin_id"].notna()].set_index("relpath").sort_index()
    lineage = ws.lineage().set_index("sample_id")["params"]
    rows = derived[["sha256", "size", "width", "height", "mode", "split", "label",
                    "origin_id"]].copy()
    rows["params"] = [json.dumps(lineage[sid], sort_keys=True) for sid in derived["id"]]
    rows.index = [relpath.split("/", 1)[1] for relpath in rows.index]  # less the folder
    files = {name: hashlib.sha256(Path(path).read_bytes()).hexdigest()
             for name, path in zip(rows.index, derived["path"])}
    return rows, files


def two_class_images(n: int = 200, side: int = 16, seed: int = 0):
    """Gray ``(n, side, side)`` noise; class 1 has a bright square: learnable in an epoch."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, side, side), dtype=np.uint8)
    images[labels == 1, 4:12, 4:12] += 150
    return images, labels


def write_class_folders(images, labels, root: Path) -> Path:
    """``images`` as PNGs under ``root/c<label>/``."""
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"c{label}" / f"{i:03d}.png")
    return root
