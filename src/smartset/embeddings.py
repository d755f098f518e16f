"""One embedding per image from a pretrained backbone: batched, on any engine, cached.

A shared layer below the stages: the audit (near-duplicate candidates, outliers, far from
own class), clean (kNN posterior, merges, ambiguity), review (nearest neighbours) and learn
(kNN and linear-probe baselines, out-of-fold heads) all read embeddings through here.

- :func:`embed_images` embeds decoded arrays in memory.
- :func:`embed_batch` is the engine's batch function over file paths (``{"path": [...]}``
  -> ``{"embedding": [...], "error": [...]}``): JPEGs decoded in draft mode (DCT-domain
  downscaling to at least the input size), EXIF-rotated, resized, batched through the
  network under ``inference_mode`` in channels-last layout. The network is loaded once per
  process.
- :func:`embed` embeds a workspace version; vectors are cached by content fingerprint
  (sha256) + backbone + input size under ``cache/embeddings/``, so a re-run embeds only
  new or changed images, and every stage reading the same backbone shares one pass.

Precision: on a CPU with native bfloat16 (AVX-512 BF16 / AMX, as ``torch`` reports it),
the network runs in bfloat16 (weights and activations): twice the images per second, and on the 741
photos the vectors keep a cosine of at least 0.992 (median 0.999) with float32's and the
same out-of-fold accuracy (1.000). Elsewhere, and on CUDA, float32.
``SMARTSET_EMBED_PRECISION=float32`` (or ``bfloat16``) overrides; the precision is part of
the cache key, so vectors of two precisions never mix.

The cache is a folder of ``.npz`` shards (fingerprints + float16 vectors), each written
atomically; a killed run keeps the shards it finished.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartset._memory import reuse_freed_blocks
from smartset._progress import progress_bar
from smartset._threads import capped_threads
from smartset.backbones import DEFAULT_BACKBONE, backbone_spec
from smartset.engine import Batch, batches_of, get_engine
from smartset.errors import EmptyDataError, ImageDecodeError

__all__ = ["Embeddings", "embed", "embed_images", "embed_batch", "embed_paths", "precision",
           "EMBED_VERSION", "read_embeddings", "decode_for_backbone", "cache_status",
           "cache_signature"]

EMBED_VERSION = 2  # bump when decoding or pooling changes: old caches are never served
_SHARD = 512  # vectors per cache shard

_models: dict = {}
_PRECISIONS = ("auto", "float32", "bfloat16")


def precision() -> str:
    """``"bfloat16"`` or ``"float32"``: what the embedding network runs in on this machine
    (see the module docstring; ``SMARTSET_EMBED_PRECISION`` overrides ``auto``)."""
    import os

    from smartset._torch import require_torch

    wanted = os.environ.get("SMARTSET_EMBED_PRECISION", "auto").strip().lower() or "auto"
    if wanted not in _PRECISIONS:
        raise ValueError(f"SMARTSET_EMBED_PRECISION must be one of {', '.join(_PRECISIONS)}, "
                         f"got {wanted!r}")
    if wanted != "auto":
        return wanted
    torch = require_torch("smartset.embeddings")
    if torch.cuda.is_available():
        return "float32"
    try:
        return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    except (AttributeError, RuntimeError):
        return "float32"
_models_lock = threading.Lock()
_FORWARD_CHUNK = 8


@dataclass
class Embeddings:
    """``ids`` (object array), ``vectors`` float32 ``(n, d)``, L2-normalised rows; the
    ``backbone`` and input ``size`` they came from; ``missing``: ids that could not be
    decoded (with the reason)."""

    ids: np.ndarray
    vectors: np.ndarray
    backbone: str
    size: int
    missing: list[tuple[str, str]]
    precision: str = "float32"

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> str:
        return f"{self.backbone} ({self.size} px, {self.vectors.shape[1]}-d, {self.precision})"


def _network(backbone: str, device: str):
    key = (backbone, device, precision() if device == "cpu" else "float32")
    with _models_lock:
        if key not in _models:
            from smartset._torch import one_thread_in_worker_processes, require_torch
            from smartset.backbones import load_backbone

            torch = require_torch("smartset.embeddings")
            one_thread_in_worker_processes(torch)
            network, spec = load_backbone(backbone)
            network = network.eval()
            if hasattr(network, "fused_for_inference"):  # batch norm folded into the convs
                network = network.fused_for_inference()
            # channels-last: oneDNN's fast layout for convolutions (about 1.3x here)
            network = network.to(device).to(memory_format=torch.channels_last)
            if key[2] == "bfloat16":
                # weights in bfloat16 rather than autocast: no cast of every weight on every
                # batch (10% of the pass at 224 px, 20% at 112); the vectors keep a cosine
                # of 0.9999 with autocast's
                network = network.to(torch.bfloat16)
            _models[key] = (network, spec)
        return _models[key]


def _forward(network, spec, images: np.ndarray, device: str) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` -> L2-normalised float32 ``(N, d)``."""
    from smartset._torch import require_torch

    torch = require_torch("smartset.embeddings")
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        if next(network.parameters()).dtype == torch.bfloat16:
            x = x.to(torch.bfloat16)
        # on CPU the network runs _FORWARD_CHUNK images at a time: its activations then stay
        # in cache between layers (EfficientNet-Lite0, 224 px, bfloat16, 1 thread: 8.9 ms an
        # image in chunks of 8, 10.9 ms in one pass of 32)
        parts = x.split(_FORWARD_CHUNK) if device == "cpu" and len(x) else [x]
        features = torch.cat([network.forward_features(part).float() for part in parts])
        features = torch.nn.functional.normalize(features, dim=1)
    return features.cpu().numpy().astype(np.float32)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    elif image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    shrink = h > size or w > size
    return cv2.resize(np.ascontiguousarray(image), (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def decode_for_backbone(path: str, size: int) -> np.ndarray:
    """The image at ``path`` as uint8 RGB ``(size, size, 3)``: JPEGs decoded at reduced
    scale (never below ``size``), EXIF orientation applied, stretched to a square."""
    from smartset.imageio import decode

    return _resize(np.asarray(decode(path, mode="RGB", draft=size)), size)


def embed_images(images, *, backbone: str = DEFAULT_BACKBONE, batch_size: int = 32,
                 device: str | None = None, progress: bool | None = None) -> np.ndarray:
    """Embeddings of decoded images.

    ``images``: uint8 ``(N, H, W)``, ``(N, H, W, C)`` or a list of such arrays (sizes may
    differ); each is resized to the backbone's input size (gray repeated to RGB). Returns
    L2-normalised float32 ``(N, d)``.
    """
    spec = backbone_spec(backbone)
    device = device or _default_device()
    network, spec = _network(spec.name, device)
    n = len(images)
    out = np.zeros((n, spec.feature_dim or network.num_features), dtype=np.float32)
    with progress_bar(n, f"embedding with {spec.name}", enabled=progress) as advance, \
            reuse_freed_blocks():
        for first in range(0, n, batch_size):
            block = np.stack([_resize(np.asarray(images[i]), spec.size)
                              for i in range(first, min(n, first + batch_size))])
            out[first:first + len(block)] = _forward(network, spec, block, device)
            advance(len(block))
    return out


def _input_size(spec, size: int | None) -> int:
    """``size``, or the backbone's own when None; anything but a side of 32 to 1024
    pixels is one clear error."""
    if size is None:
        return spec.size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 32 <= size <= 1024:
        raise ValueError(f"the backbone's input size must be a whole number of pixels from 32 "
                         f"to 1024, got {size!r} (default: {spec.name}'s own {spec.size})")
    return int(size)


def _default_device() -> str:
    from smartset._torch import require_torch

    return "cuda" if require_torch("smartset.embeddings").cuda.is_available() else "cpu"


def embed_batch(batch: Batch, *, backbone: str = DEFAULT_BACKBONE, device: str = "cpu",
                size: int | None = None) -> Batch:
    """Engine batch function: ``{"path": [...]}`` -> ``{"embedding": [float32 (d,) or
    None], "error": [None or reason]}``. Undecodable files get ``None`` and their reason.
    ``size``: the input side (default: the backbone's own, ``spec.size``)."""
    network, spec = _network(backbone_spec(backbone).name, device)
    side = _input_size(spec, size)
    decoded, errors, rows = [], [], []
    for row, path in enumerate(batch["path"]):
        try:
            decoded.append(decode_for_backbone(path, side))
            rows.append(row)
            errors.append(None)
        except ImageDecodeError as error:
            errors.append(error.reason)
    embeddings: list = [None] * len(batch["path"])
    if decoded:
        with reuse_freed_blocks():  # one batch's activations, reused op after op
            vectors = _forward(network, spec, np.stack(decoded), device)
        for row, vector in zip(rows, vectors):
            embeddings[row] = vector
    return {"embedding": embeddings, "error": errors}


def embed_paths(paths, *, backbone: str = DEFAULT_BACKBONE, engine=None,
                batch_size: int = 32, progress: bool | None = None, size: int | None = None
                ) -> tuple[np.ndarray, list[str | None]]:
    """Embeddings of image files: ``(vectors float32 (N, d), errors)``; a row whose file
    could not be decoded is zeros and its error names the reason. ``size``: the input
    side (default: the backbone's own)."""
    spec = backbone_spec(backbone)
    size = _input_size(spec, size)
    paths = [str(p) for p in paths]
    runner = get_engine(engine if engine is not None else "serial")
    device = _default_device() if runner.name == "serial" else "cpu"
    vectors, errors = None, []
    # In this process: activations reused batch after batch, and torch's threads only on
    # the cores other processes leave free (a thread on a busy core makes every layer's
    # barrier wait for it: smartset._threads; torch is imported first, so that it is set).
    from smartset._torch import require_torch

    require_torch("smartset.embeddings")
    with progress_bar(len(paths), f"embedding with {spec.name}", enabled=progress) as advance, \
            reuse_freed_blocks(), capped_threads():
        results = runner.map_batches(embed_batch, batches_of({"path": paths}, batch_size),
                                     fn_kwargs={"backbone": spec.name, "device": device,
                                                "size": size})
        row = 0
        for result in results:
            for vector, error in zip(result["embedding"], result["error"]):
                if vectors is None and vector is not None:
                    vectors = np.zeros((len(paths), len(vector)), dtype=np.float32)
                if vector is not None:
                    vectors[row] = vector
                errors.append(error)
                row += 1
            advance(len(result["error"]))
    if vectors is None:
        vectors = np.zeros((len(paths), 0), dtype=np.float32)
    return vectors, errors


# -- the workspace cache ------------------------------------------------------------------
def _cache_folder(ws, backbone: str, size: int) -> Path:
    mode = precision()
    key = f"{EMBED_VERSION}|{backbone}|{size}" + ("" if mode == "float32" else f"|{mode}")
    safe = hashlib.sha256(key.encode()).hexdigest()[:16]
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in backbone)[:40]
    return ws.cache_dir / "embeddings" / f"{label}-{size}-{safe}"


def _read_cache(folder: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    if not folder.is_dir():
        return found
    for shard in sorted(folder.glob("shard-*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as stored:
                for key, vector in zip(stored["keys"].tolist(), stored["vectors"]):
                    found[key] = vector
        except (OSError, ValueError, KeyError):  # a damaged shard is embedded again
            continue
    return found


def _write_shard(folder: Path, keys: list[str], vectors: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256("".join(keys).encode()).hexdigest()[:20]
    path = folder / f"shard-{name}.npz"
    temporary = folder / f".shard-{name}.{os.getpid()}.tmp.npz"
    np.savez(temporary, keys=np.asarray(keys), vectors=vectors.astype(np.float16))
    os.replace(temporary, path)


def embed(ws, version: str | None = None, *, backbone: str = DEFAULT_BACKBONE,
          sample_ids=None, engine=None, batch_size: int = 32,
          progress: bool | None = None, size: int | None = None) -> Embeddings:
    """One embedding per sample of ``version`` (default: the live catalog).

    Cached by content fingerprint + backbone + input size: only images not embedded before
    are decoded. ``engine``: ``serial`` (default: this process, CUDA when present),
    ``local`` (a process pool) or ``ray``; every engine gives the same vectors to float
    rounding. ``sample_ids`` restricts to those samples. Samples whose file cannot be
    decoded are left out and listed in ``missing``. ``size``: the input side (default:
    the backbone's own, ``spec.size``; the audit reads a smaller one, see
    :data:`smartset.audit.features.AUDIT_BACKBONE_SIZE`); vectors of each size are cached
    apart.
    """
    spec = backbone_spec(backbone)
    size = _input_size(spec, size)
    frame = ws.samples(version)
    if sample_ids is not None:
        wanted = set(map(str, sample_ids))
        frame = frame[frame["id"].astype(str).isin(wanted)]
    frame = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    if frame.empty:
        raise EmptyDataError("No images to embed: ingest some first ('smartset ingest').")
    folder = _cache_folder(ws, spec.name, size)
    cached = _read_cache(folder)
    keys = frame["sha256"].astype(str).tolist()
    todo = sorted({k: p for k, p in zip(keys, frame["path"].tolist()) if k not in cached}.items())
    failed: dict[str, str] = {}
    if todo:
        with progress_bar(len(todo), f"embedding {len(todo)} images with {spec.name}",
                          enabled=progress) as advance:
            for first in range(0, len(todo), _SHARD):
                part = todo[first:first + _SHARD]
                vectors, errors = embed_paths([p for _, p in part], backbone=spec.name,
                                              engine=engine, batch_size=batch_size,
                                              progress=False, size=size)
                good = [i for i, e in enumerate(errors) if e is None]
                for i, error in enumerate(errors):
                    if error is not None:
                        failed[part[i][0]] = error
                if good:
                    shard_keys = [part[i][0] for i in good]
                    _write_shard(folder, shard_keys, vectors[good])
                    cached.update(zip(shard_keys, vectors[good].astype(np.float16)))
                advance(len(part))
    keep = [i for i, k in enumerate(keys) if k in cached]
    ids = frame["id"].to_numpy(dtype=object)
    missing = [(str(ids[i]), failed.get(keys[i], "could not be decoded"))
               for i in range(len(keys)) if keys[i] not in cached]
    if not keep:
        raise EmptyDataError("None of the images could be decoded: see 'smartset audit'.")
    vectors = np.stack([cached[keys[i]] for i in keep]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return Embeddings(ids=ids[keep], vectors=vectors, backbone=spec.name, size=size,
                      missing=missing, precision=precision())


def cache_status(ws, version: str | None = None, *, backbone: str = DEFAULT_BACKBONE,
                 sample_ids=None) -> dict:
    """How many samples of ``version`` have cached embeddings of ``backbone`` (computes
    nothing): ``{"n", "cached", "folder", "backbone", "size"}``."""
    spec = backbone_spec(backbone)
    frame = ws.samples(version)
    if sample_ids is not None:
        frame = frame[frame["id"].astype(str).isin(set(map(str, sample_ids)))]
    folder = _cache_folder(ws, spec.name, spec.size)
    cached = _read_cache(folder)
    keys = frame["sha256"].astype(str).tolist()
    return {"n": len(keys), "cached": sum(k in cached for k in keys), "folder": folder,
            "backbone": spec.name, "size": spec.size}


def cache_signature(ws, backbone: str = DEFAULT_BACKBONE) -> tuple[str, ...]:
    """Changes whenever embeddings of ``backbone`` are added to the workspace's cache (the
    names of its shards): for readers that keep vectors in memory."""
    spec = backbone_spec(backbone)
    folder = _cache_folder(ws, spec.name, spec.size)
    return tuple(sorted(p.name for p in folder.glob("shard-*.npz"))) if folder.is_dir() else ()


def read_embeddings(ws, version: str | None = None, *, backbone: str = DEFAULT_BACKBONE,
                    sample_ids=None, include_excluded: bool = False) -> Embeddings | None:
    """The cached embeddings of ``version`` without computing any: None when some sample
    has none yet (run :func:`embed` or ``smartset embed``). ``include_excluded``: in the
    live catalog, also samples marked ``exclude`` (the review app shows their neighbours)."""
    spec = backbone_spec(backbone)
    frame = ws.samples(version, include_excluded=include_excluded)
    if sample_ids is not None:
        frame = frame[frame["id"].astype(str).isin(set(map(str, sample_ids)))]
    cached = _read_cache(_cache_folder(ws, spec.name, spec.size))
    keys = frame["sha256"].astype(str).tolist()
    if not keys or any(k not in cached for k in keys):
        return None
    vectors = np.stack([cached[k] for k in keys]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return Embeddings(ids=frame["id"].to_numpy(dtype=object), vectors=vectors,
                      backbone=spec.name, size=spec.size, missing=[], precision=precision())
