"""Shared by tests/test_detection_*.py: small synthetic shape sets and their workspaces."""

from pathlib import Path

import smartset
from smartset import detection as det


def make_shapes(folder: Path, n: int = 8, *, seed: int = 0, size: int = 96, **options) -> dict:
    return det.synth_shapes(folder, n, seed=seed, size=(size, size), **options)


def imported(tmp_path: Path, name: str = "ws", *, n: int = 8, seed: int = 0, **options):
    """(workspace, synth summary): a shape set imported from its COCO file."""
    info = make_shapes(tmp_path / f"shapes-{name}", n, seed=seed, **options)
    ws = smartset.init(tmp_path / name)
    det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    return ws, info


def normalised(ws, version=None, *, digits: int = 2, masks: bool = True) -> list[tuple]:
    """Annotations as comparable tuples: file name, category, box, mask pixel count."""
    out = []
    for r in det.annotations(ws, version).itertuples():
        pixels = None
        if masks and r.segmentation is not None:
            pixels = int(det.rle.annotation_mask(r.segmentation, None, r.height, r.width).sum())
        out.append((Path(r.relpath).name, r.category, round(r.x, digits), round(r.y, digits),
                    round(r.w, digits), round(r.h, digits), pixels))
    return sorted(out)
