"""Geometry against references: OpenCV's warpAffine, the Keras fill patterns, boxes around
moved shapes, masks and keypoints in step, centering, fusion, the elastic field."""

import math

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment import _geometry as geo
from smartset.augment import functional as fn
from smartset.augment._params import Params

cv2 = pytest.importorskip("cv2")

BORDERS = {"constant": cv2.BORDER_CONSTANT, "nearest": cv2.BORDER_REPLICATE,
           "reflect": cv2.BORDER_REFLECT, "wrap": cv2.BORDER_WRAP}


def _smooth_image(height=40, width=52, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, channels), np.float32)
    for c in range(channels):
        fx, fy, phase = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0, 6)
        image[..., c] = 0.5 + 0.4 * np.sin(fx * xs + phase) * np.cos(fy * ys)
    return image


@pytest.mark.parametrize("fill", list(BORDERS))
def test_rotation_matches_opencv_warpaffine(fill):
    image = _smooth_image()
    height, width = image.shape[:2]
    center = ((width - 1) / 2, (height - 1) / 2)
    for angle in (-37.0, 12.5, 90.0):
        matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
        expected = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=BORDERS[fill], borderValue=(0.25, 0.25, 0.25))
        x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
        got = fn.rotate(x, angle, fill=fill, fill_value=0.25)[0].numpy().transpose(1, 2, 0)
        # OpenCV quantises coordinates to 1/32 pixel: a small difference on a smooth image
        assert np.abs(got - expected).max() < 0.02, (fill, angle)
        assert np.abs(got - expected).mean() < 0.003


