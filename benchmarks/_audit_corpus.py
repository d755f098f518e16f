"""Corpora with known issues for ``benchmarks/audit.py``: injected copies of real images.

Every corpus is written once, before any timing, as class folders ``<label>/<name>``, with
its ground truth returned as a DataFrame:

- ``relpath``: the file, relative to the corpus root; ``label``: its class folder;
- ``kind``: ``clean`` (an untouched byte copy of a real image), an injected per-image issue
  (``dark``, ``bright``, ``blurry``, ``low_information``, ``odd_aspect_ratio``, ``odd_size``,
  ``grayscale``), ``near_duplicate`` or ``exact_duplicate`` (a copy of a ``clean`` file);
- ``origin``: for a copy, the ``relpath`` of the clean file it copies; else empty;
- ``source``: the real image the file was made from; ``transform``: what was done to it.

Only real colour photos that repeat no other, even as a look-alike, are used (see
:func:`usable_photos`). Each per-image issue is injected into a different one, none of them
among the clean base photos, so a darkened photo is never also a near duplicate of a clean
one. The copies
(near and exact duplicates) are made from distinct clean base photos, which stay in the
corpus: a ground-truth pair is the original and its copy.

Run as a script, this module builds the photo corpus in a temporary folder (or in ``--out``,
its ground truth beside it as ``<out>.csv``) and prints what it wrote (``make bench`` runs
every ``benchmarks/*.py``, this one too); ``benchmarks/audit.py`` imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from _data import DEFAULT_DATA
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

#: per-image issue kinds injected into photos, in report order
PER_IMAGE_KINDS = ("dark", "bright", "blurry", "low_information", "odd_aspect_ratio",
                   "odd_size", "grayscale")
#: the four near-duplicate transforms the issue names, one per copy (``near_style="single"``)
NEAR_DUPLICATE_TRANSFORMS = ("jpeg_q40", "resize_0.8", "crop_5pct", "brightness_+10pct")
#: the protocol the goal was set on (issue 23): all four on every copy, the crop window at
#: a random position
COMBINED_TRANSFORM = "crop95_random+resize0.8+brightness+10%+jpeg_q40"
GROUND_TRUTH_COLUMNS = ["relpath", "label", "kind", "origin", "source", "transform"]

__all__ = ["PER_IMAGE_KINDS", "NEAR_DUPLICATE_TRANSFORMS", "COMBINED_TRANSFORM",
           "list_images", "build_photo_corpus", "build_mnist_corpus", "write_mnist_pngs",
           "write_mnist_augmented", "truth_pairs", "usable_photos", "combined_copy",
           "build_near_duplicate_corpus", "build_mnist_copies"]


# -- transforms: plain functions, PIL image (RGB) in, PIL image out --------------------------

def darken(image: Image.Image, factor: float) -> Image.Image:
    """Every pixel times ``factor`` (0.15-0.3 in the corpus): an underexposed photo."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(array * factor), 0, 255).astype(np.uint8))


def brighten(image: Image.Image, factor: float) -> Image.Image:
    """The mirror of :func:`darken`: ``255 - (255 - x) * factor``, a washed-out photo."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(255 - (255 - array) * factor), 0, 255)
                           .astype(np.uint8))


def blur(image: Image.Image, fraction: float) -> Image.Image:
    """Gaussian blur, radius ``fraction`` of the longer side (at least 2 pixels)."""
    radius = max(2.0, fraction * max(image.size))
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour whose channels differ by at least 40 levels: never grey."""
    while True:
        colour = rng.integers(30, 226, size=3)
        if np.ptp(colour) >= 40:
            return colour


def flatten(image: Image.Image, variant: str, rng: np.random.Generator) -> Image.Image:
    """Low information, in colour (so that it is not also grayscale): ``binary`` (the image
    thresholded at its median brightness, painted in two random colours) or ``flat`` (one
    random colour plus noise of +-2 levels per channel, like a blank frame)."""
    grey = np.asarray(image.convert("L"))
    if variant == "binary":
        dark, light = _colour(rng), _colour(rng)
        return Image.fromarray(np.where((grey > np.median(grey))[..., None], light, dark)
                               .astype(np.uint8))
    noise = rng.integers(-2, 3, size=(*grey.shape, 3))
    return Image.fromarray(np.clip(_colour(rng) + noise, 0, 255).astype(np.uint8))


