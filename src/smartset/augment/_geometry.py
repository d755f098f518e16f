"""Fused geometric resampling: every consecutive geometric step, one sampling of the source.

A geometric step maps output pixels back to input pixels (a *backward* map), in pixel-centre
coordinates (pixel column ``j`` has ``x = j``). Affine and projective steps are ``3 x 3``
matrices; elastic steps add a smooth random displacement field. A run of steps composes into
one backward map ``b = b_1 o b_2 o ... o b_k`` and the image is sampled once through it:

- affine-only maps are evaluated exactly at every output pixel;
- maps with displacement fields (see :mod:`._fields`) are evaluated on a lattice of output
  points (spacing ``sigma / 2``), then upsampled bilinearly, which is exact for the affine
  part and accurate for the smooth field part; a field followed only by image-independent
  shifts is laid on that lattice itself (a stationary random field has the same
  distribution wherever its lattice lies), and steps after it act on its coarse values;
- maps that send integer pixels to integer pixels (flips, whole-pixel shifts) are a gather,
  exact for every dtype.

Each sample takes its path from its own parameters, and every computation is per sample
(elementwise, or exact integer arithmetic where a reduction is needed), so a batch gives
bit-identical results to its samples taken one at a time.

Fill modes for pixels whose source lies outside the input follow Keras / SciPy, shown on a
row ``abcd``: ``constant`` ``kkkk|abcd|kkkk``, ``nearest`` ``aaaa|abcd|dddd``, ``reflect``
``abcddcba|abcd|dcbaabcd``, ``wrap`` ``abcdabcd|abcd|abcdabcd``. Between the last pixel and a
constant fill, bilinear sampling blends towards the fill value (no jagged edges).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from smartset._threads import capped_threads
from smartset.augment import _opencv_warp as _opencv
from smartset.augment._field_maps import full_resolution_map
from smartset.augment._fields import (_apply_linear, field_coarse, field_lattice,
                                      field_layout, refine_field)
from smartset.augment.errors import AugmentError

FILL_MODES = ("constant", "nearest", "reflect", "wrap")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")
_CHUNK_PIXELS = 1 << 18  # output pixels per resampling chunk: grids stay in cache
_LATTICE_BLOCK = 64  # samples per lattice block (lattices are a quarter of the pixels or less)
# uint8 CPU rows of a path whose images have at least this many output pixels go through
# OpenCV, one image at a time (see _opencv_warp.py); smaller ones are cheaper as one
# batched grid_sample (measured on 28 x 28 digits and 224 x 224 photos, one core); the
# field path hands OpenCV the float path's own map in source pixels (_opencv_field_rows)
_OPENCV_MIN_PIXELS = {"resize": 0, "affine": 64 * 64, "field": 64 * 64, "mesh": 64 * 64}
_PADDING = {"constant": "zeros", "nearest": "border", "reflect": "reflection", "wrap": "border"}


# -- matrices: NumPy float64, (N, 3, 3), pixel-centre coordinates ------------------------
def identity(n: int) -> np.ndarray:
    return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` per sample, summed in a fixed order (same bits for any batch size)."""
    return (a[:, :, 0, None] * b[:, None, 0, :] + a[:, :, 1, None] * b[:, None, 1, :]
            + a[:, :, 2, None] * b[:, None, 2, :])


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of each ``3 x 3`` matrix by the adjugate (elementwise, batch-independent)."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    co = np.stack([e * i - f * h, -(b * i - c * h), b * f - c * e,
                   -(d * i - f * g), a * i - c * g, -(a * f - c * d),
                   d * h - e * g, -(a * h - b * g), a * e - b * d], axis=1).reshape(-1, 3, 3)
    det = a * co[:, 0, 0] + b * co[:, 1, 0] + c * co[:, 2, 0]
    if np.any(np.abs(det) < 1e-12):
        raise AugmentError("A geometric transform is singular (it collapses the image, e.g. "
                           "a scale of 0); use non-zero scales and shears below 90 degrees.")
    return co / det[:, None, None]


