"""Test-time augmentation (TTA): a model's class probabilities averaged over views of each
image.

Views: ``flip`` (the image and its mirror image), ``shift`` (the image and four copies
moved by 4% of its side along the diagonals, edges reflected), ``flip+shift`` (both: six
views), or any augmentation policy :func:`smartset.augment.resolve_policy` knows (a named
policy, a registered transform, a policy file): the image itself, then ``n - 1`` seeded
draws of the policy. The views of a fixed TTA are deterministic; a policy's draws come
from ``seed`` (the same seed, the same views). A mirror suits photos, not digits (a
mirrored 2 is no 2): use ``shift`` or a mild policy there.
"""

from __future__ import annotations

import numpy as np

from smartset.learn.errors import LearnError

__all__ = ["TTA_VIEWS", "tta_views", "view_images", "tta_proba", "tta_report"]

TTA_VIEWS = {"flip": ("original", "hflip"),
             "shift": ("original", "shift++", "shift--", "shift+-", "shift-+"),
             "flip+shift": ("original", "hflip", "shift++", "shift--", "hflip shift++",
                            "hflip shift--")}


def tta_views(tta, n: int | None = None) -> tuple[str, ...]:
    """The view names of ``tta`` (``True`` means ``flip``): the first ``n`` of a fixed
    TTA, or ``original`` then ``n - 1`` (default 4) draws ``POLICY#i`` of a policy.
    ``None``/``False``/``"none"``: no TTA, ``("original",)``."""
    if tta in (None, False, "none"):
        return ("original",)
    if n is not None and (not isinstance(n, int) or n < 2):
        raise LearnError(f"test-time augmentation needs n >= 2 views, got {n!r}")
    name = "flip" if tta is True else str(tta)
    if name in TTA_VIEWS:
        views = TTA_VIEWS[name]
        return views if n is None else views[:n]
    _policy(name)  # an unknown name: one clear error now
    return ("original", *(f"{name}#{i}" for i in range(1, n or 5)))


def _policy(name: str):
    from smartset.augment import resolve_policy

    try:
        return resolve_policy(name)
    except (KeyError, ValueError, OSError) as error:
        raise LearnError(f"Unknown test-time augmentation {name!r} ({error}); choose "
                         f"{', '.join(TTA_VIEWS)}, a named policy ('smartset augment list') "
                         f"or a policy file.") from None


def view_images(images: np.ndarray, view: str, *, seed: int = 0, policy=None) -> np.ndarray:
    """uint8 ``(N, H, W[, C])`` images under one view: ``original``; ``hflip`` mirrors
    left-right; ``shift±±`` moves the image by 4% of its side (first sign: down/up,
    second: right/left; edges reflected); ``NAME#i`` is draw ``i`` of policy ``NAME``
    (seeded by ``seed`` and ``i``; ``policy`` may pass the resolved policy)."""
    import cv2

    images = np.asarray(images)
    if view == "original":
        return images
    if "#" in view:
        name, index = view.rsplit("#", 1)
        policy = policy if policy is not None else _policy(name)
        from smartset.learn._arrays import as_image_tensor

        tensor = as_image_tensor(images)
        out = policy(tensor, seed=int(np.random.SeedSequence([seed, int(index)])
                                      .generate_state(1)[0]))
        out = out.permute(0, 2, 3, 1).numpy()
        return out[..., 0] if images.ndim == 3 else out
    out = images
    if "hflip" in view:
        out = out[:, :, ::-1]
    if "shift" in view:
        signs = view.split("shift", 1)[1][:2]
        sy = 1 if signs[0] == "+" else -1
        sx = sy if len(signs) < 2 else (1 if signs[1] == "+" else -1)
        h, w = out.shape[1:3]
        dy, dx = sy * max(1, round(0.04 * h)), sx * max(1, round(0.04 * w))
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        shifted = [cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h),
                                  borderMode=cv2.BORDER_REFLECT_101) for image in out]
        out = np.stack([s[..., None] if s.ndim == 2 and out.ndim == 4 else s
                        for s in shifted])
    return np.ascontiguousarray(out)


def tta_proba(predict_proba, images, tta, *, n: int | None = None, seed: int = 0
              ) -> np.ndarray:
    """The mean of ``predict_proba(view)`` over the views of ``tta`` (:func:`tta_views`):
    ``(N, k)`` float32. ``predict_proba`` takes uint8 ``(N, H, W[, C])`` arrays."""
    views = tta_views(tta, n)
    policy = None
    total = None
    for view in views:
        if "#" in view and policy is None:
            policy = _policy(view.rsplit("#", 1)[0])
        probs = np.asarray(predict_proba(view_images(images, view, seed=seed, policy=policy)),
                           dtype=np.float64)
        total = probs if total is None else total + probs
    return (total / len(views)).astype(np.float32)


def tta_report(estimator, images, labels, plain_probs, tta, *, n: int | None = None,
               seed: int = 0) -> dict:
    """The plain score beside the TTA score of a classifier on ``images``: ``views``,
    ``rows`` (``scoring``, ``views``, ``accuracy``, ``macro_f1``: plain first), ``gain``
    (TTA accuracy minus plain) and ``probs`` (the TTA probabilities)."""
    from smartset.learn.metrics import classification_report

    probs = tta_proba(estimator.predict_proba, images, tta, n=n, seed=seed)
    views = tta_views(tta, n)
    rows = []
    for name, p in (("plain", plain_probs), (f"tta {tta}", probs)):
        report = classification_report(labels, p, estimator.classes_)
        rows.append({"scoring": name, "views": 1 if name == "plain" else len(views),
                     "accuracy": report["accuracy"], "macro_f1": report["macro"]["f1"]})
    return {"tta": str(tta), "views": list(views), "rows": rows,
            "gain": rows[1]["accuracy"] - rows[0]["accuracy"], "probs": probs}