def stretch(image: Image.Image, ratio: float) -> Image.Image:
    """Resize to aspect ratio ``ratio`` (width / height: 4 or 1/4), keeping the area."""
    width, height = image.size
    area = width * height
    new_width = max(1, round((area * ratio) ** 0.5))
    new_height = max(1, round(new_width / ratio))
    return image.convert("RGB").resize((new_width, new_height), Image.Resampling.BICUBIC)


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """Resize, keeping the aspect ratio, so that the longer side is ``long_side``."""
    width, height = image.size
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def to_grayscale_rgb(image: Image.Image) -> Image.Image:
    """Grey stored as RGB: three equal channels."""
    return image.convert("L").convert("RGB")


def near_duplicate(image: Image.Image, transform: str) -> tuple[Image.Image, dict]:
    """One of :data:`NEAR_DUPLICATE_TRANSFORMS`; returns the copy and JPEG save options."""
    rgb = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    width, height = rgb.size
    if transform == "jpeg_q40":
        return rgb, {"quality": 40}
    if transform == "resize_0.8":
        size = (max(1, round(width * 0.8)), max(1, round(height * 0.8)))
        return rgb.resize(size, Image.Resampling.LANCZOS), {"quality": 90}
    if transform == "crop_5pct":  # 5% of each dimension, 2.5% from each side
        dx, dy = round(width * 0.025), round(height * 0.025)
        return rgb.crop((dx, dy, width - dx, height - dy)), {"quality": 90}
    if transform == "brightness_+10pct":
        return ImageEnhance.Brightness(rgb).enhance(1.10), {"quality": 90}
    raise ValueError(f"unknown near-duplicate transform {transform!r}; "
                     f"expected one of {NEAR_DUPLICATE_TRANSFORMS}")


def combined_copy(image: Image.Image, rng: np.random.Generator, *, extra: str = ""
                  ) -> tuple[Image.Image, dict, str]:
    """All four edits on one copy (issue 23's protocol): a window of 95% of each side at a
    random position, resized x0.8, brightness +10%, saved as JPEG quality 40. Returns the
    copy, its save options and a description (the window's corner). ``extra``:
    ``"rotate5"`` first turns the image by 5 degrees either way (bicubic, the corners
    filled by the crop's edge), ``"flip"`` mirrors it left to right."""
    rgb = image.convert("RGB")
    note = ""
    if extra == "rotate5":
        angle = 5.0 if rng.random() < 0.5 else -5.0
        rgb = rgb.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
        note = f", rotated {angle:+.0f} deg"
    elif extra == "flip":
        rgb = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        note = ", mirrored"
    elif extra:
        raise ValueError(f"extra must be '', 'rotate5' or 'flip', got {extra!r}")
    width, height = rgb.size
    crop_w, crop_h = max(1, round(width * 0.95)), max(1, round(height * 0.95))
    x = int(rng.integers(0, width - crop_w + 1))
    y = int(rng.integers(0, height - crop_h + 1))
    copy = rgb.crop((x, y, x + crop_w, y + crop_h))
    copy = copy.resize((max(1, round(crop_w * 0.8)), max(1, round(crop_h * 0.8))),
                       Image.Resampling.LANCZOS)
    copy = ImageEnhance.Brightness(copy).enhance(1.10)
    return copy, {"quality": 40}, (f"95% window at ({x}, {y}) of {width}x{height}, x0.8, "
                                   f"+10%, q40{note}")


# -- photo corpus ---------------------------------------------------------------------------

