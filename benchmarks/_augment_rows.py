"""Per-transform rows of ``benchmarks/augment.py`` (issue #22): each new smartset transform
beside its albumentations and kornia counterparts, configured as their docs show.

- smartset: ``transform(batch, seed=rng)`` on ``uint8`` tensors ``N x C x H x W`` in batches
  of ``--batch`` (MixUp/CutMix: ``BatchMix`` on the batch and its labels);
- albumentations: ``A.Compose([T(p=1)])`` called per image on ``uint8`` HWC arrays (its
  documented use); no counterpart for RandAugment, TrivialAugment, MixUp or CutMix;
- the geometric rows (resized_crop, grid_distortion, optical_distortion) sample bilinearly
  with pixel centres at integer coordinates (kornia's crop with ``align_corners=False``)
  and a constant fill of 0 in every library; the scale and ratio ranges, the grid's steps
  and limit and the lens limit are the same (smartset's lens centre also moves by up to 5 %,
  which albumentations 2 no longer offers; it costs nothing);
- kornia: the ``K.Random*`` augmentation on float32 batches in [0, 1] under ``no_grad``;
  ``kornia.augmentation.auto.RandAugment`` / ``TrivialAugment`` and ``RandomMixUpV2`` /
  ``RandomCutMixV2``; no counterpart for lowres, grid or optical distortion.

Every row applies the transform to every image (p = 1). Fair settings: the same operation
for every library where one exists; lowres uses area shrinking and bilinear enlarging in
both smartset and albumentations (``Downscale``'s default, nearest both ways, is cheaper
and a different image). Not equal, and said here: albumentations writes each result into a
buffer it reuses (one image, in cache) and never collates a batch, while the batched
libraries write a fresh batch tensor (38 MB at 224 x 224 x 3 x 256: page faults); kornia
works in float32, the others in uint8. ``python benchmarks/augment.py
--transforms all`` prints them; ``python benchmarks/_augment_rows.py --lib L --transform T
--data mnist28`` runs one row alone (for ``farm-bench --vs``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import smartset.augment as aug


def _smartset(name: str, height: int, width: int):
    return {
        "motion_blur": lambda: aug.MotionBlur(length=(3, 7)),
        "lowres": lambda: aug.LowResolution(scale=(0.25, 0.5)),
        "jpeg": lambda: aug.JpegCompression(quality=(20, 80)),
        "resized_crop": lambda: aug.RandomResizedCrop((height, width)),
        "grid_distortion": lambda: aug.GridDistortion(5, distort_limit=0.3),
        "optical_distortion": lambda: aug.OpticalDistortion(0.05, shift_limit=0.05),
        "posterize": lambda: aug.Posterize(bits=(4, 8)),
        "solarize": lambda: aug.Solarize(threshold=(0.5, 1.0)),
        "equalize": lambda: aug.Equalize(),
        "randaugment": lambda: aug.resolve_policy("randaugment"),
        "trivial": lambda: aug.resolve_policy("trivial"),
        "mixup": lambda: aug.BatchMix(mixup=0.2),
        "cutmix": lambda: aug.BatchMix(cutmix=1.0),
    }[name]()


TRANSFORMS = ("motion_blur", "lowres", "jpeg", "resized_crop", "grid_distortion",
              "optical_distortion", "posterize", "solarize", "equalize", "randaugment",
              "trivial", "mixup", "cutmix")


def _albumentations(name: str, height: int, width: int):
    import albumentations as A
    import cv2

    made = {
        "motion_blur": lambda: A.MotionBlur(blur_limit=(3, 7), p=1.0),
        # the same interpolations as smartset's LowResolution (area down, bilinear up);
        # Downscale's default is nearest both ways, less work and a different image
        "lowres": lambda: A.Downscale(scale_range=(0.25, 0.5), p=1.0, interpolation_pair={
            "downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}),
        "jpeg": lambda: A.ImageCompression(quality_range=(20, 80), p=1.0),
        # geometric rows: bilinear, constant fill 0, as smartset's (issue #22)
        "resized_crop": lambda: A.RandomResizedCrop(size=(height, width),
                                                    interpolation=cv2.INTER_LINEAR, p=1.0),
        "grid_distortion": lambda: A.GridDistortion(num_steps=5, distort_limit=0.3,
                                                    interpolation=cv2.INTER_LINEAR,
                                                    border_mode=cv2.BORDER_CONSTANT, fill=0,
                                                    p=1.0),
        "optical_distortion": lambda: A.OpticalDistortion(distort_limit=0.05,
                                                          interpolation=cv2.INTER_LINEAR,
                                                          border_mode=cv2.BORDER_CONSTANT,
                                                          fill=0, p=1.0),
        "posterize": lambda: A.Posterize(num_bits=(4, 8), p=1.0),
        "solarize": lambda: A.Solarize(threshold_range=(0.5, 1.0), p=1.0),
        "equalize": lambda: A.Equalize(p=1.0),
    }.get(name)
    return None if made is None else A.Compose([made()], seed=0)


def _kornia(name: str, height: int, width: int):
    import kornia.augmentation as K
    from kornia.augmentation import auto

    made = {
        "motion_blur": lambda: K.RandomMotionBlur(kernel_size=(3, 7), angle=180.0,
                                                  direction=0.0, p=1.0),
        "jpeg": lambda: K.RandomJPEG(jpeg_quality=(20.0, 80.0), p=1.0),
        "resized_crop": lambda: K.RandomResizedCrop((height, width), resample="bilinear",
                                                    align_corners=False, p=1.0),
        "posterize": lambda: K.RandomPosterize(bits=(4, 8), p=1.0),
        "solarize": lambda: K.RandomSolarize(thresholds=0.25, additions=0.0, p=1.0),
        "equalize": lambda: K.RandomEqualize(p=1.0),
        "randaugment": lambda: auto.RandAugment(n=2, m=9),
        "trivial": lambda: auto.TrivialAugment(),
        "mixup": lambda: K.RandomMixUpV2(lambda_val=(0.0, 1.0), p=1.0),
        "cutmix": lambda: K.RandomCutMixV2(p=1.0),
    }.get(name)
    return None if made is None else made()


def runners(name: str, images: np.ndarray, labels: np.ndarray, batch: int,
            libs=("smartset", "albumentations", "kornia")) -> dict:
    """``{library: (run, version)}`` for transform ``name`` on ``images`` (N x H x W x C
    uint8), inputs prepared untimed; a library without the transform is left out."""
    n, height, width, channels = images.shape
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    u8 = list(tensor.split(batch))
    target = torch.from_numpy(labels.astype(np.int64))
    targets = list(target.split(batch))
    classes = int(labels.max()) + 1
    out = {}
    if "smartset" in libs:
        import smartset

        t = _smartset(name, height, width)
        if isinstance(t, aug.BatchMix):
            def run(t=t):
                rng = np.random.default_rng(0)
                for b, y in zip(u8, targets):
                    t(b, y, num_classes=classes, seed=rng)
                return n
        else:
            def run(t=t):
                rng = np.random.default_rng(0)
                for b in u8:
                    t(b, seed=rng)
                return n
        out["smartset"] = (run, smartset.__version__)
    if "albumentations" in libs:
        try:
            import albumentations as A
        except ImportError:
            A = None
        pipeline = None if A is None else _albumentations(name, height, width)
        if pipeline is not None:
            listed = [np.ascontiguousarray(im) for im in
                      (images[..., 0] if channels == 1 else images)]

            def run(pipeline=pipeline, listed=listed):
                for image in listed:
                    pipeline(image=image)["image"]
                return n
            out["albumentations"] = (run, A.__version__)
    if "kornia" in libs:
        try:
            import kornia
        except ImportError:
            kornia = None
        module = None if kornia is None else _kornia(name, height, width)
        # kornia's colour policies and its (differentiable) JPEG take RGB only, the JPEG
        # sizes in multiples of 16
        rgb_only = name in ("randaugment", "trivial", "jpeg")
        if name == "jpeg" and (height % 16 or width % 16):
            module = None
        if module is not None and (channels == 3 or not rgb_only):
            f32 = [b.float() / 255 for b in u8]

            def run(module=module, f32=f32):
                with torch.no_grad():
                    for b, y in zip(f32, targets):
                        if name in ("mixup", "cutmix"):
                            module(b, y)
                        else:
                            module(b)
                return n
            out["kornia"] = (run, kornia.__version__)
    return out


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="One row of the per-transform benchmark.")
    parser.add_argument("--lib", required=True)
    parser.add_argument("--transform", required=True, choices=TRANSFORMS)
    parser.add_argument("--data", default="mnist28", choices=("mnist28", "photo224"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from augment import DEFAULT_DATA, load_data

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(DEFAULT_DATA, quick=True)
    images = data[args.data]
    reps = max(1, args.n // len(images))
    images = np.concatenate([images] * reps)[:args.n]
    labels = np.arange(len(images)) % 10
    run, _ = runners(args.transform, images, labels, args.batch, libs=(args.lib,))[args.lib]
    started = time.perf_counter()
    run()
    print(f"{args.lib} {args.transform} {args.data}: {len(images) / (time.perf_counter() - started):.0f} img/s")


if __name__ == "__main__":
    _main()
