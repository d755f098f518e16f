"""The audit report: one self-contained HTML file (images inlined) and one JSON file."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from smartset._atomic import write_text
from smartset.audit.checks import CHECKS
from smartset.stats import PALETTE, class_histogram_svg, class_montages, size_scatter_svg
from smartset.thumbs import thumbnail_jpeg

__all__ = ["write_report"]

_PER_SECTION = 48
_GROUPS_SHOWN = 40
_HISTOGRAM_PROPERTIES = ("brightness", "contrast", "sharpness", "entropy", "colourfulness",
                         "aspect_ratio", "megapixels")
_KIND_TITLES = {
    "unreadable": "Unreadable or corrupt files",
    "dark": "Too dark", "bright": "Too bright", "blurry": "Blurry",
    "low_information": "Low information", "odd_size": "Odd size",
    "odd_aspect_ratio": "Odd aspect ratio", "grayscale": "Grayscale among colour images",
    "exact_duplicate": "Exact duplicates", "near_duplicate": "Near duplicates",
    "outlier": "Outliers", "class_outlier": "Far from their own class",
    "class_imbalance": "Class imbalance", "bias": "Bias probes",
    "error_bias": "Properties that predict the model's errors",
}

_KIND_MEANINGS = {
    "unreadable": "files that cannot be decoded (at ingest or now)",
    "exact_duplicate": "the same bytes or the same decoded pixels",
    "near_duplicate": "re-encoded, resized, cropped, shifted or brightened copies",
    "outlier": "unlike every other image (far from its nearest neighbours)",
    "class_outlier": "far from the centre of its own class",
    "class_imbalance": "classes much smaller than the largest or than the median",
    "bias": "a single property predicts the label: a shortcut a model can learn",
    "error_bias": "images in this range of a property are misclassified far more often",
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f4f4f4} .num{text-align:right} .flag{background:#fff3cd}
.grid{display:flex;flex-wrap:wrap;gap:8px} .card{width:112px;font-size:11px;word-break:break-all}
.card img{width:104px;height:104px;object-fit:contain;background:#eee;border:1px solid #ccc}
.group{display:flex;gap:8px;align-items:flex-start;margin:8px 0;padding:6px;border:1px solid #eee}
.tag{display:inline-block;padding:1px 6px;border-radius:8px;background:#eee;margin-right:4px;font-size:11px}
.tag.bad{background:#f8d7da} .muted{color:#777} img.plot{max-width:100%}
"""


def _png_data_uri(image) -> str:
    """A PIL image as a ``data:`` URI of its PNG (zlib's fastest level: a montage of
    photos compresses 2% less, 3x faster)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class _Thumbs:
    """The report's image cards. A card holds a placeholder for its thumbnail; :meth:`fill`
    makes every thumbnail of the page at once on a few threads (Pillow decodes and encodes
    without the GIL) and puts them in, instead of one after another as cards are written."""

    def __init__(self, ws, samples: pd.DataFrame):
        self.cache = ws.cache_dir
        self.samples = samples.set_index("id")
        self.wanted: dict[str, int] = {}

    def card(self, sample_id: str, caption: str, title: str = "") -> str:
        row = self.samples.loc[sample_id]
        number = self.wanted.setdefault(sample_id, len(self.wanted))
        label = "unlabeled" if row["label"] is None else row["label"]
        return (f'<div class="card" title="{html.escape(title or row["relpath"])}">'
                f'\x00{number}\x00'  # the thumbnail, put in by fill()
                f'<div><b>{html.escape(str(label))}</b> · {html.escape(row["split"])}</div>'
                f'<div class="muted">{html.escape(row["relpath"][-40:])}</div>'
                f'<div>{html.escape(caption)}</div></div>')

    def _image(self, sample_id: str) -> str:
        row = self.samples.loc[sample_id]
        data = thumbnail_jpeg(self.cache, row["path"], row["sha256"])
        if data is None:
            return '<div style="width:104px;height:104px;background:#fdd">undecodable</div>'
        return f'<img loading="lazy" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'

    def fill(self, parts: list[str]) -> list[str]:
        """``parts`` with every card's placeholder replaced by its thumbnail."""
        from concurrent.futures import ThreadPoolExecutor

        ids = list(self.wanted)
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            images = list(pool.map(self._image, ids))
        pieces = "\n".join(parts).split("\x00")  # text, number, text, number, ...
        pieces[1::2] = [images[int(number)] for number in pieces[1::2]]
        return ["".join(pieces)]


