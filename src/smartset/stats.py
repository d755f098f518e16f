"""A first look at a data set: counts, imbalance, sizes, formats, and pictures of them.

:func:`compute_stats` works on a sample table (``Workspace.samples()``); :func:`write_plots`
draws the class histogram, the size scatter and one montage per class (a grid of
thumbnails, as ``montage2d`` in the lecture material).

:func:`class_histogram_svg` and :func:`size_scatter_svg` draw the same two charts as inline
SVG, written by hand: a few rectangles, circles and labels. The audit report embeds them;
with matplotlib the two figures cost about 2.5 CPU-s a report (0.9 s of it importing
matplotlib, most of the rest its text layout), more than measuring the 741 photos'
properties.
"""

from __future__ import annotations

import hashlib
import html
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

__all__ = ["compute_stats", "write_plots", "montage", "class_montages", "class_histogram_svg",
           "size_scatter_svg", "PALETTE"]


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


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
"""The charts' colours, in order (matplotlib's tab10, as the PNG plots)."""

_SVG_FONT = "font:11px system-ui,sans-serif"


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps of 1, 2 or 5 x 10^k)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def _svg(width: float, height: float, label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-label="{html.escape(label)}" style="{_SVG_FONT}">' + "".join(body) + "</svg>")


def class_histogram_svg(samples: pd.DataFrame) -> str | None:
    """The labeled images per class, stacked by split, largest class first, as inline SVG
    (``<svg>...</svg>``; None when no sample is labeled). Each bar part names its class,
    split and count on hover; with too many classes to name under the bars, the names are
    on hover only."""
    labeled = samples[samples["label"].notna()]
    if labeled.empty:
        return None
    table = labeled.groupby(["label", "split"]).size().unstack(fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    names = [str(c) for c in table.index]
    slot = max(3.0, min(90.0, 640.0 / len(names)))
    show_names = slot >= 10  # below that the names would overlap
    longest = min(max(len(n) for n in names), 24) if show_names else 0
    # room for the names, written at 45 degrees from under each bar
    left, top, plot_h = max(56.0, longest * 4.6 - slot / 2), 30.0, 220.0
    bottom = 28.0 + longest * 4.6
    plot_w = slot * len(names)
    width, height = left + plot_w + 130.0, top + plot_h + bottom
    ticks = _nice_ticks(float(table.sum(axis=1).max()))
    scale = plot_h / ticks[-1]
    base = top + plot_h
    body = [f'<text x="{max(left + plot_w / 2, 150.0):.1f}" y="18" text-anchor="middle" '
            f'font-size="13">{len(labeled):,} labeled images in {len(names)} classes</text>']
    for tick in ticks:
        y = base - tick * scale
        body.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" '
                    f'stroke="#e4e4e4"/><text x="{left - 7}" y="{y + 4:.1f}" '
                    f'text-anchor="end">{_tick_label(tick)}</text>')
    body.append(f'<text transform="translate(14,{top + plot_h / 2:.1f}) rotate(-90)" '
                f'text-anchor="middle">images</text>')
    splits = [str(s) for s in table.columns]
    for i, (name, row) in enumerate(zip(names, table.to_numpy())):
        x, y = left + i * slot + slot * 0.1, base
        for j, count in enumerate(row):
            if not count:
                continue
            h = count * scale
            y -= h
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" '
                        f'height="{h:.1f}" fill="{PALETTE[j % 10]}"><title>'
                        f'{html.escape(name)} · {html.escape(splits[j])}: {int(count):,}'
                        f'</title></rect>')
        if show_names:
            shown = name if len(name) <= 24 else name[:23] + "…"
            body.append(f'<text transform="translate({left + (i + 0.5) * slot:.1f},'
                        f'{base + 12:.1f}) rotate(-45)" text-anchor="end">'
                        f'{html.escape(shown)}</text>')
    body.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w:.1f}" y2="{base}" '
                f'stroke="#444"/><line x1="{left}" y1="{top}" x2="{left}" y2="{base}" '
                f'stroke="#444"/>')
    legend_x = left + plot_w + 16
    body.append(f'<text x="{legend_x:.1f}" y="{top + 8}">split</text>')
    for j, split in enumerate(splits):
        y = top + 16 + 16 * j
        body.append(f'<rect x="{legend_x:.1f}" y="{y}" width="12" height="10" '
                    f'fill="{PALETTE[j % 10]}"/><text x="{legend_x + 17:.1f}" y="{y + 9}">'
                    f'{html.escape(split[:16])}</text>')
    return _svg(width, height, "images per class and split", body)


def _log_ticks(low: float, high: float) -> list[float]:
    """Tick values between 10**low and 10**high: the powers of ten, and 2 and 5 times
    them when fewer than two powers fall inside; the middle value, rounded, when none of
    those does (images of one size)."""
    decades = range(math.floor(low), math.ceil(high) + 1)
    ticks = [10.0 ** k for k in decades if low <= k <= high]
    if len(ticks) < 2:
        ticks = sorted(m * 10.0 ** k for k in decades for m in (1, 2, 5)
                       if low <= math.log10(m * 10.0 ** k) <= high)
    return ticks or [float(round(10 ** ((low + high) / 2)))]