def list_images(root: Path) -> list[Path]:
    return sorted(Path(folder) / name for folder, _, names in os.walk(root)
                  for name in names if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def _thumbnail_vector(image: Image.Image) -> np.ndarray:
    """A 32x32 grey thumbnail, zero mean, unit norm: for finding look-alike photos."""
    array = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX),
                       dtype=np.float32).ravel()
    array -= array.mean()
    norm = float(np.linalg.norm(array))
    return array / norm if norm else array


def usable_photos(root: Path, *, look_alike: float = 0.94) -> list[Path]:
    """The images under ``root`` that can serve as clean, distinct photos: leaves out
    grayscale ones (a grey mode, or three equal channels: a clean photo must not be
    grayscale, which is objective), and any whose bytes or pixels repeat an earlier one or
    whose 32x32 grey thumbnail correlates above ``look_alike`` with an earlier one's (the
    source data holds the same product shot at two sizes; the ground truth must not hold
    duplicates it does not know about). The thumbnail test belongs to neither tool scored."""
    seen, unique, vectors = set(), [], []
    for path in list_images(root):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "F") or (
                np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 1], rgb[..., 2]))
            vector = _thumbnail_vector(image)
        keys = {("bytes", hashlib.sha256(data).hexdigest()),
                ("pixels", hashlib.sha256(rgb.tobytes()).hexdigest())}
        alike = bool(vectors) and float(np.max(np.stack(vectors) @ vector)) > look_alike
        if not keys & seen and not grey and not alike:
            unique.append(path)
            vectors.append(vector)
        seen |= keys
    return unique