def _severity_order(kind: str, rows: pd.DataFrame) -> pd.DataFrame:
    check = CHECKS.get(kind)
    ascending = check is not None and check.direction == "low"
    return rows.sort_values("score", ascending=ascending)


_COLOURS = PALETTE  # matplotlib's tab10, as the class and size charts


def _histograms(props: pd.DataFrame) -> str:
    """Per-class step histograms (density, 30 shared bins) of the report's properties, as
    inline SVG written here rather than drawn with matplotlib: a few polylines and labels,
    where matplotlib's text layout took about 1.7 CPU-s a report (a fifth of a cached
    re-audit of the 741 photos)."""
    columns = [c for c in _HISTOGRAM_PROPERTIES if c in props and props[c].notna().any()]
    if not columns:
        return ""
    groups = (list(props.groupby(props["label"].fillna("(unlabeled)")))
              if props["label"].notna().any() else [("all", props)])
    width, height, pad = 260, 170, 28
    panels = []
    for column in columns:
        values = props[column].astype(float)
        log = column in ("aspect_ratio", "megapixels")
        if log:
            values = np.log10(values.clip(lower=1e-6))
        finite = values[np.isfinite(values)]
        edges = np.histogram_bin_edges(finite, bins=30) if len(finite) else np.linspace(0, 1, 31)
        curves = []
        for label, group in groups[:10]:
            data = values.loc[group.index]
            data = data[np.isfinite(data)]
            if len(data):
                curves.append((str(label)[:20], np.histogram(data, bins=edges, density=True)[0]))
        top = max((float(c.max()) for _, c in curves), default=0.0) or 1.0
        x = pad + (edges - edges[0]) / max(float(edges[-1] - edges[0]), 1e-12) * (width - pad - 8)
        lines = []
        for number, (label, counts) in enumerate(curves):
            y = height - pad - counts / top * (height - 2 * pad)
            points = " ".join(f"{x[i]:.1f},{y[i]:.1f} {x[i + 1]:.1f},{y[i]:.1f}"
                              for i in range(len(counts)))
            lines.append(f'<polyline fill="none" stroke="{_COLOURS[number % 10]}" '
                         f'stroke-width="1.3" points="{points}"><title>{html.escape(label)}'
                         f'</title></polyline>')
        title = f"log10 {column}" if log else column
        panels.append(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{html.escape(title)}" style="font:10px sans-serif">'
            f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="11">'
            f'{html.escape(title)}</text>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - 8}" y2="{height - pad}" '
            f'stroke="#444"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" '
            f'stroke="#444"/>{"".join(lines)}'
            f'<text x="{pad}" y="{height - pad + 13}" text-anchor="start">{edges[0]:.3g}</text>'
            f'<text x="{width - 8}" y="{height - pad + 13}" text-anchor="end">{edges[-1]:.3g}'
            f'</text><text x="{pad - 3}" y="{pad + 4}" text-anchor="end">{top:.2g}</text></svg>')
    legend = ""
    if len(groups) <= 10:
        legend = "<p>" + " ".join(
            f'<span class="tag" style="border:2px solid {_COLOURS[i % 10]}">'
            f'{html.escape(str(label)[:20])}</span>' for i, (label, _) in enumerate(groups)) + "</p>"
    return legend + '<div class="grid">' + "".join(panels) + "</div>"


def _class_charts(samples: pd.DataFrame) -> str:
    """The class histogram and the size scatter (inline SVG) and a montage of up to 32
    images per class, as :mod:`smartset.stats` draws them, as the report's HTML: nothing
    is written beside the report."""
    charts = [chart for chart in (class_histogram_svg(samples), size_scatter_svg(samples))
              if chart is not None]
    parts = ['<div class="grid" style="gap:24px">' + "".join(charts) + "</div><h2>Montages</h2>"]
    for label, image in class_montages(samples, seed=0).items():
        parts.append(f"<div><img class='plot' alt='{html.escape(label)}' "
                     f"src='{_png_data_uri(image)}'></div>")
    return "".join(parts)