def test_composed_affine_matches_opencv_and_the_transform_path():
    image = (_smooth_image(channels=1)[..., 0] * 255).round().astype(np.uint8)
    height, width = image.shape
    center = ((width - 1) / 2, (height - 1) / 2)
    rot = np.vstack([cv2.getRotationMatrix2D(center, 20.0, 1.0), [0, 0, 1]])
    shear = geo.shear_matrix(np.array([12.0]), np.array([0.0]), center)[0]
    scale = geo.scale_matrix(np.array([1.15]), np.array([0.9]), center)[0]
    shift = geo.translation_matrix(np.array([3.5]), np.array([-2.25]))[0]
    forward = shift @ scale @ shear @ rot  # rotation first, then shear, scale, shift
    expected = cv2.warpAffine(image, forward[:2], (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = torch.from_numpy(image)[None, None]
    got = fn.affine(x, forward)[0, 0].numpy().astype(int)
    assert np.abs(got - expected).max() <= 2
    # the same four steps as transforms with fixed parameters fuse into one resampling
    steps = [(aug.Rotation(), Params(1, {"angle": np.array([20.0])})),
             (aug.Shear(), Params(1, {"shx": np.array([12.0]), "shy": np.array([0.0])})),
             (aug.Scale(isotropic=False), Params(1, {"sx": np.array([1.15]), "sy": np.array([0.9])})),
             (aug.Translation(), Params(1, {"tx": np.array([3.5]), "ty": np.array([-2.25])}))]
    from smartset.augment._plan import run_steps

    fused, _ = run_steps(steps, x)
    assert np.abs(fused[0, 0].numpy().astype(int) - expected).max() <= 2


@pytest.mark.parametrize("fill, left, right", [
    # ramp a..h = 1..8, shifted by 3 pixels right (left side) and 3 left (right side)
    ("constant", [9, 9, 9], [9, 9, 9]),          # kkkk|abcd|kkkk
    ("nearest", [1, 1, 1], [8, 8, 8]),           # aaaa|abcd|dddd
    ("reflect", [3, 2, 1], [8, 7, 6]),           # abcddcba|abcd|dcbaabcd
    ("wrap", [6, 7, 8], [1, 2, 3]),              # abcdabcd|abcd|abcdabcd
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_fill_modes_reproduce_keras_patterns(fill, left, right, dtype):
    ramp = torch.arange(1, 9, dtype=dtype).view(1, 1, 1, 8)
    shifted_right = fn.translate(ramp, 3, 0, fill=fill, fill_value=9)[0, 0, 0].tolist()
    assert shifted_right == left + [1, 2, 3, 4, 5]
    shifted_left = fn.translate(ramp, -3, 0, fill=fill, fill_value=9)[0, 0, 0].tolist()
    assert shifted_left == [4, 5, 6, 7, 8] + right


def test_fill_modes_far_outside_and_between_pixels():
    ramp = torch.arange(1, 5, dtype=torch.float32).view(1, 1, 1, 4)  # abcd
    far = {fill: fn.translate(ramp, 8, 0, fill=fill)[0, 0, 0].tolist()
           for fill in ("nearest", "reflect", "wrap")}
    assert far["nearest"] == [1, 1, 1, 1]
    assert far["reflect"] == [1, 2, 3, 4]  # dcbaabcd repeats with period 8
    assert far["wrap"] == [1, 2, 3, 4]
    # half a pixel: bilinear blends with the fill value at the edge
    half = fn.translate(ramp, 0.5, 0, fill="constant", fill_value=0)[0, 0, 0].tolist()
    assert half == pytest.approx([0.5, 1.5, 2.5, 3.5])
    half = fn.translate(ramp, 0.5, 0, fill="reflect")[0, 0, 0].tolist()
    assert half == pytest.approx([1.0, 1.5, 2.5, 3.5])
    half = fn.translate(ramp, 0.5, 0, fill="wrap")[0, 0, 0].tolist()
    assert half == pytest.approx([2.5, 1.5, 2.5, 3.5])


def _rectangle(height=64, width=64, box=(14, 20, 38, 33)):
    """A filled rectangle (x1, y1, x2, y2 in pixel edges) on black."""
    image = torch.zeros((1, 1, height, width), dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[..., y1:y2, x1:x2] = 255
    return image, aug.BoundingBoxes([torch.tensor([box], dtype=torch.float32)], "xyxy",
                                    (height, width))


def _object_box(image):
    ys, xs = torch.nonzero(image[0, 0] > 127, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("policy", [
    aug.Rotation(degrees=(33, 33)), aug.Rotation(degrees=(-70, -70)), aug.HorizontalFlip(p=1),
    aug.VerticalFlip(p=1), aug.Shear(degrees=(25, 25)), aug.Shear(degrees=(-20, -20), axis="y"),
    aug.Scale(factor=(1.3, 1.3)), aug.Perspective(0.3),
    aug.Compose([aug.Rotation(25), aug.Shear(15), aug.Translation(0.1), aug.HorizontalFlip()]),
])
def test_boxes_bound_the_moved_rectangle(policy):
    image, boxes = _rectangle()
    out, moved = policy((image, boxes), seed=11)
    (box,) = moved.boxes[0].tolist()
    shape = _object_box(out)
    assert all(abs(a - b) <= 2 for a, b in zip(box, shape)), (box, shape)


def test_a_sample_without_boxes_rides_along():
    images = torch.zeros((2, 1, 64, 64), dtype=torch.uint8)
    boxes = aug.BoundingBoxes([torch.zeros((0, 4)), torch.tensor([[14.0, 20.0, 38.0, 33.0]])],
                              "xyxy", (64, 64))
    _, moved = aug.Rotation(degrees=(20, 20))((images, boxes), seed=0)
    assert moved.boxes[0].shape == (0, 4) and moved.boxes[1].shape == (1, 4)


def test_boxes_through_elastic_and_clipping():
    image, boxes = _rectangle()
    out, moved = aug.named_policy("rotation-elastic")((image, boxes), seed=5)
    (box,) = moved.boxes[0].tolist()
    shape = _object_box(out)
    assert all(abs(a - b) <= 2 for a, b in zip(box, shape)), (box, shape)
    # a box pushed mostly out of the canvas is clipped, then dropped below the visibility
    edge = aug.BoundingBoxes([torch.tensor([[2.0, 2.0, 12.0, 12.0], [20.0, 20.0, 40.0, 40.0]])],
                             "xyxy", (64, 64), labels=[torch.tensor([7, 8])], min_visibility=0.5)
    shift = aug.Translation(pixels=0)
    params = Params(1, {"tx": np.array([-8.0]), "ty": np.array([0.0])})
    kept = shift.apply(edge, params)
    assert kept.boxes[0].tolist() == [[12.0, 20.0, 32.0, 40.0]]
    assert kept.labels[0].tolist() == [8]
    loose = aug.BoundingBoxes(edge.boxes, "xyxy", (64, 64), min_visibility=0.0)
    assert shift.apply(loose, params).boxes[0].tolist()[0] == [0.0, 2.0, 4.0, 12.0]
    centred = aug.BoundingBoxes([torch.tensor([[30.0, 30.0, 10.0, 4.0]])], "cxcywh", (64, 64))
    moved = shift.apply(centred, params)
    assert moved.format == "cxcywh" and moved.boxes[0].tolist() == [[22.0, 30.0, 10.0, 4.0]]


def test_masks_and_keypoints_move_with_the_image():
    image, boxes = _rectangle()
    mask = aug.Masks((image > 0).to(torch.int64) * 3)
    corners = aug.Keypoints([torch.tensor([[14.0, 20.0], [37.0, 32.0]])], (64, 64))
    policy = aug.Compose([aug.Rotation(40), aug.Elastic(alpha=20, sigma=5), aug.Translation(0.1)])
    out, out_mask, out_points = policy((image, mask, corners), seed=2)
    assert set(out_mask.data.unique().tolist()) <= {0, 3}  # nearest: no blended labels
    on_image, on_mask = out[0, 0] > 127, out_mask.data[0, 0] == 3
    iou = (on_image & on_mask).sum() / (on_image | on_mask).sum()
    assert iou > 0.9
    for x, y in out_points.points[0].tolist():  # corner pixels stay on the object's rim
        assert out[0, 0, round(y), round(x)] > 60 or on_mask[round(y), round(x)]


def test_keypoints_follow_an_affine_exactly():
    points = aug.Keypoints([torch.tensor([[5.0, 7.0], [40.0, 50.0]])], (64, 64))
    params = Params(1, {"angle": np.array([30.0])})
    moved = aug.Rotation().apply(points, params).points[0].numpy()
    matrix = cv2.getRotationMatrix2D((31.5, 31.5), 30.0, 1.0)
    expected = np.array([[5.0, 7.0, 1], [40.0, 50.0, 1]]) @ matrix.T
    assert np.allclose(moved, expected, atol=1e-4)


def test_centering_puts_the_centre_of_mass_in_the_middle():
    blob = torch.zeros((3, 1, 28, 28), dtype=torch.uint8)
    blob[0, 0, 2:9, 3:8] = 255
    blob[1, 0, 15:26, 18:27] = 200
    blob[2, 0, 5:12, 14:24] = 120
    for policy in (aug.Centering(), aug.named_policy("rotation-centering"),
                   aug.named_policy("rotation-elastic-centering")):
        result = aug.augment(blob, policy, seed=1)
        com = geo.center_of_mass(result.output)
        assert np.abs(com - 13.5).max() < 0.5, (policy, com)
        # the measured shift is recorded and replays
        for i in range(3):
            assert torch.equal(aug.replay(blob[i], result.records[i]), result.output[i])


def test_centering_of_real_digits(shared_data):
    with np.load(shared_data / "mnist10k.npz") as archive:
        digits = torch.from_numpy(archive["images"][:64, None].copy())
    shifted = fn.translate(digits, 3.0, -2.0)
    com = geo.center_of_mass(aug.Centering()(shifted))
    assert np.abs(com - 13.5).max() < 0.5


def test_fused_resampling_is_one_sampling_and_close_to_sequential():
    image = torch.from_numpy(_smooth_image(channels=1).transpose(2, 0, 1).copy())[None]
    policy = aug.Compose([aug.Rotation(20), aug.Translation(0.05), aug.Scale((0.9, 1.1))])
    result = aug.augment(image, policy, seed=3)
    sequential = image
    for leaf, params in zip(policy.leaves(), result.params.params):
        sequential = leaf.apply(sequential, params)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    difference = (result.output - sequential)[inner].abs()
    assert difference.max() < 0.05  # sequential blurs three times; fused samples once
    # and fusing matches the single composed matrix
    forward = np.linalg.inv(geo.FusedWarp([leaf.geo_step(p, (40, 52)) for leaf, p in
                                           zip(policy.leaves(), result.params.params)]).affine[0])
    assert torch.allclose(fn.affine(image, forward), result.output, atol=1e-4)


def test_flips_and_whole_pixel_shifts_are_exact_for_floats():
    x = torch.rand((2, 3, 9, 11), dtype=torch.float64)
    flipped = aug.HorizontalFlip(p=1)(x, seed=0)
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(aug.VerticalFlip(p=1)(x, seed=0), x.flip(-2))
    assert torch.equal(fn.translate(x, 2, -1)[..., :-1, 2:], x[..., 1:, :-2])


def test_elastic_field_statistics_match_simard():
    """Displacement std of the lattice field against the full-resolution definition:
    alpha * sqrt(1/3 * sum g^2) for a normalised Gaussian kernel g (uniform noise)."""
    n, size, alpha, sigma = 400, 28, 34.0, 4.0
    step = geo.GeoStep("field", (size, size), (size, size), np.ones(n, bool),
                       alpha=np.full(n, alpha), sigma=sigma, streams=np.full(n, 3),
                       indices=np.arange(n))
    lattice = geo.field_lattice(step, torch.device("cpu"))
    x = np.arange(-math.ceil(4 * sigma), math.ceil(4 * sigma) + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    expected = alpha * math.sqrt((k ** 2).sum() ** 2 / 3)
    assert lattice.std().item() == pytest.approx(expected, rel=0.06)
    # the field replays: any subset of samples, drawn alone, gives the same values
    part = geo.field_lattice(step.subset(np.array([5, 17])), torch.device("cpu"))
    assert torch.equal(part, lattice[[5, 17]])


def test_stream_noise_replays_any_slot():
    from smartset.augment._noise import stream_normal, stream_odd11, stream_uniform

    streams, indices = np.full(6, 99), np.arange(6)
    full = stream_uniform(streams, indices, 10)
    for i in range(6):
        assert np.array_equal(stream_uniform(streams[i:i + 1], indices[i:i + 1], 10)[0], full[i])
    assert np.array_equal(stream_odd11(streams[[4, 1]], indices[[4, 1]], 13),
                          stream_odd11(streams, indices, 13)[[4, 1]])
    z = stream_normal(np.full(2000, 5), np.arange(2000), 64)
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02


def test_mixed_canvas_sizes_in_one_batch_are_refused():
    x = torch.zeros((2, 1, 10, 10), dtype=torch.uint8)
    boxes = aug.BoundingBoxes([torch.zeros((0, 4))] * 2, "xyxy", (12, 10))
    with pytest.raises(aug.BatchShapeError, match="canvas"):
        aug.Rotation()((x, boxes), seed=0)


def test_crop_pad_resize_change_the_canvas():
    x = torch.arange(36, dtype=torch.float32).view(1, 1, 6, 6)
    padded = aug.Pad(2, fill="reflect")(x, seed=0)
    assert padded.shape[-2:] == (10, 10)
    assert torch.equal(padded[..., 2:8, 2:8], x)
    assert torch.equal(padded[..., 2:8, 1], x[..., :, 0])  # reflect repeats the edge
    cropped = aug.RandomCrop(4)(x, seed=0)
    assert cropped.shape[-2:] == (4, 4)
    resized = aug.Resize((3, 3))(x, seed=0)
    assert resized.shape[-2:] == (3, 3)
    assert resized[0, 0, 1, 1].item() == pytest.approx(x[0, 0, 2:4, 2:4].mean().item())


@pytest.mark.parametrize("policy", [
    aug.Compose([aug.Elastic(), aug.Rotation(20)]),             # field read between nodes
    aug.Compose([aug.Perspective(0.2), aug.Elastic(), aug.Translation()]),  # projective
    aug.Compose([aug.Elastic(sigma=3), aug.Elastic(sigma=6)]),  # two fields
    aug.Compose([aug.Translation(), aug.Elastic(), aug.Centering(), aug.Scale()]),
    aug.Compose([aug.Elastic(p=0.5), aug.Rotation(10, p=0.5), aug.Translation(p=0.5)]),
])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_every_fused_path_gives_a_batch_what_its_samples_give(policy, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.rand((7, 2, 30, 34), generator=g)
    x = (x * 255).round().to(dtype) if dtype == torch.uint8 else x
    result = aug.augment(x, policy, seed=5)
    for i in range(len(x)):
        assert torch.equal(aug.replay(x[i], result.records[i]), result.output[i])


def test_half_way_values_round_alike_in_any_batch():
    """Half a pixel between 1 and 2 is exactly 1.5: every path rounds it the same way, so a
    sample gives the same byte alone and among samples that take other paths."""
    x = torch.tensor([1, 2, 1, 2, 1, 2], dtype=torch.uint8).view(1, 1, 1, 6)
    x = x.expand(4, 1, 3, 6).contiguous()
    shift = aug.Translation(fill="nearest")
    params = Params(4, {"applied": np.array([True, False, True, False]),
                        "tx": np.full(4, 0.5), "ty": np.zeros(4)})
    batch = shift.apply(x, params)
    for i in range(4):
        assert torch.equal(shift.apply(x[i:i + 1], params.subset([i]))[0], batch[i])
    assert batch[0, 0, 0].tolist() == [1, 2, 2, 2, 2, 2]  # 1.5 rounds half up


def test_same_on_batch_draws_once():
    params = aug.Rotation(30, same_on_batch=True).make_params((5, 1, 8, 8), 0)
    assert len(set(params["angle"].tolist())) == 1
    params = aug.Elastic(same_on_batch=True).make_params((3, 1, 8, 8), 0)
    assert set(params["index"].tolist()) == {0}
