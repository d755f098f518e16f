"""Augmentation throughput: smartset against albumentations, kornia and a plain OpenCV loop.

The pipeline, the same for every library: rotation (+-15 degrees), elastic distortion
(alpha 34, sigma 4, uniform noise as Simard et al.), translation (+-10 %), constant fill 0,
bilinear sampling. Data (from ``--data``, default ``shared/data`` beside the repository):

- mnist28: the first 10,000 digits of ``mnist10k.npz`` (2,000 with ``--quick``), 28 x 28 grey;
- photo224: photos of ``guns-smartphones/train`` resized to 224 x 224 RGB (500; 100 with
  ``--quick``), decoded and resized once, untimed.

Rows (each gets its native input, prepared untimed, and must return augmented images):

- smartset: ``augment(batch, policy, seed)`` on ``uint8`` tensors ``N x C x H x W`` in batches of
  ``--batch``, ``uint8`` out, every parameter recorded (replayable); rotation, elastic and
  translation fused into one resampling;
- smartset float32: the same on float32 tensors in [0, 1] (kornia's native form);
- albumentations 2.0.8: ``A.Compose([Affine(rotate, translate_percent),
  ElasticTransform(noise_distribution='uniform')])`` per image (``uint8`` HWC arrays):
  rotation and translation fused in one ``Affine`` as its docs recommend (issue #23; it
  was three resamplings before, 1.25-1.5x slower), then the elastic warp;
- kornia: ``AugmentationSequential(RandomRotation, RandomElasticTransform, RandomAffine)`` on
  float32 batches of ``--batch`` (alpha converted to kornia's normalised units, 33-tap
  kernel as OpenCV picks for sigma 4);
- OpenCV loop: per image, a uniform noise field blurred with ``cv2.GaussianBlur`` at full
  resolution, rotation and translation folded into the maps, one ``cv2.remap``.

Each row is the best of ``--repeat`` runs after an untimed warm-up, the rows interleaved in
every round (this machine is shared: a burst of load then hits every library). Peers that are not
installed are reported as missing (they live only in the benchmark environment). Before
the table, the elastic field check compares the statistics of smartset's lattice field with
the full-resolution Gaussian-smoothed field. The last line of stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from _data import DEFAULT_DATA, locate
import torch.nn.functional as F
from PIL import Image

import smartset
from smartset.augment import Compose, Elastic, Rotation, Translation, augment
from smartset.augment import _geometry as geo

ALPHA, SIGMA, DEGREES, SHIFT = 34.0, 4.0, 15.0, 0.1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding mnist10k.npz and guns-smartphones/ (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 digits and 100 photos, best of 2 per row")
    parser.add_argument("--repeat", type=int, default=None, help="runs per row, best kept (default 3; 2 with --quick)")
    parser.add_argument("--batch", type=int, default=256, help="batch size for the batched libraries")
    parser.add_argument("--photo-batch", type=int, default=64,
                        help="batch size of the per-transform rows at 224x224 (default 64, a "
                             "training batch: 256 photos are a 38 MB uint8 batch, above glibc's "
                             "32 MB ceiling for reusing freed memory, so every batch of every "
                             "batched library would be fresh pages)")
    parser.add_argument("--transforms", default=None,
                        help="per-transform rows (benchmarks/_augment_rows.py): 'all' or "
                             "comma-separated names, e.g. motion_blur,jpeg; 'only' skips the "
                             "pipeline table when given as --transforms only:NAMES")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and OpenCV threads (default: all cores)")
    parser.add_argument("--settings", default=None,
                        help="issue #23 table (benchmarks/_contention.py): comma-separated of "
                             "idle,competing,dataloader or 'all', each per core and per "
                             "machine; 'only:...' skips the other tables")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (2 if args.quick else 3)
    return args


def load_data(data: Path, quick: bool) -> dict[str, np.ndarray]:
    photos, npz = locate(data, "benchmarks/augment.py")
    with np.load(npz) as archive:
        digits = archive["images"][:2_000 if quick else 10_000]
    paths = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = paths[:100 if quick else 500]
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            image.draft("RGB", (448, 448))  # JPEG DCT scaling: decoding is not what we measure
            arrays.append(np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR)))
    return {"mnist28": digits[..., None], "photo224": np.stack(arrays)}  # N x H x W x C


# -- the libraries ---------------------------------------------------------------------------
def smartset_policy():
    return Compose([Rotation(DEGREES), Elastic(ALPHA, SIGMA), Translation(SHIFT)])


def run_smartset(batches: list[torch.Tensor], seed: int = 0) -> int:
    policy = smartset_policy()
    rng = np.random.default_rng(seed)
    done = 0
    for batch in batches:
        result = augment(batch, policy, seed=rng)
        done += len(result.output)
    return done


def albumentations_pipeline():
    """The pipeline as albumentations' docs recommend: one ``Affine`` for rotation and
    translation (a single resampling), then the elastic warp; None when not installed."""
    try:
        import albumentations as A
        import cv2
    except ImportError:
        return None
    return A.Compose([
        A.Affine(rotate=(-DEGREES, DEGREES), translate_percent=(-SHIFT, SHIFT),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        A.ElasticTransform(alpha=ALPHA, sigma=SIGMA, noise_distribution="uniform",
                           border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
    ], seed=0)


def make_albumentations():
    pipeline = albumentations_pipeline()
    if pipeline is None:
        return None
    import albumentations as A

    def run(images: list[np.ndarray]) -> int:
        for image in images:
            pipeline(image=image)["image"]
        return len(images)
    return run, A.__version__


def kornia_pipeline(size: int):
    """kornia's ``AugmentationSequential`` of the pipeline; None when not installed."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    ksize = 2 * math.ceil(4 * SIGMA) + 1
    return K.AugmentationSequential(
        K.RandomRotation(degrees=DEGREES, p=1.0),
        K.RandomElasticTransform(kernel_size=(ksize, ksize), sigma=(SIGMA, SIGMA),
                                 alpha=(ALPHA * 2 / size, ALPHA * 2 / size), p=1.0),
        K.RandomAffine(degrees=0.0, translate=(SHIFT, SHIFT), p=1.0))