def _save(image: Image.Image, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        options.setdefault("compress_level", 1)  # lossless all the same; writes 5x faster
    image.save(path, **options)


def build_photo_corpus(photos: Path, out: Path, *, n_base: int = 300, per_kind: int = 30,
                       n_near: int = 100, n_exact: int = 20, seed: int = 0,
                       near_style: str = "combined") -> pd.DataFrame:
    """Write the injected photo corpus under ``out``; return its ground truth.

    ``n_base`` clean photos are byte copies of distinct real colour photos (kept as they
    are, not resized; see :func:`usable_photos`). Each of :data:`PER_IMAGE_KINDS` is
    injected into ``per_kind`` further photos (one issue per photo, written as lossless PNG,
    or JPEG quality 90 for huge odd sizes). ``n_near`` near duplicates (split equally over
    :data:`NEAR_DUPLICATE_TRANSFORMS`, one edit each, with ``near_style="single"``; by
    default all four on each copy, the crop at a random position: :func:`combined_copy`)
    and ``n_exact`` byte copies are made from distinct clean photos. ``seed`` fixes every
    draw.
    """
    rng = np.random.default_rng(seed)
    pool = usable_photos(photos)
    needed = n_base + per_kind * len(PER_IMAGE_KINDS)
    if needed > len(pool) or n_near + n_exact > n_base:
        raise ValueError(f"corpus needs {needed} distinct photos (have {len(pool)}) and "
                         f"n_near + n_exact <= n_base (got {n_near} + {n_exact} > {n_base})")
    order = rng.permutation(len(pool))
    base, rest = [pool[i] for i in order[:n_base]], [pool[i] for i in order[n_base:needed]]
    rows: list[dict] = []

    def record(relpath: str, kind: str, source: Path, transform: str = "",
               origin: str = "") -> None:
        rows.append({"relpath": relpath, "label": relpath.split("/")[0], "kind": kind,
                     "origin": origin, "source": str(source.relative_to(photos)),
                     "transform": transform})

    for index, source in enumerate(base):
        relpath = f"{source.parent.name}/clean_{index:04d}{source.suffix.lower()}"
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / relpath)
        record(relpath, "clean", source)

    for kind_index, kind in enumerate(PER_IMAGE_KINDS):
        for index, source in enumerate(rest[kind_index * per_kind:(kind_index + 1) * per_kind]):
            with Image.open(source) as opened:
                image = opened.convert("RGB")
            options, suffix = {}, ".png"
            if kind == "dark":
                factor = float(rng.uniform(0.15, 0.3))
                image, transform = darken(image, factor), f"x{factor:.2f}"
            elif kind == "bright":
                factor = float(rng.uniform(0.15, 0.3))
                image, transform = brighten(image, factor), f"255-(255-x)*{factor:.2f}"
            elif kind == "blurry":
                fraction = float(rng.uniform(0.02, 0.04))
                image = blur(image, fraction)
                transform = f"gaussian r={max(2.0, fraction * max(image.size)):.1f}px"
            elif kind == "low_information":
                variant = "binary" if index % 2 == 0 else "flat"
                image, transform = flatten(image, variant, rng), variant
            elif kind == "odd_aspect_ratio":
                ratio = 4.0 if index % 2 == 0 else 0.25
                image = stretch(image, ratio)
                transform = f"stretched to {image.size[0]}x{image.size[1]}"
            elif kind == "odd_size":
                if index % 2 == 0:  # tiny: a thumbnail
                    image = resize_long_side(image, int(rng.integers(12, 21)))
                else:  # huge: upscaled, as JPEG to keep the file small
                    image = resize_long_side(image, int(rng.integers(2400, 3001)))
                    options, suffix = {"quality": 90}, ".jpg"
                transform = f"resized to {image.size[0]}x{image.size[1]}"
            else:  # grayscale
                image, transform = to_grayscale_rgb(image), "grey as RGB"
            relpath = f"{source.parent.name}/{kind}_{index:04d}{suffix}"
            _save(image, out / relpath, **options)
            record(relpath, kind, source, transform)

    # copies come from distinct clean photos, drawn apart from the order above
    originals = [rows[i] for i in rng.permutation(n_base)[:n_near + n_exact]]
    if near_style not in ("combined", "single"):
        raise ValueError(f"near_style must be 'combined' or 'single', got {near_style!r}")
    for index, original in enumerate(originals[:n_near]):
        with Image.open(out / original["relpath"]) as opened:
            opened.load()
            if near_style == "combined":
                copy, options, _ = combined_copy(opened, rng)
                transform = COMBINED_TRANSFORM
            else:
                transform = NEAR_DUPLICATE_TRANSFORMS[index % len(NEAR_DUPLICATE_TRANSFORMS)]
                copy, options = near_duplicate(opened, transform)
        relpath = f"{original['label']}/near_{index:04d}.jpg"
        _save(copy, out / relpath, **options)
        record(relpath, "near_duplicate", photos / original["source"], transform,
               original["relpath"])
    for index, original in enumerate(originals[n_near:]):
        suffix = Path(original["relpath"]).suffix
        relpath = f"{original['label']}/exact_{index:04d}{suffix}"
        shutil.copyfile(out / original["relpath"], out / relpath)
        record(relpath, "exact_duplicate", photos / original["source"], "byte copy",
               original["relpath"])
    return _finish(rows, out)


def build_near_duplicate_corpus(photos: Path, out: Path, *, n_near: int = 100,
                                limit: int | None = None, seed: int = 0,
                                extra: str = "") -> pd.DataFrame:
    """Every usable photo (:func:`usable_photos`: distinct, colour; ``limit`` of them drawn
    at random when given) as a byte copy, plus ``n_near`` copies of distinct ones made with
    :func:`combined_copy` (``extra``: a rotation or a mirror on top). The ground truth's
    near pairs are (original, copy)."""
    rng = np.random.default_rng(seed)
    pool = usable_photos(photos)
    if limit is not None:
        pool = [pool[i] for i in sorted(rng.permutation(len(pool))[:limit])]
    if n_near > len(pool):
        raise ValueError(f"{n_near} copies need as many distinct photos (have {len(pool)})")
    rows: list[dict] = []
    for index, source in enumerate(pool):
        relpath = f"{source.parent.name}/clean_{index:04d}{source.suffix.lower()}"
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / relpath)
        rows.append({"relpath": relpath, "label": source.parent.name, "kind": "clean",
                     "origin": "", "source": str(source.relative_to(photos)), "transform": ""})
    for index, at in enumerate(rng.permutation(len(pool))[:n_near]):
        original = rows[at]
        with Image.open(out / original["relpath"]) as opened:
            opened.load()
            copy, options, description = combined_copy(opened, rng, extra=extra)
        relpath = f"{original['label']}/near_{index:04d}.jpg"
        _save(copy, out / relpath, **options)
        rows.append({"relpath": relpath, "label": original["label"], "kind": "near_duplicate",
                     "origin": original["relpath"], "source": original["source"],
                     "transform": description})
    return _finish(rows, out)


