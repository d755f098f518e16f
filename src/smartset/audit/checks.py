"""Per-image checks: a registry of named rules over the property table.

Each check reads one property and flags images on one side of a threshold. The threshold
adapts to the data set: an image is flagged only if it is beyond the check's absolute limit
AND unusual for this data set (beyond a robust fence: median +/- k x 1.4826 x MAD), so a
night-time data set is not all "too dark" and MNIST is not all "low information". A
threshold given by the user replaces both. Checks register the way a plugin would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Check", "CHECKS", "register_check", "run_checks", "robust_fence"]


@dataclass(frozen=True)
class Check:
    """A rule: ``property`` beyond a threshold on the ``direction`` side is an issue."""

    name: str
    property: str
    direction: str  # "low": small values are bad; "high": large values are bad
    absolute: float
    reason: Callable[[pd.Series, float], str]
    fence_k: float = 3.0
    description: str = ""
    applies: Callable[[pd.DataFrame], str | None] = lambda properties: None
    """Returns why the check does not apply to this data set, or None when it does."""


CHECKS: dict[str, Check] = {}


def register_check(check: Check) -> Check:
    if check.direction not in ("low", "high"):
        raise ValueError(f"check {check.name!r}: direction must be 'low' or 'high'")
    CHECKS[check.name] = check
    return check


def robust_fence(values, direction: str, k: float) -> float:
    """``median -/+ k`` robust standard deviations (1.4826 x MAD) of ``values``."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]  # a copy: worked on in place below
    if not values.size:
        return math.nan
    median = float(np.median(values))
    np.abs(np.subtract(values, median, out=values), out=values)
    spread = 1.4826 * float(np.median(values, overwrite_input=True))
    return median - k * spread if direction == "low" else median + k * spread


def run_checks(properties: pd.DataFrame, thresholds: dict[str, float] | None = None, *,
               max_share: float = 0.1) -> tuple[list[dict], dict]:
    """Apply every registered check to ``properties`` (one row per sample, ``id`` column).

    A check's absolute limit is used as it is unless it would flag more than
    ``max_share`` of the data set; then the threshold moves out to the robust fence.

    Returns ``(findings, used)``: findings as dicts (kind, sample_id, score, threshold,
    reason), and per check the threshold used and how it was set, or why it was skipped.
    """
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)} in thresholds; checks: "
                         f"{', '.join(sorted(CHECKS))}")
    findings, used = [], {}
    for check in CHECKS.values():
        values = properties[check.property].astype(float)
        skip = check.applies(properties)
        if skip:
            used[check.name] = {"skipped": skip}
            continue
        fence = robust_fence(values, check.direction, check.fence_k)
        beyond = values < check.absolute if check.direction == "low" else values > check.absolute
        if check.name in thresholds:
            threshold, how = float(thresholds[check.name]), "given"
        elif beyond.mean() <= max_share or math.isnan(fence):
            threshold, how = check.absolute, "absolute limit"
        else:
            # The absolute limit would flag a large share: that is how this data set looks
            # (digits are dark, night shots are dark); flag only what is unusual in it.
            pick = min if check.direction == "low" else max
            threshold, how = pick(check.absolute, fence), "robust fence"
        flagged = values < threshold if check.direction == "low" else values > threshold
        used[check.name] = {"property": check.property, "direction": check.direction,
                            "threshold": threshold, "set_by": how, "absolute": check.absolute,
                            "fence": None if math.isnan(fence) else fence,
                            "flagged": int(flagged.sum())}
        rows = np.flatnonzero(flagged.fillna(False).to_numpy(dtype=bool))
        for _, row in properties.take(rows).iterrows():
            findings.append({"kind": check.name, "sample_id": row["id"],
                             "score": float(row[check.property]), "threshold": threshold,
                             "reason": check.reason(row, threshold)})
    return findings, used


def _colour_majority(properties: pd.DataFrame) -> str | None:
    share = float(properties["grayscale"].mean()) if len(properties) else 1.0
    if share >= 0.5:
        return f"{share:.0%} of the images are grayscale: a grayscale data set"
    return None


register_check(Check(
    "dark", "brightness_p99", "low", 0.30,
    lambda r, t: f"too dark: even its brightest pixels reach only {r.brightness_p99:.2f} (limit {t:.2f})",
    description="the brightest 1% of pixels are dim"))
register_check(Check(
    "bright", "brightness_p01", "high", 0.68,
    lambda r, t: f"too bright: even its darkest pixels are at {r.brightness_p01:.2f} (limit {t:.2f})",
    description="the darkest 1% of pixels are bright (overexposed or washed out)"))
register_check(Check(
    "blurry", "sharpness", "low", 1.6,
    lambda r, t: f"blurry: sharpness {r.sharpness:.2f} below {t:.2f} (log variance of the Laplacian)",
    description="little fine detail at the normalised size"))
register_check(Check(
    "low_information", "entropy", "low", 1.6,
    lambda r, t: f"low information: brightness entropy {r.entropy:.2f} bits below {t:.2f}",
    description="few distinct brightness levels: flat, blank or posterised"))
register_check(Check(
    "odd_size", "size_ratio", "high", 2.0,
    lambda r, t: (f"odd size: {int(r.width)}x{int(r.height)} pixels, area "
                  f"{10 ** r.size_ratio:.0f}x {'larger' if r.larger else 'smaller'} than the "
                  f"median image (limit {10 ** t:.0f}x)"),
    description="image area far from the data set's median area"))
register_check(Check(
    "odd_aspect_ratio", "aspect_skew", "high", math.log(3.0),
    lambda r, t: (f"odd aspect ratio: {int(r.width)}x{int(r.height)} "
                  f"({math.exp(r.aspect_skew):.1f}:1, limit {math.exp(t):.1f}:1)"),
    description="far from square"))
register_check(Check(
    "grayscale", "grayscale", "high", 0.5,
    lambda r, t: "grayscale image in a colour data set", fence_k=0.0,
    description="no colour, while most images have colour", applies=_colour_majority))


def add_derived_properties(properties: pd.DataFrame, *, inplace: bool = False) -> pd.DataFrame:
    """Columns the checks read that come from the catalog's width and height (on a copy,
    unless ``inplace``)."""
    if not inplace:
        properties = properties.copy()
    derived = derived_properties(properties["width"].to_numpy(dtype=float),
                                 properties["height"].to_numpy(dtype=float))
    for name, values in derived.items():
        properties[name] = values
    return properties


def derived_properties(width: np.ndarray, height: np.ndarray) -> dict[str, np.ndarray]:
    """``size_ratio`` (|log10| of the area over the median area), ``larger`` (bool),
    ``aspect_skew`` (|log| of width over height), ``aspect_ratio`` and ``megapixels``, from
    width and height arrays."""
    area = width * height
    median = np.nanmedian(area) if np.isfinite(area).any() else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log10(area / median)
        aspect_ratio = width / height
        aspect_skew = np.abs(np.log(aspect_ratio))
    return {"size_ratio": np.abs(log_ratio), "larger": log_ratio > 0, "aspect_skew": aspect_skew,
            "aspect_ratio": aspect_ratio, "megapixels": area / 1e6}
