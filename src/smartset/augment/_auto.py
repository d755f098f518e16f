"""Named policies for photos: RandAugment, TrivialAugment and light/strong/degrade mixes
over smartset's own registry (the MNIST study's policies suit digits, not photos).

RandAugment (Cubuk et al. 2020, torchvision's operation table) applies ``n`` operations in
a row, each chosen uniformly (with repetition) at a fixed ``magnitude`` of 30, with a random
sign where the operation has one. It is built as ``n`` slots of :class:`OneOf` over the
operations, so it runs as a fixed list of leaves like any policy: each sample's record
names every operation and marks the chosen ones applied, and replays bit for bit.
TrivialAugment (Mueller & Hutter 2021, the "wide" table) is one slot whose magnitude is
drawn per sample: each operation draws its amount uniformly up to its widest setting.

Differences from torchvision, by design: translations and the trivial magnitudes are
drawn continuously (smartset's transforms draw from ranges) rather than from 31 bins;
TrivialAugment's 32-pixel translation is 14 % of the size (32 of 224) so it also suits
small images; "Sharpness" only sharpens (smartset's ``sharpen``); "Color" leaves
greyscale images as they are.
"""

from __future__ import annotations

import math

from smartset.augment._validation import Bound, check_params
from smartset.augment.errors import AugmentParameterError
from smartset.augment.policy import Compose, OneOf, policy_from_spec, register_policy
from smartset.augment.transforms import get_transform

__all__ = ["rand_augment", "trivial_augment", "PHOTO_POLICIES"]

_MAX_MAGNITUDE = 30


def _signed(name: str, make, m: float) -> list[tuple]:
    """Two entries, +m and -m, each half the weight of an unsigned operation."""
    return [(make(m), 0.5), (make(-m), 0.5)] if m else [(make(0.0), 1.0)]


def _rand_ops(f: float) -> list[tuple]:
    """torchvision's RandAugment table at magnitude fraction ``f`` (0-1): (transform,
    weight) pairs."""
    shear = math.degrees(math.atan(0.3 * f))
    ops = [(get_transform("brightness", factor=(1.0, 1.0)), 1.0)]  # identity
    ops += _signed("shear_x", lambda v: get_transform("shear", degrees=(v, v), axis="x"), shear)
    ops += _signed("shear_y", lambda v: get_transform("shear", degrees=(v, v), axis="y"), shear)
    t = 150 / 331 * f
    ops += [(get_transform("translation", fraction=(t, 0.0)), 1.0),
            (get_transform("translation", fraction=(0.0, t)), 1.0)]
    ops += _signed("rotate", lambda v: get_transform("rotation", degrees=(v, v)), 30 * f)
    for name in ("brightness", "color", "contrast"):
        ops += _signed(name, lambda v, name=name: get_transform(
            name, factor=(1 + v, 1 + v)), 0.9 * f)
    ops.append((get_transform("sharpen", alpha=(0.9 * f, 0.9 * f), lightness=(1.0, 1.0)), 1.0))
    bits = int(8 - round(f * 4))
    ops.append((get_transform("posterize", bits=(bits, bits)), 1.0))
    ops.append((get_transform("solarize", threshold=(1 - f, 1 - f)), 1.0))
    ops.append((get_transform("autocontrast"), 1.0))
    ops.append((get_transform("equalize"), 1.0))
    return ops


def rand_augment(n: int = 2, magnitude: float = 9, *, name: str = "randaugment") -> Compose:
    """RandAugment over smartset's registry: ``n`` operations per sample, chosen uniformly
    with repetition, at ``magnitude`` (0-30, torchvision's scale; default 9)."""
    check_params("randaugment", {"n": n, "magnitude": magnitude},
                 {"n": Bound(1, 10, integer=True), "magnitude": Bound(0, _MAX_MAGNITUDE)})
    slots = []
    for _ in range(int(n)):
        ops = _rand_ops(float(magnitude) / _MAX_MAGNITUDE)
        slots.append(OneOf([t for t, _ in ops], weights=[w for _, w in ops]))
    policy = Compose(slots, name=name)
    policy._named = {"named": name, "n": int(n), "magnitude": magnitude}
    return policy