def build_mnist_copies(npz: Path, out: Path, *, n: int = 10_000, n_near: int = 200,
                       seed: int = 0) -> pd.DataFrame:
    """The first ``n`` digits as PNG, plus ``n_near`` copies of distinct digits, each
    rotated by 5-15 degrees either way and shifted by -3..3 pixels in x and y (the
    transform of :func:`write_mnist_augmented`)."""
    images, labels = _load_mnist(npz, n)
    rng = np.random.default_rng(seed)
    rows = []
    for index, (array, label) in enumerate(zip(images, labels)):
        relpath = f"{label}/clean_{index:05d}.png"
        _save(Image.fromarray(array), out / relpath)
        rows.append({"relpath": relpath, "label": str(label), "kind": "clean", "origin": "",
                     "source": f"mnist10k[{index}]", "transform": ""})
    for index, digit in enumerate(rng.permutation(len(images))[:n_near]):
        angle = float(rng.uniform(5, 15)) * (1 if rng.random() < 0.5 else -1)
        dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
        image = _shift(Image.fromarray(images[digit]).rotate(
            angle, resample=Image.Resampling.BILINEAR), dx, dy)
        relpath = f"{labels[digit]}/near_{index:04d}.png"
        _save(image, out / relpath)
        rows.append({"relpath": relpath, "label": str(labels[digit]), "kind": "near_duplicate",
                     "origin": f"{labels[digit]}/clean_{digit:05d}.png",
                     "source": f"mnist10k[{digit}]",
                     "transform": f"rotate {angle:+.1f} deg, shift ({dx}, {dy}) px"})
    return _finish(rows, out)


def _finish(rows: list[dict], out: Path) -> pd.DataFrame:
    # the table stays in memory: a CSV inside ``out`` would be ingested with the images
    return pd.DataFrame(rows, columns=GROUND_TRUTH_COLUMNS)


# -- MNIST ----------------------------------------------------------------------------------

def _load_mnist(npz: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    with np.load(npz) as archive:
        return archive["images"][:limit], archive["labels"][:limit]


def write_mnist_pngs(npz: Path, out: Path, limit: int | None = None) -> int:
    """Write the digits as ``out/<label>/<index>.png``; returns how many."""
    images, labels = _load_mnist(npz, limit)
    for label in np.unique(labels):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(out / str(label) / f"{index:05d}.png")
    return len(images)


def _shift(image: Image.Image, dx: int, dy: int) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                           resample=Image.Resampling.NEAREST, fillcolor=0)


def write_mnist_augmented(npz: Path, out: Path, total: int, *, seed: int = 0) -> int:
    """Write ``total`` digits as ``out/<label>/<index>.png``: the 10,000 digits as they are,
    then, cycling over them, copies rotated by -15..15 degrees and shifted by -3..3 pixels
    (a rotation of at least 5 degrees, so no copy repeats its digit exactly)."""
    images, labels = _load_mnist(npz)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
    for index in range(total):
        digit, label = index % len(images), labels[index % len(images)]
        image = Image.fromarray(images[digit])
        if index >= len(images):
            angle = float(rng.uniform(5, 15)) * (1 if rng.random() < 0.5 else -1)
            dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
            image = _shift(image.rotate(angle, resample=Image.Resampling.BILINEAR), dx, dy)
        image.save(out / str(label) / f"{index:05d}.png")
    return total


