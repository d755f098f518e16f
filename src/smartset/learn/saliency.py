"""Saliency maps: where a classifier looks. Occlusion maps (Zeiler and Fergus's
"occlusion experiments", the material's: a grey patch slid over the image, the drop in the
true class's probability at each place) and Grad-CAM (Selvaraju et al.: the last
convolutional block's activations weighted by the mean gradient of the class score) for
any smartset CNN or pretrained backbone, and a montage of images beside their maps.

Written by hand: both are a few tensor operations over smartset's own :class:`Net` (its
blocks name the last convolutional one); the libraries that implement them (captum,
pytorch-grad-cam) would add a dependency for twenty lines.

Maps are ``(N, H, W)`` float32 in [0, 1] at the model's input size (1: most important).
An ensemble's Grad-CAM is the mean of its members'; its occlusion map uses its averaged
probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartset._torch import require_torch
from smartset.learn.errors import LearnError

torch = require_torch("smartset.learn")
F = torch.nn.functional

__all__ = ["occlusion_map", "grad_cam", "last_conv_block", "saliency_montage",
           "overlay", "write_sample_maps", "saliency_report", "SALIENCY_METHODS"]

SALIENCY_METHODS = ("occlusion", "gradcam")


def _targets(estimator, targets, n: int) -> np.ndarray:
    """Class indices ``(n,)`` from class names or indices."""
    targets = np.asarray(targets)
    if targets.shape != (n,):
        raise LearnError(f"saliency needs one target class per image: {n} images, "
                         f"{targets.shape} targets")
    classes = list(estimator.classes_)
    if targets.dtype.kind in "iu" and not set(targets.tolist()) <= set(classes):
        index = targets.astype(np.int64)
    else:
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = sorted({t for t in targets.tolist() if t not in lookup}, key=str)
        if unknown:
            raise LearnError(f"saliency: {unknown[:5]} are not classes of the model "
                             f"({classes[:10]})")
        index = np.array([lookup[t] for t in targets.tolist()], dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= len(classes)):
        raise LearnError(f"saliency: class index out of range 0..{len(classes) - 1}")
    return index


def _normalised(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return ((maps - low) / np.maximum(high - low, 1e-12)).astype(np.float32)


def occlusion_map(estimator, images, targets, *, patch: int | None = None,
                  stride: int | None = None, fill: int = 128, batch_size: int = 256
                  ) -> np.ndarray:
    """Occlusion maps ``(N, H, W)`` float32 in [0, 1] of uint8 ``images`` ``(N, H, W[, C])``
    for the classes ``targets`` (names or indices).

    A ``patch`` x ``patch`` square of grey (``fill``, default 128; default side: a quarter
    of the image's shorter side, large enough to hide an object's part) slides over each
    image in steps of ``stride`` (default a quarter of the patch); each pixel gets the mean drop of the target class's probability over
    the patches that cover it, clipped at 0, then scaled to [0, 1] per image.
    ``estimator``: anything with ``predict_proba`` and ``classes_``."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.dtype != np.uint8 or not len(images):
        raise LearnError(f"occlusion_map needs uint8 images (N, H, W[, C]), got "
                         f"{images.dtype} {images.shape}")
    n, h, w = images.shape[:3]
    index = _targets(estimator, targets, n)
    patch = patch or max(2, round(min(h, w) / 4))
    stride = stride or max(1, patch // 4)
    if not (1 <= patch <= min(h, w) and stride >= 1):
        raise LearnError(f"occlusion patch must be 1..{min(h, w)} px and stride >= 1, got "
                         f"{patch} and {stride}")
    ys = sorted(set(list(range(0, h - patch + 1, stride)) + [h - patch]))
    xs = sorted(set(list(range(0, w - patch + 1, stride)) + [w - patch]))
    places = [(y, x) for y in ys for x in xs]
    base = estimator.predict_proba(images)[np.arange(n), index]
    maps = np.zeros((n, h, w), dtype=np.float64)
    for i in range(n):
        drops = []
        for first in range(0, len(places), batch_size):
            chunk = places[first:first + batch_size]
            copies = np.repeat(images[i:i + 1], len(chunk), axis=0)
            for k, (y, x) in enumerate(chunk):
                copies[k, y:y + patch, x:x + patch] = fill
            drops.append(base[i] - estimator.predict_proba(copies)[:, index[i]])
        drops = np.concatenate(drops)
        total, count = np.zeros((h, w)), np.zeros((h, w))
        for (y, x), drop in zip(places, drops):
            total[y:y + patch, x:x + patch] += drop
            count[y:y + patch, x:x + patch] += 1
        maps[i] = np.clip(total / np.maximum(count, 1), 0, None)
    return _normalised(maps)


def _spatial_output(outputs: list) -> int:
    spatial = [k for k, output in enumerate(outputs) if output.ndim == 4]
    if not spatial:
        raise LearnError("Grad-CAM needs a convolutional network (a backbone block with a "
                         "spatial output); this one has none")
    return spatial[-1]


def last_conv_block(network, inputs) -> int:
    """The index of ``network``'s last backbone block whose output on ``inputs`` (a
    normalised ``N x C x H x W`` batch) is spatial: Grad-CAM's layer (LeNet: the second
    convolution block; EfficientNet-Lite: the last MBConv stage)."""
    outputs = []
    hooks = [block.register_forward_hook(lambda m, i, o: outputs.append(o))
             for block in network.blocks()]
    try:
        with torch.no_grad():
            network(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return _spatial_output(outputs)


def _grad_cam_one(member, images, index: np.ndarray, batch_size: int,
                  weighting: str) -> np.ndarray:
    network = member.network_
    x = member._inputs(images)
    device = member._device_of()
    h, w = x.shape[2:]
    outputs_of_blocks: list = []
    hooks = [block.register_forward_hook(lambda m, i, o: outputs_of_blocks.append(o))
             for block in network.blocks()]
    was_training = network.training
    network.eval()
    parts = []
    try:
        for first in range(0, len(x), batch_size):
            outputs_of_blocks.clear()
            inputs = member._normalise(x[first:first + batch_size], device).requires_grad_(True)
            with torch.enable_grad():
                outputs = network(inputs)
                activations = outputs_of_blocks[_spatial_output(outputs_of_blocks)]
                activations.retain_grad()
                rows = torch.arange(len(inputs), device=outputs.device)
                chosen = torch.from_numpy(index[first:first + batch_size]).to(outputs.device)
                network.zero_grad(set_to_none=True)
                outputs[rows, chosen].sum().backward()
            grads = activations.grad.detach().float()
            if weighting == "mean":  # Grad-CAM's channel weights: the mean gradient
                grads = grads.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((grads * activations.detach().float()).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
            parts.append(cam[:, 0].cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
        network.zero_grad(set_to_none=True)
        network.train(was_training)
    return np.concatenate(parts).astype(np.float64)


def grad_cam(estimator, images, targets, *, weighting: str = "elementwise",
             batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` float32 in [0, 1] of uint8 ``images`` for the classes
    ``targets`` (names or indices), from the last spatial block of the backbone
    (:func:`last_conv_block`), upsampled bilinearly to the input size. An ensemble gives
    the mean of its members' maps.

    ``weighting``: ``"elementwise"`` (default) weighs each activation by its own gradient
    (``ReLU(sum_k dy/dA_k * A_k)``, HiResCAM): on backbones that end in global average
    pooling (pretrained ones, resnet, small_cnn above 32 px) the gradient is the same at
    every place, so this *is* Grad-CAM; on networks that flatten their last maps (lenet,
    network3, small_cnn at 32 px or less) it stays faithful where ``"mean"`` (classic
    Grad-CAM: channel weights = mean gradient) can flip sign and show nothing (seen on
    small_cnn: the evidence came out negative for the true class)."""
    if weighting not in ("elementwise", "mean"):
        raise LearnError(f"weighting must be 'elementwise' or 'mean', got {weighting!r}")
    members = getattr(estimator, "members", None) or [estimator]
    if not hasattr(members[0], "network_"):
        raise LearnError("Grad-CAM needs a fitted smartset network (a 'smartset train' run "
                         "or a checkpoint)")
    images = np.asarray(images)
    index = _targets(estimator, targets, len(images))
    total = None
    for member in members:
        maps = _normalised(_grad_cam_one(member, images, index, batch_size, weighting))
        total = maps if total is None else total + maps
    return _normalised(total / len(members))


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)``: ``image`` (gray or RGB) under ``heat`` (``(H, W)`` in
    [0, 1]) coloured by the jet colour map."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    coloured = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    coloured = coloured[..., ::-1]  # OpenCV's BGR to RGB
    return np.uint8(np.clip((1 - alpha) * rgb + alpha * coloured, 0, 255))


def saliency_montage(images, maps: dict[str, np.ndarray], captions: list[str],
                     path: str | Path, *, title: str | None = None) -> Path:
    """A PNG grid: one row per image, the image then each map of ``maps`` (name -> ``(N,
    H, W)``) laid over it; ``captions`` under each row's image. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smartset._atomic import atomic_path

    images = np.asarray(images)
    n, columns = len(images), 1 + len(maps)
    if not n:
        raise LearnError("saliency_montage needs at least one image")
    figure, axes = plt.subplots(n, columns, figsize=(2.2 * columns, 2.3 * n), dpi=100,
                                squeeze=False)
    for i in range(n):
        image = images[i]
        shown = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
        axes[i, 0].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=255)
        axes[i, 0].set_title(captions[i], fontsize=8)
        for j, (name, heat) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(overlay(image, heat[i]))
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        for axis in axes[i]:
            axis.set_xticks([])
            axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path


def write_sample_maps(images, maps: np.ndarray, sample_ids, folder: str | Path, *,
                      info: list[dict]) -> Path:
    """One overlay PNG per sample (``folder/<sample_id>.png``) and ``folder/index.json``
    (sample id -> file and ``info``): precomputed, so the review app only reads files."""
    import json

    import cv2

    from smartset._atomic import atomic_path, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for image, heat, sample_id, extra in zip(images, maps, sample_ids, info):
        name = f"{sample_id}.png"
        picture = overlay(image, heat)
        if max(picture.shape[:2]) < 160:  # small digits: enlarge for the focus view
            scale = int(np.ceil(160 / max(picture.shape[:2])))
            picture = cv2.resize(picture, None, fx=scale, fy=scale,
                                 interpolation=cv2.INTER_NEAREST)
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(picture[..., ::-1]))
        if not ok:
            raise LearnError(f"could not encode the saliency map of {sample_id}")
        with atomic_path(folder / name) as temporary:
            temporary.write_bytes(encoded.tobytes())
        index[str(sample_id)] = {"file": name, **extra}
    write_text(folder / "index.json", json.dumps(index, indent=1))
    return folder / "index.json"


def saliency_report(estimator, images, labels, sample_ids, probs, out_dir: str | Path, *,
                    limit: int = 12, per_sample: int = 200) -> dict:
    """What ``evaluate --saliency`` writes under ``out_dir``: ``saliency.png``, a montage of
    the misclassified images (the most confidently wrong first, at most ``limit``; when
    none is wrong, the least confident right ones) beside their occlusion and Grad-CAM
    maps for the *predicted* class (the evidence that drove the answer), and
    ``saliency/<sample_id>.png`` + ``saliency/index.json``: the Grad-CAM overlay of each
    misclassified sample (at most ``per_sample``, the most confident first) for the review
    app's focus view. Returns the paths and counts."""
    classes = np.asarray(estimator.classes_, dtype=object)
    labels = np.asarray(labels, dtype=object)
    predicted_index = probs.argmax(1)
    predicted = classes[predicted_index]
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[np.arange(len(probs)), predicted_index]
    if len(wrong):
        order = wrong[np.argsort(-confidence[wrong], kind="stable")]
        what = "misclassified"
    else:
        order = np.argsort(confidence, kind="stable")
        what = "least confident (none misclassified)"
    shown = order[:limit]
    targets = predicted_index[shown]
    maps = {"occlusion (predicted class)": occlusion_map(estimator, images[shown], targets),
            "Grad-CAM (predicted class)": grad_cam(estimator, images[shown], targets)}
    captions = [f"({labels[i]}) {predicted[i]} {confidence[i]:.2f}" for i in shown]
    out_dir = Path(out_dir)
    montage = saliency_montage(images[shown], maps, captions, out_dir / "saliency.png",
                               title=f"{what}: (true) predicted p")
    stored = order[:per_sample] if len(wrong) else order[:0]
    index = None
    if len(stored):
        cams = grad_cam(estimator, images[stored], predicted_index[stored])
        index = write_sample_maps(
            images[stored], cams, [sample_ids[i] for i in stored], out_dir / "saliency",
            info=[{"true": str(labels[i]), "predicted": str(predicted[i]),
                   "p": round(float(confidence[i]), 4), "method": "gradcam",
                   "target": "predicted"} for i in stored])
    return {"montage_png": str(montage), "shown": what, "n_shown": int(len(shown)),
            "n_maps": int(len(stored)), "index": str(index) if index else None}