def write_report(ws, result, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``issues.json`` under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    props = result.properties
    every_sample = ws.samples(result.version, include_unavailable=True)
    thumbs = _Thumbs(ws, every_sample)
    findings = result.findings
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>smartset audit</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Audit of {html.escape(result.version or 'the live catalog')}</h1>",
             f"<p class='muted'>{html.escape(str(ws.path))} · run {result.run_id} · "
             f"{result.summary['n_audited']} images audited ({result.summary['computed']} measured, "
             f"{result.summary['cached']} from cache)</p>"]

    parts.append("<h2>Overview</h2><table><tr><th>finding</th><th class='num'>count</th><th>what it means</th></tr>")
    for kind, count in result.counts().items():
        meaning = CHECKS[kind].description if kind in CHECKS else _KIND_MEANINGS.get(kind, "")
        parts.append(f"<tr><td><a href='#{kind}'>{html.escape(_KIND_TITLES.get(kind, kind))}</a></td>"
                     f"<td class='num'>{count}</td><td>{html.escape(meaning)}</td></tr>")
    parts.append("</table>")
    s = result.summary
    parts.append(f"<p>Duplicate sets: {s['duplicate_groups']['exact_duplicate']} exact, "
                 f"{s['duplicate_groups']['near_duplicate']} near; {s['label_conflicts']} across "
                 f"classes (label conflicts), {s['split_leakage']} across splits (leakage).</p>")
    if result.skipped:
        parts.append("<p><b>Not checked:</b></p><ul>" + "".join(
            f"<li>{html.escape(name)}: {html.escape(why)}</li>" for name, why in result.skipped.items())
            + "</ul>")

    parts.append("<h2>Thresholds</h2><table><tr><th>check</th><th>property</th><th>flags</th>"
                 "<th class='num'>threshold</th><th>set by</th><th class='num'>absolute limit</th>"
                 "<th class='num'>robust fence</th><th class='num'>flagged</th></tr>")
    for name, info in result.thresholds.items():
        if "skipped" in info:
            continue
        fence = "" if info["fence"] is None else f"{info['fence']:.3g}"
        parts.append(f"<tr><td>{name}</td><td>{info['property']}</td><td>{info['direction']} values</td>"
                     f"<td class='num'>{info['threshold']:.3g}</td><td>{info['set_by']}</td>"
                     f"<td class='num'>{info['absolute']:.3g}</td><td class='num'>{fence}</td>"
                     f"<td class='num'>{info['flagged']}</td></tr>")
    parts.append("</table><p class='muted'>Each check uses its absolute limit, unless that "
                 "would flag more than 10% of this data set (then it is how the data looks): "
                 "then only images beyond the robust fence (median ± 3 × 1.4826 × MAD) are "
                 "flagged. Near duplicates must also be closer than the image's own "
                 "neighbourhood is crowded. Override with --threshold CHECK=VALUE.</p>")
    parts.append(_features_table(s.get("features")))

    dataset_level = findings[findings["sample_id"].isna()]
    for kind in ("class_imbalance", "unreadable", "error_bias"):
        rows = dataset_level[dataset_level["kind"] == kind]
        if len(rows):
            parts.append(f"<h2 id='{kind}'>{_KIND_TITLES[kind]}</h2><ul>" + "".join(
                f"<li>{html.escape(r)}</li>" for r in rows["reason"]) + "</ul>")

    per_image = findings[findings["sample_id"].notna()]
    for kind in [k for k in _KIND_TITLES if k in set(per_image["kind"])]:
        if kind in ("exact_duplicate", "near_duplicate"):
            continue
        rows = _severity_order(kind, per_image[per_image["kind"] == kind])
        parts.append(f"<h2 id='{kind}'>{_KIND_TITLES[kind]} ({len(rows)})</h2><div class='grid'>")
        for row in rows.head(_PER_SECTION).itertuples():
            parts.append(thumbs.card(row.sample_id, f"{row.score:.3g}", row.reason))
        parts.append("</div>")
        if len(rows) > _PER_SECTION:
            parts.append(f"<p class='muted'>… and {len(rows) - _PER_SECTION} more in issues.json</p>")

    for kind in ("exact_duplicate", "near_duplicate"):
        groups = [g for g in result.duplicate_groups if g["kind"] == kind]
        if not groups:
            continue
        groups.sort(key=lambda g: (-("label conflict" in g["scopes"]), -("split leakage" in g["scopes"]),
                                   -len(g["members"])))
        parts.append(f"<h2 id='{kind}'>{_KIND_TITLES[kind]} ({len(groups)} sets)</h2>")
        for group in groups[:_GROUPS_SHOWN]:
            tags = "".join(f"<span class='tag{' bad' if scope != 'same class' else ''}'>"
                           f"{html.escape(scope)}</span>" for scope in group["scopes"])
            parts.append(f"<div class='group'><div style='width:120px'>{tags}<br>"
                         f"{len(group['members'])} images</div>")
            parts.extend(thumbs.card(m, "") for m in group["members"][:12])
            parts.append("</div>")

    parts.append("<h2 id='bias'>Bias probes: does one property alone predict the label?</h2>")
    if len(result.bias):
        parts.append("<table><tr><th>property</th><th class='num'>accuracy</th><th class='num'>"
                     "majority baseline</th><th class='num'>skill</th><th>better than chance, by class</th></tr>")
        for row in result.bias.itertuples():
            lift = ", ".join(f"{html.escape(k)} {v:.1f}×" for k, v in
                             sorted(row.lift_by_class.items(), key=lambda kv: -kv[1]))
            parts.append(f"<tr class='{'flag' if row.flagged else ''}'><td>{row.property}</td>"
                         f"<td class='num'>{row.accuracy:.3f}</td><td class='num'>{row.baseline:.3f}</td>"
                         f"<td class='num'>{row.skill:.2f}</td><td>{lift}</td></tr>")
        parts.append("</table><p class='muted'>Accuracy of a classifier that sees only that "
                     "property (10 quantile bins, 5-fold cross-validation); baseline: always "
                     "guessing the most frequent label; skill: the share of the possible gain "
                     "over the baseline. Highlighted rows (skill ≥ 0.2) are shortcuts a model "
                     "could learn instead of the content.</p>")
    else:
        parts.append(f"<p>{html.escape(result.skipped.get('bias', 'No probes.'))}</p>")

    parts.append("<h2>Property distributions per class</h2>" + _histograms(props))
    parts.append("<h2>Classes</h2>" + _class_charts(every_sample[every_sample["status"] == "ok"]))
    parts.append("</body></html>")
    report_path = out_dir / "report.html"
    write_text(report_path, "\n".join(thumbs.fill(parts)))

    samples = every_sample.set_index("id")
    records = []
    for row in findings.itertuples():
        record = {"kind": row.kind, "sample_id": row.sample_id, "score": row.score,
                  "threshold": row.threshold, "reason": row.reason, "group": row.group}
        if row.sample_id is not None and row.sample_id in samples.index:
            sample = samples.loc[row.sample_id]
            record.update(relpath=sample["relpath"], label=sample["label"], split=sample["split"])
        records.append(record)
    document = {"run_id": result.run_id, "version": result.version, "summary": result.summary,
                "thresholds": result.thresholds, "findings": records,
                "duplicate_groups": result.duplicate_groups,
                "bias": result.bias.to_dict(orient="records")}
    json_path = out_dir / "issues.json"
    write_text(json_path, json.dumps(document, indent=1, default=_json_default, ensure_ascii=False))
    return report_path, json_path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(value) else float(value)
    return str(value)


def _features_table(features: dict | None) -> str:
    """Which features each neighbour check read (the summary's ``features``)."""
    if not features:
        return ""
    near = features.get("near_duplicate", {})
    rows = [("near duplicates: candidates", near.get("candidates", "")),
            ("near duplicates: verification", near.get("verification", "")),
            ("outliers", features.get("outlier", "")),
            ("far from own class", features.get("class_outlier", ""))]
    body = "".join(f"<tr><td>{html.escape(check)}</td><td>{html.escape(str(what))}</td></tr>"
                   for check, what in rows)
    note = features.get("note")
    return ("<h2>Features</h2><table><tr><th>check</th><th>features</th></tr>" + body
            + "</table>" + f"<p class='muted'>Images: {html.escape(features.get('images', ''))}; "
            f"asked for: {html.escape(features.get('requested', ''))}."
            + (f" <b>{html.escape(note)}</b>" if note else "") + "</p>")