def build_mnist_corpus(npz: Path, out: Path, *, n: int = 2000, n_near: int = 50,
                       seed: int = 0) -> pd.DataFrame:
    """The first ``n`` digits as PNG (``clean``), plus ``n_near`` near duplicates of distinct
    digits: shifted by one pixel, brightness +10%, or re-encoded as JPEG quality 75."""
    images, labels = _load_mnist(npz, n)
    rng = np.random.default_rng(seed)
    rows = []
    for index, (array, label) in enumerate(zip(images, labels)):
        relpath = f"{label}/clean_{index:05d}.png"
        _save(Image.fromarray(array), out / relpath)
        rows.append({"relpath": relpath, "label": str(label), "kind": "clean", "origin": "",
                     "source": f"mnist10k[{index}]", "transform": ""})
    for index, digit in enumerate(rng.permutation(n)[:n_near]):
        image, label = Image.fromarray(images[digit]), labels[digit]
        variant = ("shift_1px", "brightness_+10pct", "jpeg_q75")[index % 3]
        suffix, options = ".png", {}
        if variant == "shift_1px":
            dx, dy = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(rng.integers(4))]
            image = _shift(image, dx, dy)
        elif variant == "brightness_+10pct":
            image = ImageEnhance.Brightness(image).enhance(1.10)
        else:
            suffix, options = ".jpg", {"quality": 75}
        relpath = f"{label}/near_{index:04d}{suffix}"
        _save(image, out / relpath, **options)
        rows.append({"relpath": relpath, "label": str(label), "kind": "near_duplicate",
                     "origin": f"{label}/clean_{digit:05d}.png", "source": f"mnist10k[{digit}]",
                     "transform": variant})
    return _finish(rows, out)


# -- ground truth ---------------------------------------------------------------------------

def truth_pairs(truth: pd.DataFrame) -> tuple[set[frozenset], set[frozenset]]:
    """Ground-truth duplicate pairs of relpaths: ``(near, exact)``.

    Near pairs: each near copy with its original, and any two copies of one original
    (their ``near``/``exact`` mix included). Exact pairs: each byte copy with its original,
    and byte copies of one original with each other.
    """
    near, exact = set(), set()
    copies = truth[truth["origin"].fillna("") != ""]
    for origin, group in copies.groupby("origin"):
        members = [(origin, "exact_duplicate")] + list(zip(group["relpath"], group["kind"]))
        for i, (a, kind_a) in enumerate(members):
            for b, kind_b in members[i + 1:]:
                pair = frozenset((a, b))
                both_exact = kind_a == "exact_duplicate" and kind_b == "exact_duplicate"
                (exact if both_exact else near).add(pair)
    return near, exact


# -- script ---------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding guns-smartphones/ (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the corpus here (default: a temporary folder, removed)")
    parser.add_argument("--quick", action="store_true", help="the smaller corpus of --quick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    photos = args.data / "guns-smartphones" / "train"
    if not photos.exists():
        sys.exit(f"benchmarks/_audit_corpus.py: data not found: {photos}. Pass --data DIR.")
    sizes = (dict(n_base=100, per_kind=10, n_near=40, n_exact=10) if args.quick else {})
    with tempfile.TemporaryDirectory(prefix="smartset-corpus-") as tmp:
        out = args.out or Path(tmp) / "corpus"
        started = time.perf_counter()
        truth = build_photo_corpus(photos, out, seed=args.seed, **sizes)
        seconds = time.perf_counter() - started
        if args.out:
            truth.to_csv(args.out.with_name(args.out.name + ".csv"), index=False)
        counts = truth.groupby("kind", sort=False).size()
        print(f"Injected photo corpus, seed {args.seed}: {len(truth)} files in {seconds:.1f} s"
              f"{'' if args.out else ' (temporary folder, removed)'}.")
        print("\n".join(f"  {kind:<18} {count:>4}" for kind, count in counts.items()))
        print(json.dumps({"files": len(truth), "kinds": {k: int(v) for k, v in counts.items()},
                          "seconds": round(seconds, 2), "quick": args.quick}))


if __name__ == "__main__":
    main()