def rotation_matrix(degrees: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """Forward rotation about ``center`` (x, y); positive angles turn counter-clockwise as
    displayed, as OpenCV's ``getRotationMatrix2D``."""
    theta = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    cos, sin = np.cos(theta), np.sin(theta)
    cx, cy = center
    m = identity(len(theta))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, sin, (1 - cos) * cx - sin * cy
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -sin, cos, sin * cx + (1 - cos) * cy
    return m


def translation_matrix(tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    m = identity(len(tx))
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale_matrix(sx: np.ndarray, sy: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    cx, cy = center
    m = identity(len(sx))
    m[:, 0, 0], m[:, 0, 2] = sx, cx * (1 - sx)
    m[:, 1, 1], m[:, 1, 2] = sy, cy * (1 - sy)
    return m


def shear_matrix(x_degrees: np.ndarray, y_degrees: np.ndarray,
                 center: tuple[float, float]) -> np.ndarray:
    """Forward shear about ``center``: ``x' = x + tan(x_deg) (y - cy)``, ``y' = y + tan(y_deg) (x - cx)``."""
    kx, ky = np.tan(np.deg2rad(x_degrees)), np.tan(np.deg2rad(y_degrees))
    cx, cy = center
    m = identity(len(kx))
    m[:, 0, 1], m[:, 0, 2] = kx, -kx * cy
    m[:, 1, 0], m[:, 1, 2] = ky, -ky * cx
    return m


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Forward projective maps sending the 4 points ``src[n]`` to ``dst[n]`` (N x 4 x 2)."""
    n = len(src)
    a = np.zeros((n, 8, 8))
    rhs = np.zeros((n, 8))
    for k in range(4):
        x, y = src[:, k, 0], src[:, k, 1]
        u, v = dst[:, k, 0], dst[:, k, 1]
        a[:, 2 * k, 0], a[:, 2 * k, 1], a[:, 2 * k, 2] = x, y, 1
        a[:, 2 * k, 6], a[:, 2 * k, 7] = -x * u, -y * u
        a[:, 2 * k + 1, 3], a[:, 2 * k + 1, 4], a[:, 2 * k + 1, 5] = x, y, 1
        a[:, 2 * k + 1, 6], a[:, 2 * k + 1, 7] = -x * v, -y * v
        rhs[:, 2 * k], rhs[:, 2 * k + 1] = u, v
    h = np.concatenate([np.linalg.solve(a, rhs[..., None])[..., 0], np.ones((n, 1))], axis=1)
    return h.reshape(n, 3, 3)


# -- steps -------------------------------------------------------------------------------
@dataclass
class GeoStep:
    """One geometric step for a batch. ``kind``: ``matrix`` (``backward``: N x 3 x 3, output
    pixel -> input pixel), ``field`` (an elastic displacement: ``alpha`` (N,) in pixels, 0
    where not applied, ``sigma``, noise ``streams``/``indices``) or ``center`` (shift the
    centre of mass to the centre: ``shift`` (N, 2) forward, NaN until measured) or ``mesh``
    (a smooth backward map given as a function of points: grid and optical distortion;
    rows that apply one are resampled through their full-resolution map).

    ``anchor``: a matrix step that only shifts by amounts drawn independently of the image
    (random translation); an elastic field followed only by such shifts is laid on the
    output pixel lattice, where it needs no interpolation (a stationary random field has
    the same distribution wherever its lattice lies)."""

    kind: str
    size_in: tuple[int, int]
    size_out: tuple[int, int]
    applied: np.ndarray
    backward: np.ndarray | None = None
    alpha: np.ndarray | None = None
    sigma: float = 0.0
    streams: np.ndarray | None = None
    indices: np.ndarray | None = None
    shift: np.ndarray | None = None
    anchor: bool = False
    mesh: object = None  # kind "mesh": a backward map of points (see _meshes.py)

    def subset(self, rows: np.ndarray) -> GeoStep:
        def pick(a):
            return None if a is None else a[rows]
        return replace(self, applied=self.applied[rows], backward=pick(self.backward),
                       alpha=pick(self.alpha), streams=pick(self.streams),
                       indices=pick(self.indices), shift=pick(self.shift),
                       mesh=None if self.mesh is None else self.mesh.subset(rows))


def center_of_mass(images: torch.Tensor) -> np.ndarray:
    """(x, y) centre of mass of each image's mean intensity (N x 2, float64); the canvas
    centre for an all-zero image."""
    weights = images.to(torch.float64).mean(1)
    n, height, width = weights.shape
    total = weights.sum((1, 2))
    xs = torch.arange(width, dtype=torch.float64, device=images.device)
    ys = torch.arange(height, dtype=torch.float64, device=images.device)
    cx = (weights.sum(1) * xs).sum(1) / total
    cy = (weights.sum(2) * ys).sum(1) / total
    com = torch.stack([cx, cy], 1).cpu().numpy()
    empty = ~(total.cpu().numpy() > 0)
    com[empty] = [(width - 1) / 2, (height - 1) / 2]
    return com


def resolve_centering(steps: list[GeoStep], images: torch.Tensor | None, *, fill: str,
                      fill_value: float, interpolation: str) -> list[GeoStep]:
    """Replace ``center`` steps by translations, measuring the centre of mass of the image
    as the steps before each one leave it (a sampling for the measurement only). Where that
    image touches the border, some content may be cut off there but come back into view in
    the fused result: the shift is then refined on the result itself (up to 3 times)."""
    resolved: list[GeoStep] = []
    for step in steps:
        if step.kind != "center":
            resolved.append(step)
            continue
        shift = step.shift.copy()
        todo = np.flatnonzero(step.applied & np.isnan(shift).any(1))
        if len(todo):
            if images is None:
                raise AugmentError("centering measures the image's centre of mass: pass the "
                                   "image batch along with its targets.")
            height, width = step.size_in
            target = np.array([(width - 1) / 2, (height - 1) / 2])
            subset = _warped(resolved, todo, images, fill, fill_value, interpolation)
            shift[todo] = target - center_of_mass(subset)
            frame = subset.abs().sum(1)
            touching = ((frame[:, 0].sum(1) + frame[:, -1].sum(1) + frame[:, :, 0].sum(1)
                         + frame[:, :, -1].sum(1)) > 0).cpu().numpy()
            for _ in range(3):
                rows = todo[touching]
                if not len(rows):
                    break
                moved = resolved + [replace(step, kind="matrix", backward=translation_matrix(
                    -shift[:, 0], -shift[:, 1]))]
                error = target - center_of_mass(_warped(moved, rows, images, fill, fill_value,
                                                        interpolation))
                shift[rows] += error
                touching[touching] = np.abs(error).max(1) > 0.02
        shift[~step.applied] = 0.0
        resolved.append(replace(step, kind="matrix", shift=shift,
                                backward=translation_matrix(-shift[:, 0], -shift[:, 1])))
    return resolved


def _warped(steps: list[GeoStep], rows: np.ndarray, images: torch.Tensor, fill, fill_value,
            interpolation) -> torch.Tensor:
    """``images[rows]`` through ``steps`` (float, for measuring)."""
    subset = images.index_select(0, torch.as_tensor(rows, device=images.device))
    if not steps:
        return subset.to(torch.float64)
    warp = FusedWarp([s.subset(rows) for s in steps])
    return warp.images(subset, fill=fill, fill_value=fill_value, interpolation=interpolation,
                       keep_float=True)


# -- the fused warp ----------------------------------------------------------------------
class FusedWarp:
    """The composition of geometric steps (all ``matrix`` or ``field``) for a batch."""

    def __init__(self, steps: list[GeoStep]):
        if not steps:
            raise ValueError("a warp needs at least one step")
        self.steps = steps
        self.n = len(steps[0].applied)
        self.size_out = steps[-1].size_out
        self.size_src = steps[0].size_in
        # ops in the order they act on output coordinates; consecutive matrices folded
        self.ops: list[tuple[str, object]] = []
        self.anchors: list[bool] = []  # per matrix op: only shifts independent of the image
        for step in reversed(steps):
            if step.kind == "matrix":
                if self.ops and self.ops[-1][0] == "matrix":
                    self.ops[-1] = ("matrix", compose(step.backward, self.ops[-1][1]))
                    self.anchors[-1] = self.anchors[-1] and step.anchor
                else:
                    self.ops.append(("matrix", step.backward))
                    self.anchors.append(step.anchor)
            elif step.kind == "field":
                self.ops.append(("field", step))
                self.anchors.append(False)
            elif step.kind == "mesh":  # identity where not applied: those rows skip it
                self.ops.append(("mesh", step))
                self.anchors.append(True)
            else:
                raise ValueError(f"unresolved step kind {step.kind!r}")
        self.affine = identity(self.n)  # the product of every matrix (fields left out)
        has_field = np.zeros(self.n, dtype=bool)
        has_mesh = np.zeros(self.n, dtype=bool)
        for kind, op in self.ops:
            if kind == "matrix":
                self.affine = compose(op, self.affine)
            elif kind == "field":
                has_field |= op.alpha != 0
            else:
                has_mesh |= op.applied
        self.has_field = has_field & ~has_mesh
        self.has_mesh = has_mesh
        self._lattice: dict[tuple, object] = {}  # lattices computed, by (device, normalized)

    # -- which path each sample takes
    def _paths(self) -> dict[str, np.ndarray]:
        b = self.affine
        projective = np.abs(b[:, 2, :2]).max(1) > 0
        integer = (~self.has_field & ~self.has_mesh & ~projective
                   & np.all(np.abs(b - np.round(b)) < 1e-9, axis=(1, 2)))
        same_size = self.size_out == self.size_src
        ident = integer & same_size & np.all(np.abs(b - np.eye(3)) < 1e-12, axis=(1, 2))
        affine = ~integer & ~self.has_field & ~self.has_mesh
        resize = affine & (self.crop_boxes()[:, 2] > 0)
        return {"identity": np.flatnonzero(ident),
                "integer": np.flatnonzero(integer & ~ident),
                "resize": np.flatnonzero(resize),
                "affine": np.flatnonzero(affine & ~resize),
                "field": np.flatnonzero(self.has_field),
                "mesh": np.flatnonzero(self.has_mesh)}

    def crop_boxes(self) -> np.ndarray:
        """Per sample, the pixel box (left, top, width, height; integers) that the warp
        resizes to the output canvas when its map is exactly that: an axis-aligned scale
        sending the output's pixel edges to the box's (random resized crop, resize, a
        crop); width 0 where it is anything else. Such a warp samples the box alone, its
        edges replicated (as torchvision, albumentations and ``cv2.resize`` crop and
        resize), rather than blending the outermost half pixel with what lies beyond."""
        if "crop_boxes" in self._lattice:
            return self._lattice["crop_boxes"]
        b = self.affine
        height, width = self.size_out
        src_h, src_w = self.size_src
        a, e = b[:, 0, 0], b[:, 1, 1]
        left, top = b[:, 0, 2] - 0.5 * a + 0.5, b[:, 1, 2] - 0.5 * e + 0.5
        w, h = a * width, e * height
        values = np.stack([left, top, w, h], 1)
        whole = np.round(values)
        ok = (~self.has_field & ~self.has_mesh & (np.abs(b[:, 0, 1]) < 1e-12)
              & (np.abs(b[:, 1, 0]) < 1e-12) & np.all(np.abs(b[:, 2, :2]) < 1e-12, axis=1)
              & np.all(np.abs(values - whole) < 1e-6, axis=1) & (a > 0) & (e > 0)
              & (whole[:, 2] >= 1) & (whole[:, 3] >= 1) & (whole[:, 0] >= 0)
              & (whole[:, 1] >= 0) & (whole[:, 0] + whole[:, 2] <= src_w)
              & (whole[:, 1] + whole[:, 3] <= src_h))
        boxes = np.where(ok[:, None], whole, 0).astype(np.int64)
        self._lattice["crop_boxes"] = boxes
        return boxes

    def _output_lattice(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The output lattice (x and y node positions): the fine lattice of the narrowest
        field on the output canvas, so a field read right at the output (or after shifts
        only) is read at its own nodes."""
        key = ("output", str(device))
        if key not in self._lattice:
            self._lattice[key] = self._make_output_lattice(device)
        return self._lattice[key]

    def _make_output_lattice(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.size_out
        sigma = min(op.sigma for kind, op in self.ops if kind == "field")
        layout = field_layout(height, width, float(sigma))
        ys = torch.linspace(0, height - 1, layout.hf, dtype=torch.float64, device=device).float()
        xs = torch.linspace(0, width - 1, layout.wf, dtype=torch.float64, device=device).float()
        return xs, ys

    def lattice(self, device, *, normalized: bool = False) -> torch.Tensor:
        """Source coordinates of the output lattice nodes, ``N x 2 x h x w`` float32: pixels,
        or grid_sample's normalised coordinates (align_corners=False) if ``normalized``.

        The map is kept as an affine part ``M`` (applied to the regular lattice only at the
        end, as separable sums) plus a displacement ``D`` under a pending linear map ``L``:
        points = ``M grid + L D``. Matrices update ``M`` and ``L`` (3 x 3 products, no passes
        over the lattice); a field read at its nodes adds to ``D``; only fields read between
        nodes need the points themselves."""
        key = (str(device), normalized)
        if key in self._lattice:
            return self._lattice[key]
        xs, ys = self._output_lattice(device)
        h, w = len(ys), len(xs)
        projective = any(kind == "matrix" and np.abs(op[:, 2, :2]).max() > 0
                         for kind, op in self.ops)
        if projective:
            return self._lattice_direct(device, xs, ys, normalized)
        norm = self._normalizer(normalized)
        if self._single_field_on_nodes(h, w) is not None:
            out = self._fast_lattice(np.arange(self.n), device, normalized)
            self._lattice[key] = out
            return out
        affine = identity(self.n)
        linear = identity(self.n)
        delta = None  # N x 2 x h x w, in the coordinates before ``linear``
        on_nodes = np.ones(self.n, dtype=bool)
        for (kind, op), anchor in zip(self.ops, self.anchors):
            if kind == "mesh":  # the rows read here do not apply it
                continue
            if kind == "matrix":
                shift_only = np.all(op[:, :2, :2] == np.eye(2), axis=(1, 2))
                on_nodes &= shift_only & anchor
                affine = compose(op, affine)
                if delta is not None:
                    linear = compose(op * np.array([1.0, 1.0, 0.0]), linear)  # linear part
                continue
            field = field_lattice(op, device)
            if field.shape[-2:] != (h, w):
                on_nodes[:] = False
            d = field
            off = np.flatnonzero(~on_nodes)
            if len(off):  # read between nodes: the points are needed
                points = self._points_now(affine, linear, delta, off, xs, ys, device)
                rows = torch.as_tensor(off, device=device)
                fh, fw = op.size_in
                grid = torch.empty((len(off), h, w, 2), dtype=torch.float32, device=device)
                _corner_normalized(points[:, 0], fw, out=grid[..., 0])
                _corner_normalized(points[:, 1], fh, out=grid[..., 1])
                sampled = F.grid_sample(field.index_select(0, rows), grid, mode="bicubic",
                                        padding_mode="border", align_corners=True)
                if len(off) == self.n:
                    d = sampled
                else:
                    d = torch.empty((self.n, 2, h, w), dtype=torch.float32, device=device)
                    on = torch.as_tensor(np.flatnonzero(on_nodes), device=device)
                    d[on] = field.index_select(0, on)
                    d[rows] = sampled
            if delta is None:
                delta = d
            else:  # bring the displacement so far to the current coordinates, then add
                delta = _apply_linear(linear, delta) + d
                linear = identity(self.n)
            on_nodes[:] = False
        affine = compose(norm, affine)
        linear = compose(norm * [1.0, 1.0, 0.0], linear)
        out = self._affine_on_grid(affine, xs, ys, device)
        if delta is not None:
            out += _apply_linear(linear, delta)
        self._lattice[key] = out
        return out

    def _fast_lattice(self, rows: np.ndarray, device, normalized: bool) -> torch.Tensor:
        """The lattice of ``rows`` when one field is read at its own nodes: the affine part
        on the grid plus the field, mapped by the steps after it on its coarse lattice and
        refined (computed per chunk of rows, so temporaries stay in cache)."""
        coarse, affine, k = self._coarse_field(normalized)
        xs, ys = self._output_lattice(device)
        index = torch.as_tensor(rows)
        part = coarse if len(rows) == self.n else coarse.index_select(0, index)
        out = self._affine_on_grid(affine[rows], xs, ys, device)
        out += refine_field(part, self.ops[k][1]).to(device)
        return out

    def _coarse_field(self, normalized: bool):
        """``(coarse, affine, k)`` of :meth:`_fast_lattice` (kept): the only field's coarse
        lattice, mapped by the steps after it, the affine part, and the field's index."""
        key = ("coarse", normalized)
        if key not in self._lattice:
            xs, ys = self._output_lattice(torch.device("cpu"))
            k = self._single_field_on_nodes(len(ys), len(xs))
            norm = self._normalizer(normalized)
            after = norm
            for kind, op in self.ops[k + 1:]:
                if kind == "matrix":
                    after = compose(after, op)
            self._lattice[key] = (field_coarse(self.ops[k][1], linear=after),
                                  compose(norm, self.affine), k)
        return self._lattice[key]

    def _normalizer(self, normalized: bool, n: int | None = None) -> np.ndarray:
        """Source pixels to grid_sample's coordinates (align_corners=False), or identity."""
        m = identity(self.n if n is None else n)
        if normalized:
            src_h, src_w = self.size_src
            m[:] = [[2.0 / src_w, 0, 1.0 / src_w - 1], [0, 2.0 / src_h, 1.0 / src_h - 1],
                    [0, 0, 1]]
        return m

    def _single_field_on_nodes(self, h: int, w: int) -> int | None:
        """The index (in ``ops``) of the only field if it is read at its own lattice nodes
        for every sample by structure: only image-independent shifts come before it from
        the output side, and its lattice is the output lattice."""
        fields = [i for i, (kind, _) in enumerate(self.ops) if kind == "field"]
        if len(fields) != 1:
            return None
        k = fields[0]
        layout = field_layout(*self.ops[k][1].size_in, float(self.ops[k][1].sigma))
        if (layout.hf, layout.wf) != (h, w) or not all(self.anchors[:k]):
            return None
        return k

    @staticmethod
    def _affine_on_grid(affine: np.ndarray, xs, ys, device) -> torch.Tensor:
        """``affine`` (N x 3 x 3, no projective part) at the grid ``xs x ys``: N x 2 x h x w."""
        h, w = len(ys), len(xs)
        out = torch.empty((len(affine), 2, h, w), dtype=torch.float32, device=device)
        m = torch.from_numpy(affine.astype(np.float32)).to(device)
        for i in range(2):
            torch.add(m[:, i, 0].view(-1, 1, 1) * xs.view(1, 1, w),
                      m[:, i, 1].view(-1, 1, 1) * ys.view(1, h, 1) + m[:, i, 2].view(-1, 1, 1),
                      out=out[:, i])
        return out

    def _points_now(self, affine, linear, delta, rows, xs, ys, device) -> torch.Tensor:
        """The current points of ``rows``: ``affine grid + linear delta`` (n x 2 x h x w)."""
        out = self._affine_on_grid(affine[rows], xs, ys, device)
        if delta is not None:
            index = torch.as_tensor(rows, device=device)
            out += _apply_linear(linear[rows], delta.index_select(0, index))
        return out

    def _lattice_direct(self, device, xs, ys, normalized) -> torch.Tensor:
        """Lattice through projective steps: every step applied to the points."""
        h, w = len(ys), len(xs)
        x = xs.view(1, 1, w).expand(self.n, h, w).contiguous()
        y = ys.view(1, h, 1).expand(self.n, h, w).contiguous()
        for kind, op in self.ops:
            if kind == "mesh":  # the rows read here do not apply it
                continue
            if kind == "matrix":
                x, y = _apply_matrix(torch.from_numpy(op.astype(np.float32)).to(device), x, y)
                continue
            field = field_lattice(op, device)
            fh, fw = op.size_in
            grid = torch.empty((self.n, h, w, 2), dtype=torch.float32, device=device)
            _corner_normalized(x, fw, out=grid[..., 0])
            _corner_normalized(y, fh, out=grid[..., 1])
            d = F.grid_sample(field, grid, mode="bicubic", padding_mode="border",
                              align_corners=True)
            x, y = x + d[:, 0], y + d[:, 1]
        if normalized:
            n = self._normalizer(True)[0]
            x, y = x * n[0, 0] + n[0, 2], y * n[1, 1] + n[1, 2]
        out = torch.stack([x, y], 1)
        self._lattice[(str(device), normalized)] = out
        return out

    def _normalized_lattice(self, rows: np.ndarray, device) -> torch.Tensor:
        """The normalised lattice of ``rows`` (grid_sample coordinates), float32."""
        return self._rows_lattice(rows, device, True)

    def _rows_lattice(self, rows: np.ndarray, device, normalized: bool) -> torch.Tensor:
        """The lattice of ``rows`` on ``device``: straight from the single field when it
        sits on the output lattice and the whole lattice is not cached, else rows of the
        cached lattice."""
        xs, ys = self._output_lattice(torch.device("cpu"))
        if (str(device), normalized) not in self._lattice and \
                self._single_field_on_nodes(len(ys), len(xs)) is not None:
            return self._fast_lattice(rows, device, normalized)
        lat = self.lattice(device, normalized=normalized)
        if len(rows) == self.n:
            return lat
        return lat.index_select(0, torch.as_tensor(rows, device=device))

    def _affine_grid(self, rows: np.ndarray, device) -> torch.Tensor:
        """Normalised source coordinates (grid_sample, align_corners=False): n x H x W x 2."""
        height, width = self.size_out
        b = compose(self._normalizer(True, len(rows)), self.affine[rows])
        m = torch.from_numpy(b.astype(np.float32)).to(device)
        xs = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, width)
        ys = torch.arange(height, dtype=torch.float32, device=device).view(1, height, 1)
        grid = torch.empty((len(rows), height, width, 2), dtype=torch.float32, device=device)
        for i in range(2):
            torch.add(m[:, i, 0].view(-1, 1, 1) * xs,
                      m[:, i, 1].view(-1, 1, 1) * ys + m[:, i, 2].view(-1, 1, 1),
                      out=grid[..., i])
        if bool((m[:, 2, :2] != 0).any()):
            w = (m[:, 2, 0].view(-1, 1, 1) * xs
                 + (m[:, 2, 1].view(-1, 1, 1) * ys + m[:, 2, 2].view(-1, 1, 1)))
            grid /= w.unsqueeze(-1)
        return grid

    # -- rows through a mesh: every step evaluated at the points themselves
    def _backward(self, rows: np.ndarray, x: torch.Tensor, y: torch.Tensor, device,
                  dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Source coordinates of output points ``(x, y)`` (``n x ...``, broadcastable) of
        ``rows`` through every step (elementwise per sample)."""
        for kind, op in self.ops:
            if kind == "matrix":
                m = torch.from_numpy(op[rows].astype(np.float64)).to(device, dtype)
                x, y = _apply_matrix(m, x, y)
            elif kind == "mesh":
                x, y = op.mesh.subset(rows).backward(x, y)
            else:
                step = op.subset(rows)
                if not (step.alpha != 0).any():
                    continue
                field = field_lattice(step, device)
                fh, fw = step.size_in
                x, y = torch.broadcast_tensors(x, y)
                shape = x.shape
                grid = torch.stack([_corner_normalized(x.reshape(len(rows), 1, -1).float(), fw),
                                    _corner_normalized(y.reshape(len(rows), 1, -1).float(), fh)],
                                   -1)
                d = F.grid_sample(field, grid, mode="bicubic", padding_mode="border",
                                  align_corners=True)
                x = x + d[:, 0].reshape(shape).to(x.dtype)
                y = y + d[:, 1].reshape(shape).to(y.dtype)
        return x, y

    def _mesh_grid(self, rows: np.ndarray, device) -> torch.Tensor:
        """Normalised source coordinates of every output pixel of ``rows`` (grid_sample,
        align_corners=False): n x H x W x 2. Separable maps stay 1-D until they meet a
        step that mixes the axes."""
        height, width = self.size_out
        n = len(rows)
        xs = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, width)
        ys = torch.arange(height, dtype=torch.float32, device=device).view(1, height, 1)
        x, y = self._backward(rows, xs.expand(n, 1, width), ys.expand(n, height, 1), device)
        src_h, src_w = self.size_src
        grid = torch.empty((n, height, width, 2), dtype=torch.float32, device=device)
        grid[..., 0] = x * (2.0 / src_w) + (1.0 / src_w - 1)
        grid[..., 1] = y * (2.0 / src_h) + (1.0 / src_h - 1)
        return grid

    def _mesh_points(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Refine the forward map of points ``q`` (N x M x 2, source pixels) for the rows
        through a mesh: solve ``backward(o) = q`` from the estimate ``p`` by steps with the
        inverse of the affine part (a contraction for smooth maps)."""
        rows = np.flatnonzero(self.has_mesh)
        index = torch.as_tensor(rows)
        target = q.index_select(0, index)
        o = p.index_select(0, index).clone()
        linear = torch.from_numpy(invert(self.affine[rows])[:, :2, :2])
        for _ in range(60):
            bx, by = self._backward(rows, o[..., 0].unsqueeze(1), o[..., 1].unsqueeze(1),
                                    torch.device("cpu"), torch.float64)
            error = target - torch.stack([bx[:, 0], by[:, 0]], -1)
            o = o + torch.einsum("nij,nmj->nmi", linear, error)
            if float(error.abs().max()) < 1e-6:
                break
        out = p.clone()
        out[index] = o
        return out

    # -- images and masks
    def images(self, x: torch.Tensor, *, fill: str = "constant", fill_value: float = 0.0,
               interpolation: str = "bilinear", keep_float: bool = False) -> torch.Tensor:
        """Resample an image batch ``N x C x H x W`` through the warp (dtype kept unless
        ``keep_float``)."""
        return self._resample(x, fill=fill, fill_value=fill_value, mode=interpolation,
                              keep_float=keep_float)

    def masks(self, m: torch.Tensor, *, fill: str = "constant", fill_value: float = 0) -> torch.Tensor:
        return self._resample(m, fill=fill, fill_value=fill_value, mode="nearest",
                              keep_float=False)

    def _resample(self, x, *, fill, fill_value, mode, keep_float):
        # threads from the free cores, the caller's count as a ceiling (smartset._threads):
        # a 2-thread grid_sample on a core another process holds runs 10-20x slower
        with capped_threads("augment"):
            return self._resample_threads(x, fill=fill, fill_value=fill_value, mode=mode,
                                          keep_float=keep_float)

    def _resample_threads(self, x, *, fill, fill_value, mode, keep_float):
        n, channels = x.shape[:2]
        height, width = self.size_out
        work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        out_dtype = work if keep_float else x.dtype
        paths = self._paths()
        rows = _Rows(paths["identity"], x.device) if len(paths["identity"]) else None
        if rows is not None and rows.slice is None and x.dtype == out_dtype:
            # scattered rows kept: one copy of the batch beats a gather and a scatter (the
            # other rows are overwritten below)
            out = x.clone(memory_format=torch.contiguous_format)
        else:
            out = torch.empty((n, channels, height, width), dtype=out_dtype, device=x.device)
            if rows is not None:
                rows.put(out, rows.take(x).to(out_dtype))
        if len(paths["integer"]):
            rows = _Rows(paths["integer"], x.device)
            rows.put(out, self._gather(rows.take(x), paths["integer"], fill,
                                       fill_value).to(out_dtype))
        threads = torch.get_num_threads()  # grid_sample splits a chunk's images over threads
        per_chunk = max(1, _CHUNK_PIXELS // max(1, height * width))
        per_chunk = max(threads, per_chunk // threads * threads)
        # lattices are small: made for blocks of several chunks, then upsampled per chunk
        per_block = per_chunk * max(1, _LATTICE_BLOCK // per_chunk)
        opencv = _opencv.usable(x, mode=mode, keep_float=keep_float)
        for path in ("resize", "affine", "field", "mesh"):
            rows_all = paths[path]
            if not len(rows_all):
                continue
            if opencv and height * width >= _OPENCV_MIN_PIXELS.get(path, 1 << 62):
                self._opencv_rows(path, rows_all, x, out, fill, fill_value, threads)
                continue
            block_start, lattice = -1, None
            for start in range(0, len(rows_all), per_chunk):
                rows = _Rows(rows_all[start:start + per_chunk], x.device)
                if path == "field":
                    if start >= block_start + per_block or lattice is None:
                        block_start = start
                        lattice = self._normalized_lattice(
                            rows_all[start:start + per_block], x.device)
                    grid = lattice[start - block_start:start - block_start + per_chunk]
                    if grid.shape[-2:] != (height, width):
                        grid = F.interpolate(grid, size=(height, width), mode="bilinear",
                                             align_corners=True)
                    grid = grid.permute(0, 2, 3, 1)
                elif path == "mesh":
                    grid = self._mesh_grid(rows.array, x.device)
                else:
                    grid = self._affine_grid(rows.array, x.device)
                    if path == "resize":
                        grid = self._clamp_to_boxes(grid, rows.array)
                sampled = _grid_sample(rows.take(x).to(work), grid.to(work), mode=mode,
                                       fill=fill, fill_value=float(fill_value))
                if keep_float or x.dtype.is_floating_point:
                    rows.put(out, sampled)
                elif rows.slice is not None and x.dtype == torch.uint8:
                    _round_into(out[rows.slice], sampled)
                else:
                    rows.put(out, _cast(sampled, x.dtype))
        return out

    def _opencv_rows(self, path: str, rows: np.ndarray, x: torch.Tensor, out: torch.Tensor,
                     fill: str, fill_value, threads: int) -> None:
        """``uint8`` CPU rows of ``path`` through OpenCV (see :mod:`._opencv_warp`)."""
        if path == "resize":
            _opencv.resize_rows(x, out, rows, self.crop_boxes()[rows], threads)
        elif path == "affine":
            _opencv.matrix_rows(x, out, rows, self.affine[rows], fill, fill_value, threads)
        elif path == "field":
            self._opencv_field_rows(rows, x, out, fill, fill_value, threads)
        else:
            height, width = self.size_out

            if len(self.ops) == 1 and hasattr(self.ops[0][1].mesh, "opencv_maps"):
                _opencv.remap_rows(x, out, rows, None, fill, fill_value, threads,
                                   maps=self.ops[0][1].mesh.opencv_maps)
                return

            def points(part):  # source pixels of the output pixels: x and y apart, each
                # n x 1 x W or n x H x 1 while the map stays separable, else n x H x W
                xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)
                ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
                n = len(part)
                return self._backward(part, xs.expand(n, 1, width), ys.expand(n, height, 1),
                                      x.device)
            _opencv.remap_rows(x, out, rows, points, fill, fill_value, threads)

    def _opencv_field_rows(self, rows: np.ndarray, x: torch.Tensor, out: torch.Tensor,
                           fill: str, fill_value, threads: int) -> None:
        """``uint8`` CPU rows of the field path through ``cv2.remap``: the same map as the
        float path (the lattice of :meth:`lattice`, upsampled bilinearly with
        ``align_corners=True``), built in source pixels (OpenCV's absolute convention,
        pixel centres at integers) rather than grid_sample's normalised coordinates, for
        blocks of rows, then converted to fixed point per image. Reading the field at every
        pixel's own point (``_backward``, the mesh path) is a different map: bicubic between
        nodes, and, for a field followed by shifts, a field not laid on the output lattice."""
        height, width = self.size_out
        xs, ys = self._output_lattice(torch.device("cpu"))
        if (str(torch.device("cpu")), False) not in self._lattice and \
                self._single_field_on_nodes(len(ys), len(xs)) is not None:
            # one field on the output lattice: its coarse nodes straight to every pixel
            coarse, affine, k = self._coarse_field(False)  # kept, before the pool
            layout = field_layout(*self.ops[k][1].size_in, float(self.ops[k][1].sigma))

            def points(part):  # n x H x W source x and y (views of one n x 2 x H x W map)
                index = torch.as_tensor(part)
                mine = coarse if len(part) == self.n else coarse.index_select(0, index)
                full = full_resolution_map(mine, affine[part], (height, width),
                                           (layout.refine_y, layout.refine_x))
                return full[:, 0], full[:, 1]
            _opencv.remap_rows(x, out, rows, points, fill, fill_value, threads,
                               separable=False, fixed=False)
            return
        if threads > 1:  # caches for every row, in this thread, before the pool
            self._pixel_lattice(rows[:1])

        def points(part):  # n x H x W source x and y (views of one n x 2 x H x W map)
            lat = self._pixel_lattice(part)
            if lat.shape[-2:] != (height, width):
                lat = F.interpolate(lat, size=(height, width), mode="bilinear",
                                    align_corners=True)
            return lat[:, 0], lat[:, 1]
        _opencv.remap_rows(x, out, rows, points, fill, fill_value, threads, separable=False,
                           fixed=False)

    def _pixel_lattice(self, rows: np.ndarray) -> torch.Tensor:
        """The lattice of ``rows`` in source pixels (CPU float32, n x 2 x h x w)."""
        return self._rows_lattice(rows, torch.device("cpu"), False)

    def _clamp_to_boxes(self, grid: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """A crop's sampling grid (normalised, n x H x W x 2) held inside its pixel box."""
        src_h, src_w = self.size_src
        boxes = self.crop_boxes()[rows].astype(np.float64)
        low = np.stack([boxes[:, 0] * (2.0 / src_w) + (1.0 / src_w - 1),
                        boxes[:, 1] * (2.0 / src_h) + (1.0 / src_h - 1)], 1)
        high = np.stack([(boxes[:, 0] + boxes[:, 2] - 1) * (2.0 / src_w) + (1.0 / src_w - 1),
                         (boxes[:, 1] + boxes[:, 3] - 1) * (2.0 / src_h) + (1.0 / src_h - 1)], 1)
        low = torch.from_numpy(low.astype(np.float32)).to(grid.device).view(-1, 1, 1, 2)
        high = torch.from_numpy(high.astype(np.float32)).to(grid.device).view(-1, 1, 1, 2)
        return torch.maximum(torch.minimum(grid, high), low)

    def _gather(self, x: torch.Tensor, rows: np.ndarray, fill: str, fill_value) -> torch.Tensor:
        """Exact resampling for maps sending integer pixels to integer pixels."""
        n, channels, src_h, src_w = x.shape
        height, width = self.size_out
        b = np.round(self.affine[rows]).astype(np.int64)
        b = torch.from_numpy(b).to(x.device)
        xs = torch.arange(width, device=x.device).view(1, 1, width)
        ys = torch.arange(height, device=x.device).view(1, height, 1)
        sx = b[:, 0, 0].view(-1, 1, 1) * xs + b[:, 0, 1].view(-1, 1, 1) * ys + b[:, 0, 2].view(-1, 1, 1)
        sy = b[:, 1, 0].view(-1, 1, 1) * xs + b[:, 1, 1].view(-1, 1, 1) * ys + b[:, 1, 2].view(-1, 1, 1)
        outside = (sx < 0) | (sx >= src_w) | (sy < 0) | (sy >= src_h)
        sx, sy = _fold_index(sx, src_w, fill), _fold_index(sy, src_h, fill)
        index = (sy * src_w + sx).view(n, 1, height * width).expand(n, channels, height * width)
        out = x.reshape(n, channels, src_h * src_w).gather(2, index).view(n, channels, height, width)
        if fill == "constant" and bool(outside.any()):
            value = torch.tensor(fill_value, dtype=torch.float64)
            if not x.is_floating_point():
                info = torch.iinfo(x.dtype) if x.dtype != torch.bool else None
                value = value.round().clamp(info.min, info.max) if info else value != 0
            out = out.masked_fill(outside.unsqueeze(1), value.to(x.dtype).item())
        return out

    # -- points and boxes
    def points(self, points: list[torch.Tensor]) -> list[torch.Tensor]:
        """Forward-map points (per sample ``M_i x 2``, pixel-centre x, y) through the warp."""
        counts = [len(p) for p in points]
        if not any(counts):
            return [p.clone() for p in points]
        device = points[0].device
        width = max(counts)
        q = torch.zeros((self.n, width, 2), dtype=torch.float64)
        for i, p in enumerate(points):
            q[i, :len(p)] = p.detach().to("cpu", torch.float64)
        inverse = torch.from_numpy(invert(self.affine))
        p = _apply_matrix_points(inverse, q)
        if self.has_field.any():
            lat = self.lattice(torch.device("cpu")).to(torch.float64)
            height, width_out = self.size_out
            h, w = lat.shape[-2:]
            ys = torch.linspace(0, height - 1, h, dtype=torch.float64)
            xs = torch.linspace(0, width_out - 1, w, dtype=torch.float64)
            ax, ay = _apply_matrix(torch.from_numpy(self.affine), xs.view(1, 1, w).expand(self.n, h, w),
                                   ys.view(1, h, 1).expand(self.n, h, w))
            residual = lat - torch.stack([ax, ay], 1)  # the fields' part of the map
            for _ in range(40):  # p = A^-1 (x - r(p)): a contraction for smooth fields
                grid = torch.stack([_corner_normalized(p[..., 0], width_out),
                                    _corner_normalized(p[..., 1], height)], -1).unsqueeze(1)
                r = F.grid_sample(residual, grid, mode="bilinear", padding_mode="border",
                                  align_corners=True)[:, :, 0].permute(0, 2, 1)
                p = _apply_matrix_points(inverse, q - r)
        if self.has_mesh.any():
            p = self._mesh_points(q, p)
        out = [p[i, :c].to(device=device, dtype=points[i].dtype if points[i].is_floating_point()
                            else torch.float32) for i, c in enumerate(counts)]
        return out

    def boxes(self, boxes: list[torch.Tensor], *, min_visibility: float = 0.0,
              min_area: float = 1.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Move xyxy boxes (pixel edges): the bounding box of each moved box outline,
        clipped to the output canvas. Returns the boxes kept and the mask of kept ones."""
        per_edge = 16 if self.has_field.any() or self.has_mesh.any() or np.abs(self.affine[:, 2, :2]).max() > 0 else 2
        t = torch.linspace(0, 1, per_edge, dtype=torch.float64)
        outlines = []
        for b in boxes:
            b = b.detach().to("cpu", torch.float64) - 0.5  # edges -> centre coordinates
            x1, y1, x2, y2 = (b[:, k:k + 1] for k in range(4))
            xs = torch.cat([x1 + (x2 - x1) * t, x2.expand(-1, per_edge),
                            x2 + (x1 - x2) * t, x1.expand(-1, per_edge)], 1)
            ys = torch.cat([y1.expand(-1, per_edge), y1 + (y2 - y1) * t,
                            y2.expand(-1, per_edge), y2 + (y1 - y2) * t], 1)
            outlines.append(torch.stack([xs, ys], -1).reshape(-1, 2))
        moved = self.points(outlines)
        height, width = self.size_out
        kept, masks = [], []
        for b, m in zip(boxes, moved):
            m = m.to(torch.float64).view(len(b), 4 * per_edge, 2) + 0.5  # 0 boxes: 0 rows
            raw = torch.stack([m[..., 0].min(1).values, m[..., 1].min(1).values,
                               m[..., 0].max(1).values, m[..., 1].max(1).values], 1)
            clipped = torch.stack([raw[:, 0].clamp(0, width), raw[:, 1].clamp(0, height),
                                   raw[:, 2].clamp(0, width), raw[:, 3].clamp(0, height)], 1)
            area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
            full = ((raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])).clamp_min(1e-12)
            keep = (area >= min_area) & (area / full >= min_visibility) & (area > 0)
            kept.append(clipped[keep].to(b.dtype if b.is_floating_point() else torch.float32)
                        .to(b.device))
            masks.append(keep.to(b.device))
        return kept, masks


class _Rows:
    """A set of batch rows: a slice when contiguous (views, no copies), else an index."""

    def __init__(self, rows: np.ndarray, device):
        self.array = rows
        contiguous = len(rows) > 0 and rows[-1] - rows[0] == len(rows) - 1
        self.slice = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else None
        self.index = None if contiguous else torch.as_tensor(rows, device=device)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.slice] if self.slice is not None else x.index_select(0, self.index)

    def put(self, out: torch.Tensor, values: torch.Tensor) -> None:
        if self.slice is not None:
            out[self.slice] = values
        else:
            out[self.index] = values


def _apply_matrix(m: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    def row(i):
        return (m[:, i, 0].view(-1, 1, 1) * x + m[:, i, 1].view(-1, 1, 1) * y
                + m[:, i, 2].view(-1, 1, 1))
    nx, ny = row(0), row(1)
    if bool((m[:, 2, :2] != 0).any()):
        w = row(2)
        nx, ny = nx / w, ny / w
    return nx, ny


def _apply_matrix_points(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    x, y = _apply_matrix(m, p[..., 0].unsqueeze(1), p[..., 1].unsqueeze(1))
    return torch.stack([x[:, 0], y[:, 0]], -1)


def _corner_normalized(v: torch.Tensor, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel coordinates to grid_sample's align_corners=True range (first pixel -1, last +1)."""
    scale = 2.0 / (size - 1) if size > 1 else 0.0
    result = torch.mul(v, scale, out=out) if out is not None else v * scale
    return result.sub_(1.0 if size > 1 else 0.0)


def _fold_index(i: torch.Tensor, size: int, fill: str) -> torch.Tensor:
    if fill == "wrap":
        return torch.remainder(i, size)
    if fill == "reflect":  # half-sample symmetric: d c b a | a b c d | d c b a
        i = torch.remainder(i, 2 * size)
        return torch.where(i >= size, 2 * size - 1 - i, i)
    return i.clamp(0, size - 1)  # nearest; constant pixels are overwritten afterwards


def _grid_sample(x: torch.Tensor, grid: torch.Tensor, *, mode: str, fill: str,
                 fill_value: float) -> torch.Tensor:
    if fill == "wrap":
        src_h, src_w = x.shape[-2:]
        pad = 2
        px = torch.remainder(((grid[..., 0] + 1) * src_w - 1) / 2, src_w) + pad
        py = torch.remainder(((grid[..., 1] + 1) * src_h - 1) / 2, src_h) + pad
        grid = torch.stack([(2 * px + 1) / (src_w + 2 * pad) - 1,
                            (2 * py + 1) / (src_h + 2 * pad) - 1], -1)
        rows = torch.remainder(torch.arange(-pad, src_h + pad, device=x.device), src_h)
        cols = torch.remainder(torch.arange(-pad, src_w + pad, device=x.device), src_w)
        x = x.index_select(2, rows).index_select(3, cols)  # wrap-padded, any size
    if fill == "constant" and fill_value != 0:
        return F.grid_sample(x - fill_value, grid, mode=mode, padding_mode="zeros",
                             align_corners=False) + fill_value
    return F.grid_sample(x, grid, mode=mode, padding_mode=_PADDING[fill], align_corners=False)


def _round_into(out: torch.Tensor, x: torch.Tensor) -> None:
    """Write float ``x`` into integer ``out``: clamped to the range, rounded half up (the
    float is changed in place)."""
    info = torch.iinfo(out.dtype)
    out.copy_(x.add_(0.5).clamp_(info.min, info.max + 0.49))  # the copy truncates


def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Back to the input dtype: integers rounded half up (as :func:`_round_into`, so every
    path rounds alike) and clamped to their range."""
    if dtype.is_floating_point:
        return x.to(dtype)
    if dtype == torch.bool:
        return x > 0.5
    info = torch.iinfo(dtype)
    if dtype == torch.uint8:
        return x.add(0.5).clamp_(info.min, info.max + 0.49).to(dtype)
    return torch.floor(x + 0.5).clamp_(info.min, info.max).to(dtype)
