"""Augmentation: batched, seeded, replayable transforms that move images and their targets.

Functions over ``torch.Tensor`` batches ``N x C x H x W`` (``uint8`` or float; dtype and
device kept) with per-sample parameters; transforms and policies are thin classes over them.

    >>> from smartset import augment as aug
    >>> policy = aug.named_policy("rotation-elastic")        # doctest: +SKIP
    >>> result = aug.augment(images, policy, seed=0)         # doctest: +SKIP
    >>> result.records[3]                                     # doctest: +SKIP
    {'policy': {'named': 'rotation-elastic'}, 'steps': [...]}
    >>> aug.replay(images[3], result.records[3])              # doctest: +SKIP

Names load on first use, so ``import smartset.augment`` (and the CLI) stay fast.
"""

from __future__ import annotations

from smartset._lazy import lazy_exports

_EXPORTS = {
    "smartset.augment.errors": [
        "AugmentError", "AugmentParameterError", "UnknownNameError", "ConstraintError",
        "BatchShapeError", "PolicyFileError", "NotFittedError"],
    "smartset.augment._params": ["Params"],
    "smartset.augment.targets": ["BoundingBoxes", "Masks", "Keypoints"],
    "smartset.augment.transforms": [
        "Transform", "GeometricTransform", "register_transform", "get_transform",
        "available_transforms", "Rotation", "Translation", "Scale", "Shear", "HorizontalFlip",
        "VerticalFlip", "Perspective", "Elastic", "Centering", "RandomCrop", "Pad", "Resize"],
    "smartset.augment._photometric": [
        "Brightness", "Gamma", "Contrast", "CLAHE", "ChannelShift", "Hue", "Saturation",
        "ColorJitter", "GaussianNoise", "SaltAndPepper", "GaussianBlur", "BoxBlur",
        "MedianBlur", "Smooth", "Sharpen", "Erasing", "Rescale", "SamplewiseCenter",
        "SamplewiseStdNormalization", "FeaturewiseNormalizer"],
    "smartset.augment._warps": ["RandomResizedCrop", "GridDistortion", "OpticalDistortion"],
    "smartset.augment._photo": [
        "MotionBlur", "LowResolution", "JpegCompression", "Posterize", "Solarize",
        "AutoContrast", "Equalize", "Color"],
    "smartset.augment.policy": [
        "Policy", "Compose", "OneOf", "SomeOf", "PolicyParams", "AugmentResult", "augment",
        "replay", "named_policy", "available_policies", "NAMED_POLICIES", "TASK_POLICIES",
        "STUDY_FACTORS", "policy_from_spec", "load_policy", "save_policy", "resolve_policy", "Constraints",
        "DOMAIN_CONSTRAINTS", "validate_policy"],
    "smartset.augment.online": ["AugmentedDataset"],
    "smartset.augment.mixing": ["BatchMix", "resolve_mix", "soft_targets"],
    "smartset.augment.offline": ["augment_version", "augment_files", "sample_rng"],
    "smartset.augment.preview": ["preview_grid", "write_preview"],
}

__all__, __getattr__, __dir__ = lazy_exports(
    "smartset.augment", _EXPORTS, {"functional": "smartset.augment.functional"})
