"""Embedding throughput: smartset's ``embed_paths`` against a plain PyTorch loop over the
same network, in one run.

The plain loop is what a user writes first: for each batch of 32 files, PIL decode (full),
``convert("RGB")``, ``resize((224, 224), BILINEAR)``, a float tensor normalised with the
backbone's mean/std, ``forward_features`` under ``torch.no_grad`` (NCHW, batch norm
unfolded). smartset decodes JPEGs in draft mode (DCT-domain downscaling, never below the
input size), folds batch norm into the convolutions, uses channels-last and
``inference_mode``, and bfloat16 autocast where the CPU runs it natively (its default,
``smartset.embeddings.precision()``; a third row forces float32). All run in this process with the same torch thread count; they
alternate, best of ``repeat``. Images/s, the ratio (goal >= 1.5), the largest feature
difference between the two (they must agree), and the load average before and after.

``throughput_section(quick)`` is called by ``benchmarks/transfer.py``; alone:
``python benchmarks/_embed_speed.py [--quick]`` (last line: JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA, locate  # noqa: E402


def _plain_loop(paths, network, spec, torch, batch_size=32) -> np.ndarray:
    from PIL import Image

    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for first in range(0, len(paths), batch_size):
            images = [np.asarray(Image.open(p).convert("RGB").resize(
                (spec.size, spec.size), Image.Resampling.BILINEAR))
                for p in paths[first:first + batch_size]]
            x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
            out.append(network.forward_features((x - mean) / std).numpy())
    features = np.concatenate(out)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def throughput_section(quick: bool = False, *, data=None, repeat: int | None = None) -> dict:
    import torch

    from smartset.backbones import load_backbone
    from smartset.embeddings import embed_paths

    root, _ = locate(Path(data) if data else DEFAULT_DATA, "benchmarks/_embed_speed.py")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file())
    if quick:
        paths = paths[::6]  # about 124 photos
    repeat = repeat or (1 if quick else 3)
    network, spec = load_backbone("efficientnet_lite0")
    network.eval()
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    embed_paths(paths[:8], progress=False)  # load the network once, outside the timing
    from smartset.embeddings import precision

    default = precision()
    best = {"plain": np.inf, "smartset": np.inf, "smartset_float32": np.inf}
    results = {}
    for _ in range(repeat):
        for name in best:
            started = time.perf_counter()
            if name == "plain":
                results[name] = _plain_loop(paths, network, spec, torch)
            elif name == "smartset":
                results[name] = embed_paths(paths, progress=False)[0]
            else:
                os.environ["SMARTSET_EMBED_PRECISION"] = "float32"
                try:
                    results[name] = embed_paths(paths, progress=False)[0]
                finally:
                    os.environ.pop("SMARTSET_EMBED_PRECISION", None)
            best[name] = min(best[name], time.perf_counter() - started)
    load_after = os.getloadavg()
    rates = {k: len(paths) / v for k, v in best.items()}
    # the two decode differently (draft JPEG + area resize vs full decode + bilinear): the
    # vectors are close, not equal; cosine similarity per image
    cosine = np.sum(results["plain"] * results["smartset"], axis=1)
    ratio = rates["smartset"] / rates["plain"]
    print(f"\nEmbedding throughput, EfficientNet-Lite0 at {spec.size} px, {len(paths)} photos, "
          f"{threads} torch threads, best of {repeat} (load {load_before[0]:.2f} -> "
          f"{load_after[0]:.2f})")
    print(f"{'pipeline':<44}{'img/s':>9}")
    print(f"{'plain PyTorch loop (PIL full decode, NCHW)':<44}{rates['plain']:>9.1f}")
    print(f"{'smartset embed_paths (' + default + ', the default)':<44}{rates['smartset']:>9.1f}")
    print(f"{'smartset embed_paths (float32)':<44}{rates['smartset_float32']:>9.1f}")
    ratio32 = rates["smartset_float32"] / rates["plain"]
    print(f"ratio {ratio:.2f}x (goal >= 1.5; float32 {ratio32:.2f}x); cosine(plain, smartset) "
          f"min {cosine.min():.3f}, median {np.median(cosine):.3f} (decoding differs: draft "
          f"JPEG + area resize + EXIF rotation vs full decode + bilinear)")
    return {"embed_img_per_s": round(rates["smartset"], 2),
            "embed_img_per_s_plain": round(rates["plain"], 2),
            "embed_ratio_vs_plain": round(ratio, 3), "embed_precision": default,
            "embed_img_per_s_float32": round(rates["smartset_float32"], 2),
            "embed_ratio_float32_vs_plain": round(ratio32, 3), "embed_threads": threads,
            "embed_n": len(paths), "embed_cosine_min": round(float(cosine.min()), 4),
            "embed_load": [round(load_before[0], 2), round(load_after[0], 2)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None)
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    result = throughput_section(args.quick, data=args.data, repeat=args.repeat)
    print(json.dumps({**result, "quick": args.quick}))


if __name__ == "__main__":
    main()