def make_kornia(size: int):
    pipeline = kornia_pipeline(size)
    if pipeline is None:
        return None
    import kornia

    def run(batches: list[torch.Tensor]) -> int:
        done = 0
        with torch.no_grad():
            for batch in batches:
                done += len(pipeline(batch))
        return done
    return run, kornia.__version__


def make_opencv():
    try:
        import cv2
    except ImportError:
        return None
    rng = np.random.default_rng(0)

    def run(images: list[np.ndarray]) -> int:
        height, width = images[0].shape[:2]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        for image in images:
            angle = np.deg2rad(rng.uniform(-DEGREES, DEGREES))
            tx, ty = rng.uniform(-SHIFT, SHIFT) * width, rng.uniform(-SHIFT, SHIFT) * height
            noise = rng.uniform(-1, 1, (2 * height, width)).astype(np.float32)
            dx = cv2.GaussianBlur(noise[:height], (0, 0), SIGMA) * ALPHA
            dy = cv2.GaussianBlur(noise[height:], (0, 0), SIGMA) * ALPHA
            qx, qy = xs - tx + dx, ys - ty + dy  # translation back, then the elastic field
            c, s = math.cos(angle), math.sin(angle)  # then the rotation back
            mx = c * (qx - cx) - s * (qy - cy) + cx
            my = s * (qx - cx) + c * (qy - cy) + cy
            cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return len(images)
    return run, cv2.__version__


def best_of_interleaved(repeat: int, runs: dict) -> dict[str, float]:
    """The minimum wall time of each run over ``repeat`` rounds, the runs interleaved in
    every round (so a burst of load on this shared machine hits every library alike),
    after an untimed warm-up of each (caches, thread pools, lazy imports)."""
    for run in runs.values():
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