def trivial_augment(*, name: str = "trivial") -> Compose:
    """TrivialAugment (wide): one operation per sample, chosen uniformly, its amount drawn
    uniformly up to the operation's widest setting."""
    shear = math.degrees(math.atan(0.99))
    ops = [get_transform("brightness", factor=(1.0, 1.0)),  # identity
           get_transform("shear", degrees=shear, axis="x"),
           get_transform("shear", degrees=shear, axis="y"),
           get_transform("translation", fraction=(32 / 224, 0.0)),
           get_transform("translation", fraction=(0.0, 32 / 224)),
           get_transform("rotation", degrees=135.0),
           get_transform("brightness", factor=0.99),
           get_transform("color", factor=0.99),
           get_transform("contrast", factor=0.99),
           get_transform("sharpen", alpha=(0.0, 0.99), lightness=(1.0, 1.0)),
           get_transform("posterize", bits=(2, 8)),
           get_transform("solarize", threshold=(0.0, 1.0)),
           get_transform("autocontrast"),
           get_transform("equalize")]
    policy = Compose([OneOf(ops)], name=name)
    policy._named = {"named": name}
    return policy


#: photo policies given as specs (shown by ``smartset augment list``)
PHOTO_POLICIES = {
    # the torchvision/timm ImageNet recipe, lightly
    "photo-light": {"op": "compose", "name": "photo-light", "transforms": [
        {"op": "resized_crop", "scale": [0.5, 1.0]},
        {"op": "hflip", "p": 0.5},
        {"op": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2,
         "hue": 0.02, "p": 0.8}]},
    # stronger: wider crops, a distortion, colour, a degradation, erasing
    "photo-strong": {"op": "compose", "name": "photo-strong", "transforms": [
        {"op": "resized_crop", "scale": [0.25, 1.0]},
        {"op": "hflip", "p": 0.5},
        {"op": "one_of", "p": 0.3, "transforms": [
            {"op": "grid_distortion"}, {"op": "optical_distortion", "distort_limit": 0.3},
            {"op": "perspective", "distortion": 0.2}]},
        {"op": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
         "hue": 0.1, "p": 0.8},
        {"op": "one_of", "p": 0.3, "transforms": [
            {"op": "motion_blur"}, {"op": "gaussian_blur"}, {"op": "lowres"},
            {"op": "jpeg"}]},
        {"op": "erasing", "p": 0.25}]},
    # the material's degradations: movement, a coarser sensor, re-compression
    "photo-degrade": {"op": "compose", "name": "photo-degrade", "transforms": [
        {"op": "one_of", "transforms": [
            {"op": "motion_blur", "length": [3, 9]}, {"op": "lowres", "scale": [0.25, 0.5]},
            {"op": "jpeg", "quality": [10, 50]}]}]},
}


def _from_spec(key: str):
    def build(**settings):
        if settings:
            raise AugmentParameterError(f"Policy {key!r} takes no settings; write a policy "
                                        f"file to change it (got {sorted(settings)}).")
        policy = policy_from_spec(PHOTO_POLICIES[key])
        policy._named = {"named": key}
        return policy
    return build


def _describe(step: dict) -> str:
    if step["op"] in ("compose", "one_of", "some_of"):
        inner = (" | " if step["op"] == "one_of" else " + ").join(
            _describe(s) for s in step["transforms"])
        inner = inner if step["op"] == "compose" else f"({inner})"
    else:
        inner = step["op"]
    return inner + (f" p={step['p']}" if "p" in step else "")


for _key in PHOTO_POLICIES:
    register_policy(_key, _from_spec(_key), _describe(PHOTO_POLICIES[_key]))
register_policy("randaugment", rand_augment,
                "RandAugment: n=2 operations of 14 at magnitude 9 (of 30); settings n, magnitude")
register_policy("trivial", trivial_augment,
                "TrivialAugment (wide): 1 operation of 14, amount drawn per sample")