def size_scatter_svg(samples: pd.DataFrame, *, max_legend: int = 12) -> str | None:
    """Width against height (both on log scales), one colour per class, as inline SVG
    (None without sizes). Points that fall on the same spot are drawn once (a data set of
    same-size images is one dot, whose hover text says how many): the SVG stays small at
    any number of images."""
    width_height = samples[["width", "height"]].apply(pd.to_numeric, errors="coerce")
    keep = ((width_height["width"] > 0) & (width_height["height"] > 0)).to_numpy()
    if not keep.any():
        return None
    logs = np.log10(width_height.to_numpy(dtype=np.float64)[keep])
    label = samples["label"].to_numpy(dtype=object)[keep]
    labeled = pd.notna(label)
    if not labeled.any():
        label, labeled = np.full(len(label), "all", dtype=object), np.ones(len(label), bool)
    logs, label = logs[labeled], label[labeled]
    names = sorted({str(v) for v in label})
    codes = np.searchsorted(np.array(names, dtype=object), label.astype(str).astype(object))
    low, high = logs.min(axis=0), logs.max(axis=0)
    margin = np.maximum((high - low) * 0.05, 0.05)
    low, high = low - margin, high + margin
    left, top, plot_w, plot_h = 60.0, 30.0, 380.0, 300.0
    width, height = left + plot_w + 20.0, top + plot_h + 46.0

    def x_of(value):
        return left + (value - low[0]) / (high[0] - low[0]) * plot_w

    def y_of(value):
        return top + plot_h - (value - low[1]) / (high[1] - low[1]) * plot_h

    body = [f'<text x="{left + plot_w / 2:.1f}" y="18" text-anchor="middle" font-size="13">'
            f'image sizes</text><rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
            f'fill="none" stroke="#444"/>']
    for tick in _log_ticks(low[0], high[0]):
        x = x_of(math.log10(tick))
        body.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}"'
                    f' stroke="#444"/><text x="{x:.1f}" y="{top + plot_h + 16}" '
                    f'text-anchor="middle">{_tick_label(tick)}</text>')
    for tick in _log_ticks(low[1], high[1]):
        y = y_of(math.log10(tick))
        body.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#444"/>'
                    f'<text x="{left - 7}" y="{y + 4:.1f}" text-anchor="end">'
                    f'{_tick_label(tick)}</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8:.1f}" text-anchor="middle">'
                f'width (pixels)</text><text transform="translate(14,{top + plot_h / 2:.1f}) '
                f'rotate(-90)" text-anchor="middle">height (pixels)</text>')
    # one dot per class and spot (tenths of a pixel), in the order first seen
    spot = np.column_stack([codes, np.rint(x_of(logs[:, 0]) * 10),
                            np.rint(y_of(logs[:, 1]) * 10)]).astype(np.int64)
    _, first, counts = np.unique(spot, axis=0, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    sides = np.rint(10 ** logs).astype(np.int64)
    escaped = [html.escape(name) for name in names]
    for at, n in zip(first[order].tolist(), counts[order].tolist()):
        code, x, y = spot[at].tolist()
        many = f" ({n:,} images)" if n > 1 else ""
        body.append(f'<circle cx="{x / 10:g}" cy="{y / 10:g}" r="2.6" '
                    f'fill="{PALETTE[code % 10]}" fill-opacity="0.6"><title>{escaped[code]}: '
                    f'{sides[at, 0]}x{sides[at, 1]}{many}</title></circle>')
    if len(names) <= max_legend and names != ["all"]:
        for i, name in enumerate(names):
            y = top + 12 + 15 * i
            body.append(f'<circle cx="{left + 12}" cy="{y}" r="4" fill="{PALETTE[i % 10]}" '
                        f'fill-opacity="0.6"/><text x="{left + 21}" y="{y + 4}">'
                        f'{html.escape(name[:24])}</text>')
    return _svg(width, height, "image sizes", body)


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
    for label, image in class_montages(samples, per_class=per_class, seed=rng).items():
        target = out_dir / f"montage-{_slug(label)}.png"
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        montages[label] = str(target)
    written["montages"] = montages
    return written


def class_montages(samples: pd.DataFrame, *, per_class: int = 32,
                   seed: SeedLike = 0) -> dict[str, Image.Image]:
    """One :func:`montage` per class (``"unlabeled"`` when no sample is labeled) of
    ``per_class`` images drawn at random (``seed``), titled with the class's size."""
    rng = resolve_rng(seed)
    labeled = samples[samples["label"].notna()]
    groups = labeled.groupby("label") if not labeled.empty else [("unlabeled", samples)]
    montages: dict[str, Image.Image] = {}
    for label, group in groups:
        chosen = group["path"].to_numpy()
        if len(chosen) > per_class:
            chosen = chosen[np.sort(rng.choice(len(chosen), per_class, replace=False))]
        montages[str(label)] = montage(list(chosen), title=f"{label}  ({len(group)} images)")
    return montages