# -- the elastic field check -------------------------------------------------------------------
def field_statistics(d: torch.Tensor) -> dict[str, float]:
    """Displacement std, std of its derivatives (strain) and correlation at lags sigma, 2 sigma."""
    lag = int(round(SIGMA))
    dx = d[:, 0]
    var = d.var().item()
    return {"std": d.std().item(),
            "strain_x": (dx[:, :, 1:] - dx[:, :, :-1]).std().item(),
            "strain_y": (dx[:, 1:] - dx[:, :-1]).std().item(),
            "corr_sigma": (dx[:, :, lag:] * dx[:, :, :-lag]).mean().item() / var,
            "corr_2sigma": (dx[:, :, 2 * lag:] * dx[:, :, :-2 * lag]).mean().item() / var}


def reference_fields(n: int, size: int, rng) -> torch.Tensor:
    """Simard's field at full resolution: uniform noise per pixel, Gaussian (4 sigma), alpha."""
    r = math.ceil(4 * SIGMA)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / SIGMA) ** 2)
    k /= k.sum()
    noise = torch.from_numpy(rng.uniform(-1, 1, (2 * n, 1, size + 2 * r, size + 2 * r)))
    f = F.conv2d(F.conv2d(noise, k.view(1, 1, -1, 1)), k.view(1, 1, 1, -1))
    return (f * ALPHA).view(n, 2, size, size)


def smartset_fields(n: int, size: int) -> torch.Tensor:
    """smartset's field evaluated at every pixel (lattice, then bilinear upsampling)."""
    step = geo.GeoStep("field", (size, size), (size, size), np.ones(n, bool),
                       alpha=np.full(n, ALPHA), sigma=SIGMA, streams=np.full(n, 7),
                       indices=np.arange(n))
    lat = geo.FusedWarp([step]).lattice(torch.device("cpu")).double()
    h, w = lat.shape[-2:]
    ys = torch.linspace(0, size - 1, h, dtype=torch.float64)
    xs = torch.linspace(0, size - 1, w, dtype=torch.float64)
    d = lat - torch.stack([xs.view(1, 1, w).expand(n, h, w), ys.view(1, h, 1).expand(n, h, w)], 1)
    return F.interpolate(d, size=(size, size), mode="bilinear", align_corners=True)


