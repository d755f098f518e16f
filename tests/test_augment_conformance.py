"""The invariants every registered transform passes (torchvision's test_transforms_v2 style):
input untouched, dtype and device kept, batch equals its samples, empty batch, pickling,
unknown input types named in a TypeError, declared bounds enforced, records replay."""

import json
import pickle

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment.errors import AugmentParameterError, UnknownNameError
from smartset.errors import SmartsetError

NAMES = aug.available_transforms()


def _images(dtype=torch.uint8, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, 20, 24), generator=g)
    # smooth content plus a bright blob, so geometric transforms have something to move
    x = 0.6 * x + 0.4 * torch.linspace(0, 1, 24).view(1, 1, 1, 24)
    x[:, :, 6:12, 8:15] = 1.0
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


_OPTIONS = {"crop": {"size": (16, 18)}, "resize": {"size": (12, 16)},
            "resized_crop": {"size": (16, 18)}}


def _make(name):
    t = aug.get_transform(name, **_OPTIONS.get(name, {}))
    if name == "featurewise_normalize":
        t.fit(_images(torch.float32, n=8, seed=5))
    return t


def _expected_dtype(t, dtype):
    if t.kind == "normalize" and not dtype.is_floating_point:
        return torch.float32
    return dtype


def test_registry_lists_every_builtin():
    assert {"rotation", "translation", "scale", "shear", "hflip", "vflip", "perspective",
            "elastic", "centering", "crop", "pad", "resize", "brightness", "gamma", "contrast",
            "clahe", "channel_shift", "hue", "saturation", "color_jitter", "gaussian_noise",
            "salt_and_pepper", "gaussian_blur", "box_blur", "median_blur", "smooth",
            "sharpen", "erasing", "rescale", "samplewise_center", "samplewise_std",
            "featurewise_normalize"} <= set(NAMES)


def test_unknown_transform_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="rotation") as info:
        aug.get_transform("rotashun")
    assert isinstance(info.value, ValueError) and isinstance(info.value, SmartsetError)
    with pytest.raises(UnknownNameError, match="degrees"):
        aug.get_transform("rotation", degree=10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_invariants(name, dtype):
    t = _make(name)
    x = _images(dtype)
    before = x.clone()
    params = t.make_params(x.shape, 123)
    out = t.apply(x, params)
    assert torch.equal(x, before), f"{name} changed its input in place"
    assert out.dtype == _expected_dtype(t, dtype)
    assert out.device == x.device
    assert out.shape[:2] == x.shape[:2]
    # the batch gives what its samples give one at a time
    for i in range(len(x)):
        single = t.apply(x[i:i + 1], params.subset([i]))
        assert torch.equal(single[0], out[i]), f"{name}: sample {i} differs alone"
    # same seed, same bits; the parameters are plain JSON and replay
    again = t.apply(x, t.make_params(x.shape, 123))
    assert torch.equal(again, out)
    records = json.loads(json.dumps(params.records()))
    assert torch.equal(t.apply(x, t.params_from_records(records)), out)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    t = _make(name)
    x = _images()[:0]
    out = t(x, seed=0)
    assert out.shape[0] == 0 and out.shape[1] == 3
    assert out.dtype == _expected_dtype(t, torch.uint8)


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip(name):
    t = _make(name)
    clone = pickle.loads(pickle.dumps(t))
    assert clone == t and repr(clone) == repr(t)
    x = _images()
    params = t.make_params(x.shape, 7)
    assert torch.equal(clone.apply(x, params), t.apply(x, params))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_input_type_is_named(name):
    t = _make(name)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        t(np.zeros((2, 3, 8, 8), dtype=np.uint8), seed=0)
    with pytest.raises(TypeError, match="str"):
        t({"image": _images(), "caption": "a digit"}, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_declared_bounds_are_enforced(name):
    from smartset.augment.transforms import transform_class

    cls = transform_class(name)
    for param, bound in {"p": None, **cls.bounds}.items():
        bad = 1.5 if param == "p" else bound.invalid_example()
        with pytest.raises(AugmentParameterError, match=param) as info:
            cls(**{param: bad})
        assert isinstance(info.value, ValueError) and isinstance(info.value, SmartsetError)


@pytest.mark.parametrize("name", [n for n in NAMES if aug.get_transform(n).kind == "geometric"])
def test_geometric_transforms_move_every_target(name):
    t = _make(name)
    x = _images()
    boxes = aug.BoundingBoxes([torch.tensor([[8.0, 6.0, 15.0, 12.0]])] * 4, "xyxy", (20, 24))
    masks = aug.Masks((x[:, :1] == 255).to(torch.uint8))
    points = aug.Keypoints([torch.tensor([[10.0, 8.0]])] * 4, (20, 24))
    out, out_boxes, out_masks, out_points = t((x, boxes, masks, points), seed=3)
    assert out_masks.data.shape[-2:] == out.shape[-2:]
    assert out_masks.data.dtype == torch.uint8
    assert out_boxes.canvas_size == tuple(out.shape[-2:]) == out_points.canvas_size
    assert len(out_boxes) == len(out_points) == 4


def test_dict_and_tuple_structures_are_kept():
    t = aug.Rotation(10)
    x = _images()
    masks = aug.Masks(torch.zeros((4, 1, 20, 24), dtype=torch.int64))
    out = t({"image": x, "mask": masks}, seed=0)
    assert set(out) == {"image", "mask"} and isinstance(out["mask"], aug.Masks)
    assert out["mask"].data.dtype == torch.int64
    pair = t([x, x], seed=0)
    assert isinstance(pair, list) and torch.equal(pair[0], pair[1])


def test_wrong_dimensions_explain_the_fix():
    with pytest.raises(aug.BatchShapeError, match=r"image\[None\]"):
        aug.Rotation(10)(_images()[0], seed=0)


def test_torch_generator_and_numpy_generator_seed():
    t = aug.Rotation(30)
    x = _images()
    a = t(x, seed=torch.Generator().manual_seed(4))
    b = t(x, seed=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    c = t(x, seed=np.random.default_rng(4))
    assert c.shape == a.shape
    with pytest.raises(TypeError, match="seed"):
        t(x, seed="four")
