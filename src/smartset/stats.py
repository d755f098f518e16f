"""A first look at a data set: counts, imbalance, sizes, formats, and pictures of them.

:func:`compute_stats` works on a sample table (``Workspace.samples()``); :func:`write_plots`
draws the class histogram, the size scatter and one montage per class (a grid of
thumbnails, as ``montage2d`` in the lecture material).
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from smartset._atomic import atomic_path
from smartset._random import SeedLike, resolve_rng
from smartset.errors import ImageDecodeError
from smartset.imageio import thumbnail

__all__ = ["compute_stats", "write_plots", "montage"]


def _summary(values: pd.Series) -> dict[str, float] | None:
    values = values.dropna().astype(float)
    if values.empty:
        return None
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return {"min": q[0], "p5": q[1], "median": q[2], "p95": q[3], "max": q[4],
            "mean": float(values.mean())}


def compute_stats(samples: pd.DataFrame, issues: pd.DataFrame | None = None) -> dict:
    """Counts per class and split, imbalance, size and aspect distributions, formats, modes.

    ``imbalance_ratio`` is the largest class count over the smallest (1.0 is balanced);
    ``minority_classes`` are those under half the median class count. Counts include the
    derived samples (augmented or oversampled copies, with an ``origin_id``); ``derived``
    says how many there are per split and class, and ``n_original`` how many are not.
    """
    labeled = samples[samples["label"].notna()]
    by_class = labeled.groupby(["label", "split"]).size().unstack(fill_value=0)
    classes = {str(label): {**{s: int(n) for s, n in row.items() if n}, "total": int(row.sum())}
               for label, row in by_class.iterrows()}
    counts = np.array([c["total"] for c in classes.values()])
    median = float(np.median(counts)) if counts.size else 0.0
    with_targets = samples[samples["targets"].notna()]
    targets = {}
    if not with_targets.empty:
        matrix = np.array(with_targets["targets"].tolist(), dtype=float)
        targets = {f"target_{i}": _summary(pd.Series(matrix[:, i])) for i in range(matrix.shape[1])}
    is_derived = (samples["origin_id"].notna() if "origin_id" in samples.columns
                  else pd.Series(False, index=samples.index))
    derived = samples[is_derived]
    return {
        "n_samples": int(len(samples)),
        "n_original": int(len(samples) - len(derived)),
        "derived": {"n": int(len(derived)),
                    "splits": {str(k): int(v) for k, v in
                               derived["split"].value_counts().sort_index().items()},
                    "classes": {str(k): int(v) for k, v in
                                derived["label"].dropna().value_counts().sort_index().items()}},
        "n_labeled": int(len(labeled)),
        "n_with_targets": int(len(with_targets)),
        "n_unlabeled": int(len(samples) - len(labeled) - len(with_targets)),
        "splits": {str(k): int(v) for k, v in samples["split"].value_counts().sort_index().items()},
        "classes": classes,
        "n_classes": len(classes),
        "imbalance_ratio": float(counts.max() / counts.min()) if counts.size > 1 else None,
        "minority_classes": sorted(c for c, v in classes.items() if v["total"] < 0.5 * median),
        "width": _summary(samples["width"]),
        "height": _summary(samples["height"]),
        "aspect_ratio": _summary(samples["width"] / samples["height"]),
        "megapixels": _summary(samples["width"] * samples["height"] / 1e6),
        "bytes": _summary(samples["size"]),
        "formats": {str(k): int(v) for k, v in samples["format"].value_counts().items()},
        "modes": {str(k): int(v) for k, v in samples["mode"].value_counts().items()},
        "targets": targets,
        "issues": ({} if issues is None or issues.empty else
                   {str(k): int(v) for k, v in issues["reason"].value_counts().items()}),
    }


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40]
    return slug or "class-" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def montage(paths: list[str], *, title: str = "", cell: int = 64, columns: int = 8,
            pad: int = 2) -> Image.Image:
    """A grid of thumbnails of ``paths``; an undecodable image shows as a red cross."""
    rows = max(1, math.ceil(len(paths) / columns))
    header = 22 if title else 0
    width = columns * (cell + pad) + pad
    canvas = Image.new("RGB", (width, header + rows * (cell + pad) + pad), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad + 2, 3), title, fill=(20, 20, 20), font=_font(14))
    for i, path in enumerate(paths):
        x = pad + (i % columns) * (cell + pad)
        y = header + pad + (i // columns) * (cell + pad)
        try:
            thumb = thumbnail(path, cell)
        except ImageDecodeError:
            draw.line((x, y, x + cell, y + cell), fill=(200, 0, 0), width=2)
            draw.line((x + cell, y, x, y + cell), fill=(200, 0, 0), width=2)
            continue
        if max(thumb.size) < cell:  # small images (digits): enlarge so they can be seen
            scale = cell / max(thumb.size)
            thumb = thumb.resize((max(1, round(thumb.width * scale)),
                                  max(1, round(thumb.height * scale))), Image.Resampling.NEAREST)
        canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    return canvas


def _save_figure(figure, target: Path) -> None:
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_plots(samples: pd.DataFrame, out_dir: str | Path, *, per_class: int = 32,
                seed: SeedLike = 0) -> dict[str, str | dict[str, str]]:
    """Write ``class_histogram.png``, ``sizes.png`` and ``montage-CLASS.png`` per class.

    ``per_class`` thumbnails are drawn at random (``seed``) from each class. Returns the
    paths written.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = resolve_rng(seed)
    written: dict[str, str | dict[str, str]] = {}
    labeled = samples[samples["label"].notna()]

    if not labeled.empty:
        table = labeled.groupby(["label", "split"]).size().unstack(fill_value=0)
        table = table.loc[table.sum(axis=1).sort_values(ascending=False).index]
        figure = Figure(figsize=(max(5, 0.45 * len(table) + 2), 4))
        axes = figure.subplots()
        bottom = np.zeros(len(table))
        for split in table.columns:
            axes.bar(range(len(table)), table[split], bottom=bottom, label=split)
            bottom += table[split].to_numpy()
        axes.set_xticks(range(len(table)), [str(c) for c in table.index], rotation=45, ha="right")
        axes.set_ylabel("images")
        axes.set_title(f"{len(labeled)} labeled images in {len(table)} classes")
        axes.legend(title="split")
        _save_figure(figure, out_dir / "class_histogram.png")
        written["class_histogram"] = str(out_dir / "class_histogram.png")

    if not samples.empty:
        figure = Figure(figsize=(5.5, 4.5))
        axes = figure.subplots()
        groups = labeled.groupby("label") if not labeled.empty else [("all", samples)]
        for label, group in groups:
            axes.scatter(group["width"], group["height"], s=8, alpha=0.6, label=str(label))
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("width (pixels)")
        axes.set_ylabel("height (pixels)")
        axes.set_title("image sizes")
        if not labeled.empty and labeled["label"].nunique() <= 12:
            axes.legend(markerscale=2, fontsize=8)
        _save_figure(figure, out_dir / "sizes.png")
        written["sizes"] = str(out_dir / "sizes.png")

    montages: dict[str, str] = {}
    groups = labeled.groupby("label") if not labeled.empty else [("unlabeled", samples)]
    for label, group in groups:
        chosen = group["path"].to_numpy()
        if len(chosen) > per_class:
            chosen = chosen[np.sort(rng.choice(len(chosen), per_class, replace=False))]
        image = montage(list(chosen), title=f"{label}  ({len(group)} images)")
        target = out_dir / f"montage-{_slug(str(label))}.png"
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        montages[str(label)] = str(target)
    written["montages"] = montages
    return written
