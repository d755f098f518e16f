"""Preview grids: originals in the first row, augmentations below, labelled, as in the
lecture's MNIST and CIFAR figures; boxes and masks drawn on when given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from smartset._atomic import atomic_path
from smartset._names import safe_name
from smartset.augment.policy import NAMED_POLICIES, augment, named_policy, resolve_policy
from smartset.augment.targets import BoundingBoxes, Masks

__all__ = ["preview_grid", "write_preview"]

_MASK_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                          [145, 30, 180], [70, 240, 240]], dtype=np.float32)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _to_rgb(images: torch.Tensor) -> np.ndarray:
    """N x C x H x W (any dtype) -> N x H x W x 3 uint8 for display."""
    x = images.detach().cpu()
    if x.is_floating_point():
        lo, hi = float(x.min()) if x.numel() else 0.0, float(x.max()) if x.numel() else 1.0
        if lo < 0 or hi > 1:  # normalised data: stretch for display
            x = (x - lo) / max(hi - lo, 1e-12)
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    elif x.dtype != torch.uint8:
        x = (x.float() / max(float(x.max()), 1.0) * 255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3] if x.shape[1] > 3 else torch.cat([x, x[:, :1]], 1)[:, :3]
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def preview_grid(images: torch.Tensor, policy, *, k: int = 4, seed=0,
                 labels: Sequence[str] | None = None, title: str | None = None,
                 cell: int | None = None, boxes: BoundingBoxes | None = None,
                 masks: Masks | None = None) -> Image.Image:
    """A grid image: the ``N`` originals in the first row, then ``k`` rows of augmentations
    by ``policy`` (seeded), or, if ``policy`` is a mapping ``{row label: policy}``, one row
    per policy. ``labels`` name the columns (e.g. classes); ``boxes``/``masks`` are moved
    with the images and drawn on. ``cell``: pixels per image (default: small images scaled
    up to at least 56)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise TypeError("preview_grid needs an image batch N x C x H x W")
    n, _, height, width = images.shape
    policies = dict(policy) if isinstance(policy, Mapping) else {
        f"augmented {i + 1}": resolve_policy(policy) for i in range(k)}
    rows: list[tuple[str, np.ndarray, BoundingBoxes | None, Masks | None]] = [
        ("input", _to_rgb(images), boxes, masks)]
    rng = np.random.default_rng(seed)
    extra = [t for t in (boxes, masks) if t is not None]
    for row_label, row_policy in policies.items():
        result = augment((images, *extra) if extra else images, resolve_policy(row_policy),
                         seed=rng)
        out_boxes = out_masks = None
        if extra:
            out_images, *moved = result.output
            out_boxes = moved.pop(0) if boxes is not None else None
            out_masks = moved.pop(0) if masks is not None else None
        else:
            out_images = result.output
        rows.append((row_label, _to_rgb(out_images), out_boxes, out_masks))
    scale = cell / max(height, width) if cell else max(1.0, 56 / max(height, width))
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    font = _font(12)
    left = max(90, 7 * max(len(r[0]) for r in rows) + 12)
    top = 22 + (20 if title else 0)
    gap = 4
    grid = Image.new("RGB", (left + n * (cw + gap) + gap, top + len(rows) * (ch + gap) + gap),
                     "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((gap, 3), title, fill="black", font=_font(14))
    for j in range(n):
        if labels is not None:
            draw.text((left + j * (cw + gap) + gap, top - 16), str(labels[j])[:14], fill="black",
                      font=font)
    for i, (row_label, pixels, row_boxes, row_masks) in enumerate(rows):
        y0 = top + i * (ch + gap) + gap
        draw.text((gap, y0 + ch // 2 - 6), row_label, fill="black", font=font)
        for j in range(n):
            tile = pixels[j]
            if row_masks is not None:
                tile = _overlay(tile, row_masks.data[j])
            image = Image.fromarray(tile).resize((cw, ch), Image.NEAREST if scale >= 1
                                                 else Image.BILINEAR)
            x0 = left + j * (cw + gap) + gap
            grid.paste(image, (x0, y0))
            if row_boxes is not None:
                for b in row_boxes.to_xyxy()[j].tolist():
                    draw.rectangle([x0 + b[0] * scale, y0 + b[1] * scale,
                                    x0 + b[2] * scale - 1, y0 + b[3] * scale - 1],
                                   outline=(255, 215, 0), width=2)
    return grid


def _overlay(tile: np.ndarray, mask: torch.Tensor) -> np.ndarray:
    labels = mask.detach().cpu().to(torch.int64).amax(0).numpy() if mask.shape[0] > 1 else \
        mask[0].detach().cpu().to(torch.int64).numpy()
    out = tile.astype(np.float32)
    on = labels > 0
    colour = _MASK_COLOURS[(labels[on] - 1) % len(_MASK_COLOURS)]
    out[on] = 0.55 * out[on] + 0.45 * colour
    return out.round().astype(np.uint8)


def write_preview(ws, *, policy=None, n: int = 8, k: int = 4, out: str | Path | None = None,
                  seed: int = 0, version: str | None = None, mode: str | None = None) -> dict:
    """Write a preview PNG for ``n`` samples of ``version`` (originals, not derived copies;
    one per class first, drawn with ``seed``): ``policy`` with ``k`` augmentations each, or, with no policy, one row per
    named MNIST-study combination. Default file: ``WORKSPACE/reports/augment/preview-POLICY.png``.
    Returns ``{"path", "samples", "policy"}``."""
    from smartset.imageio import load_image

    frame = ws.samples(version)
    if frame["origin_id"].isna().any():  # show originals, not augmented copies
        frame = frame[frame["origin_id"].isna()]
    if frame.empty:
        from smartset.augment.errors import AugmentError

        raise AugmentError("There are no samples to preview; ingest some first.")
    chosen = _choose(frame, n, seed)
    arrays = [load_image(p, mode=mode) for p in chosen["path"]]
    arrays = [a[:, :, None] if a.ndim == 2 else a for a in arrays]
    channels = max(a.shape[2] for a in arrays)
    arrays = [np.repeat(a, channels, 2) if a.shape[2] == 1 else a[:, :, :channels] for a in arrays]
    sizes = {a.shape[:2] for a in arrays}
    tensors = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in arrays]
    if len(sizes) > 1:  # mixed sizes: a common square, for display only
        side = int(min(256, np.median([max(s) for s in sizes])))
        tensors = [F.interpolate(t[None].float(), size=(side, side), mode="bilinear",
                                 antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
                   for t in tensors]
    images = torch.stack(tensors)
    if policy is None:
        policies = {name: named_policy(name) for name in NAMED_POLICIES if name != "original"}
        label = "named-policies"
        title = "The MNIST study's combinations (first row: originals)"
    else:
        policies = resolve_policy(policy)
        label = policies.label
        title = f"policy {label}: originals, then {k} augmentations (seed {seed})"
    grid = preview_grid(images, policies, k=k, seed=seed, title=title,
                        labels=[str(v) if v is not None else "" for v in chosen["label"]])
    # a policy's label comes from its file: made safe before it becomes part of a path
    target = (Path(out) if out else
              ws.reports_dir / "augment" / f"preview-{safe_name(label, 'policy')}.png")
    with atomic_path(target) as tmp:
        grid.save(tmp, format="PNG")
    return {"path": str(target), "samples": list(chosen["id"]), "policy": label,
            "rows": 1 + (len(policies) if isinstance(policies, dict) else k), "columns": len(chosen)}


def _choose(frame, n: int, seed: int):
    """``n`` samples, round-robin over classes (in sorted order), each class shuffled."""
    rng = np.random.default_rng(seed)
    groups = [g.iloc[rng.permutation(len(g))] for _, g in
              frame.assign(_key=frame["label"].fillna("")).groupby("_key", sort=True)]
    picked, depth = [], 0
    while len(picked) < min(n, len(frame)):
        for g in groups:
            if depth < len(g) and len(picked) < n:
                picked.append(g.index[depth])
        depth += 1
    return frame.loc[picked]