def field_check(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, size, n in (("mnist28", 28, 500 if quick else 4000), ("photo224", 224, 50 if quick else 200)):
        ref = field_statistics(reference_fields(n, size, rng))
        ours = field_statistics(smartset_fields(n, size))
        out[name] = {k: {"full_resolution": round(ref[k], 4), "smartset": round(ours[k], 4),
                         "rel_diff": round(ours[k] / ref[k] - 1, 4)} for k in ref}
    return out


# -- per-transform rows (issue #22) -----------------------------------------------------------------
def transform_rows(args, data: dict[str, np.ndarray]) -> None:
    """One row per transform and data set (see ``_augment_rows.py``), per core (every library
    1 torch and 1 OpenCV thread) and per machine (torch and OpenCV threads = cores;
    albumentations per image as its docs show, OpenCV with those threads); ``--threads N``
    measures that one budget instead. The libraries of a row are interleaved, best of
    ``--repeat``; a second line gives images per CPU-second (this process, user + system),
    which a loaded machine stretches much less than wall time. Prints a table and one line
    of JSON."""
    import _contention
    from _augment_rows import TRANSFORMS, runners

    wanted = args.transforms.split(":", 1)[-1]
    names = TRANSFORMS if wanted in ("all", "only") else tuple(wanted.split(","))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    budgets = ((f"{args.threads} thr", args.threads),) if args.threads else (
        ("per-core", 1), ("per-machine", cores))
    libs = ("smartset", "albumentations", "kornia")
    print(f"Per-transform rows, best of {args.repeat} (smartset uint8 batches of {args.batch}, "
          f"{args.photo_batch} at 224x224; "
          f"albumentations per image; kornia float32 batches), img/s; budgets: "
          + ", ".join(f"{b} = {t} torch/cv2 thread(s)" for b, t in budgets))
    print(f"{'transform':<19}| {'data':<9}| {'budget':<12}| {'smartset':>9} | {'albument.':>9} | "
          f"{'kornia':>9} | {'x best peer':>11} | load before>after")
    result = {}
    for name in names:
        for data_name, images in data.items():
            labels = np.arange(len(images)) % 10
            row = result.setdefault(f"{name}_{data_name}", {})
            for budget, threads in budgets:
                _contention.set_threads(threads)
                batch = args.photo_batch if data_name == "photo224" else args.batch
                made = runners(name, images, labels, batch)
                before = _contention.load()
                spent: dict[str, float] = {}
                measured = best_of_interleaved(
                    args.repeat, _contention.with_cpu({k: v[0] for k, v in made.items()}, spent))
                after = _contention.load()
                for label, seconds in (("img/s", measured), ("img/CPU-s", spent)):
                    rate = {k: len(images) / v for k, v in seconds.items() if v > 0}
                    peers = [v for k, v in rate.items() if k != "smartset"]
                    ratio = rate["smartset"] / max(peers) if peers and "smartset" in rate else None
                    cells = [f"{rate[k]:>9.0f}" if k in rate else f"{'-':>9}" for k in libs]
                    head = (f"{name:<19}| {data_name:<9}| {budget:<12}" if label == "img/s"
                            else f"{'':<19}| {'':<9}| {label:<12}")
                    print(f"{head}| " + " | ".join(cells) + " | "
                          + (f"{ratio:>10.2f}x" if ratio else f"{'-':>11}")
                          + (f" | {before:.1f}>{after:.1f}" if label == "img/s" else " |"))
                    key = budget if label == "img/s" else f"{budget}_cpu"
                    row[key] = {**{k: round(v, 1) for k, v in rate.items()},
                                "ratio_vs_best_peer": round(ratio, 3) if ratio else None}
                row[budget]["load_before"], row[budget]["load_after"] = before, after
                row["batch"] = batch
                del made
    _contention.set_threads(args.threads or cores)
    print(json.dumps({"transform_rows": result}))
    print()


# -- settings: idle / competing process / DataLoader, per core and per machine (issue #23) -------
def settings_rows(args, data: dict[str, np.ndarray]) -> None:
    """The table of ``_contention.settings_table`` for the pipeline (smartset ``uint8``
    batches, albumentations per image, kornia float32 batches) and one line of JSON."""
    import _contention

    wanted = args.settings.split(":", 1)[-1]
    settings = (("idle", "competing", "dataloader") if wanted in ("all", "only")
                else tuple(wanted.split(",")))
    unknown = sorted(set(settings) - {"idle", "competing", "dataloader"})
    if unknown:
        raise SystemExit(f"augment.py: unknown --settings {', '.join(unknown)}; choose from "
                         f"idle, competing, dataloader, all (or only:NAMES).")

    def make_runs(images, budget):
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        u8 = list(tensor.split(args.batch))
        f32 = [b.float() / 255 for b in u8]
        listed = [np.ascontiguousarray(im) for im in
                  (images[..., 0] if images.shape[-1] == 1 else images)]
        runs = {"smartset": lambda: run_smartset(u8)}
        albu, korn = make_albumentations(), make_kornia(images.shape[2])
        if albu is not None:
            runs["albumentations"] = lambda: albu[0](listed)
        if korn is not None:
            runs["kornia"] = lambda: korn[0](f32)
        return runs

    def make_loader_runs(images, workers):
        return _contention.dataloader_runs(
            images, workers=workers, batch=args.batch, policy=smartset_policy(),
            albu=albumentations_pipeline(), kornia=kornia_pipeline(images.shape[2]))

    result = _contention.settings_table(data, settings=settings, repeat=args.repeat,
                                        batch=args.batch, make_runs=make_runs,
                                        make_loader_runs=make_loader_runs,
                                        interleaved=best_of_interleaved)
    print(json.dumps({"settings": result}))
    print()


# -- main ----------------------------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse_args(argv)
    cores = os.cpu_count() or 1
    threads = args.threads or cores
    torch.set_num_threads(threads)
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:
        pass
    started = time.perf_counter()
    data = load_data(args.data, args.quick)
    print(f"smartset {smartset.__version__} augmentation benchmark: {cores} cores, {threads} threads, "
          f"torch {torch.__version__}, batch {args.batch}, best of {args.repeat}"
          f"{', quick' if args.quick else ''}. Data prepared in {time.perf_counter() - started:.1f} s "
          f"(untimed).")
    print("Pipeline: rotation +-15 deg, elastic alpha 34 sigma 4, translation +-10 %, constant fill 0.\n")

    if args.transforms:
        transform_rows(args, data)
        if args.transforms.startswith("only"):
            return
    if args.settings:
        settings_rows(args, data)
        torch.set_num_threads(threads)
        if args.settings.startswith("only"):
            return

    check = field_check(args.quick)
    print("Elastic field check: smartset's lattice field against the full-resolution "
          "Gaussian-smoothed field (relative difference of each statistic)")
    for name, stats in check.items():
        print(f"  {name:<9}" + "  ".join(f"{k} {v['smartset']:.3f} vs {v['full_resolution']:.3f} "
                                         f"({v['rel_diff']:+.1%})" for k, v in stats.items()))
    print()

    peers = {"albumentations": make_albumentations, "kornia": make_kornia, "opencv": make_opencv}
    missing = []
    rows, result = [], {}
    for name, images in data.items():
        n, height, width, channels = images.shape
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        u8 = list(tensor.split(args.batch))
        f32 = [b.float() / 255 for b in u8]
        listed = [np.ascontiguousarray(im) for im in (images[..., 0] if channels == 1 else images)]
        runs = {"smartset": lambda: run_smartset(u8), "smartset float32": lambda: run_smartset(f32)}
        versions = {"smartset": smartset.__version__, "smartset float32": smartset.__version__}
        for peer, factory in peers.items():
            made = factory(width) if peer == "kornia" else factory()
            if made is None:
                missing.append(peer)
                continue
            run, version = made
            inputs = f32 if peer == "kornia" else listed
            runs[peer] = lambda run=run, inputs=inputs: run(inputs)
            versions[peer] = version
        measured = best_of_interleaved(args.repeat, runs)
        rate = {k: n / v for k, v in measured.items()}
        peer_rates = {k: v for k, v in rate.items() if not k.startswith("smartset")}
        best_peer = max(peer_rates.values()) if peer_rates else None
        for method, seconds in measured.items():
            rows.append((name, f"{method} {versions[method]}", n, seconds, rate[method],
                         rate["smartset"] / rate[method]))
        result[f"{name}_img_per_s"] = round(rate["smartset"], 1)
        result[f"{name}_float32_img_per_s"] = round(rate["smartset float32"], 1)
        result[f"ratio_vs_best_peer_{name}"] = round(rate["smartset"] / best_peer, 3) if best_peer else None
        for peer, value in peer_rates.items():
            result[f"{peer}_{name}_img_per_s"] = round(value, 1)
            result[f"ratio_vs_{peer}_{name}"] = round(rate["smartset"] / value, 3)
        result[f"n_{name}"] = n

    width = max(len(r[1]) for r in rows)
    header = f"{'data':<9} | {'method':<{width}} | {'images':>6} | {'seconds':>8} | {'img/s':>9} | {'smartset x':>10}"
    print(header)
    print("-" * len(header))
    for data_name, method, n, seconds, per_s, ratio in rows:
        print(f"{data_name:<9} | {method:<{width}} | {n:>6} | {seconds:>8.3f} | {per_s:>9.0f} | {ratio:>9.2f}x")
    if missing:
        print(f"\nPeers not installed here (benchmark environment only): {', '.join(sorted(set(missing)))}.")
    print()
    result.update({"cores": cores, "threads": threads, "batch": args.batch, "quick": args.quick,
                   "repeat": args.repeat, "peers_missing": sorted(set(missing)),
                   "elastic_field_check": {name: {k: v["rel_diff"] for k, v in stats.items()}
                                           for name, stats in check.items()}})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
