"""The OpenCV kernels of uint8 warps (_opencv_warp.py) against the float path: the same
geometry within OpenCV's fixed-point rounding, a batch equal to its samples on every
path, the same bits with a thread pool, and crops that read their box alone."""

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment import _geometry as geo
from smartset.augment import _opencv_warp

cv2 = pytest.importorskip("cv2")

SIZE = (72, 80)  # above the OpenCV threshold of every path


def _photos(n=6, size=SIZE, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    height, width = size
    ys = torch.linspace(0, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, 1, width)
    phase = torch.rand((n, channels, 1, 1), generator=g) * 6
    smooth = 0.5 + 0.4 * torch.sin(7 * xs + phase) * torch.cos(5 * ys + phase)
    return (smooth * 255).round().to(torch.uint8)


TRANSFORMS = {
    "resized_crop": lambda: aug.RandomResizedCrop((64, 70)),
    "grid_distortion": lambda: aug.GridDistortion(5, distort_limit=0.3),
    "optical_distortion": lambda: aug.OpticalDistortion(0.3, shift_limit=0.05),
    "rotation": lambda: aug.Rotation(25),
    "perspective": lambda: aug.Perspective(0.2),
    "fused": lambda: aug.Compose([aug.Rotation(10), aug.GridDistortion(),
                                  aug.OpticalDistortion(0.2)]),
    "elastic": lambda: aug.Elastic(34, 4),
    # the benchmark's pipeline: the field laid on the output lattice (shifts after it)
    "elastic_fused": lambda: aug.Compose([aug.Rotation(15), aug.Elastic(34, 4),
                                          aug.Translation(0.1)]),
    "elastic_then_rotation": lambda: aug.Compose([aug.Elastic(20, 5), aug.Rotation(20)]),
    "elastic_projective": lambda: aug.Compose([aug.Elastic(20, 5), aug.Perspective(0.2)]),
}


def _one_thread_and_pooled(x, t, seed, monkeypatch):
    """``t`` on ``x`` with one thread, then with two (the OpenCV pool), same seed."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = aug.augment(x, t, seed=seed).output
        monkeypatch.setenv("SMARTSET_THREADS", "2")
        torch.set_num_threads(2)
        pooled = aug.augment(x, t, seed=seed).output
    finally:
        torch.set_num_threads(before)
    return single, pooled


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_uint8_through_opencv_matches_the_float_path(name, channels):
    x = _photos(channels=channels)
    t = TRANSFORMS[name]()
    fast = aug.augment(x, t, seed=3)
    slow = aug.augment(x.float(), t, seed=3)
    assert fast.output.dtype == torch.uint8
    diff = (fast.output.int() - slow.output.round().int()).abs()
    # OpenCV rounds coordinates to 1/32 pixel (up to 1/64 pixel off: a few levels where
    # the image is steep, more where an elastic field compresses it) and weights to 11-15
    # bits
    assert int(diff.max()) <= (6 if name.startswith("elastic") else 4), name
    assert float(diff.float().mean()) < 0.2, name
    assert float((diff > 1).float().mean()) < 0.01, name


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_batch_gives_what_its_samples_give(name):
    x = _photos(n=5)
    t = TRANSFORMS[name]()
    if hasattr(t, "p") and name != "resized_crop":
        t.p = 0.6  # samples of one batch on different paths
    result = aug.augment(x, t, seed=11)
    for i in range(len(x)):
        assert torch.equal(aug.replay(x[i], result.records[i]), result.output[i]), (name, i)


@pytest.mark.parametrize("fill", ["constant", "nearest", "reflect", "wrap"])
def test_fill_modes_match_the_float_path(fill):
    x = _photos(n=3)
    t = aug.Compose([aug.Rotation(40, fill=fill, fill_value=90), aug.Translation(0.3, fill=fill,
                                                                                 fill_value=90)])
    fast = aug.augment(x, t, seed=2).output.int()
    slow = aug.augment(x.float(), t, seed=2).output.round().int()
    assert int((fast - slow).abs().max()) <= 3
    assert float((fast - slow).abs().float().mean()) < 0.3


def test_a_crop_reads_its_box_alone():
    """An upscaled crop touching the border replicates its edge, as torchvision and
    albumentations crop and resize, instead of blending in the fill value."""
    flat = torch.full((4, 3, 30, 40), 200, dtype=torch.uint8)
    t = aug.RandomResizedCrop((60, 60), scale=(0.05, 0.2))
    assert torch.equal(t(flat, seed=0), torch.full((4, 3, 60, 60), 200, dtype=torch.uint8))
    assert torch.allclose(t(flat.float(), seed=0), torch.full((4, 3, 60, 60), 200.0))
    # an interior crop: the float path samples the box, OpenCV's resize of its view agrees
    x = _photos(n=4, size=(30, 40))
    fast = t(x, seed=4).int()
    slow = t(x.float(), seed=4).round().int()
    assert int((fast - slow).abs().max()) <= 1


def test_thread_pool_gives_the_same_bits(monkeypatch):
    x = _photos(n=12)
    t = aug.Compose([aug.Rotation(20), aug.OpticalDistortion(0.3)])
    single, pooled = _one_thread_and_pooled(x, t, 9, monkeypatch)
    assert torch.equal(single, pooled)


def test_separable_fixed_maps_equal_convertmaps():
    rng = np.random.default_rng(0)
    px = np.sort(rng.uniform(-3, 83, 80)).astype(np.float32)
    py = np.sort(rng.uniform(-3, 75, 72)).astype(np.float32)
    px[:3] = [0.015625, 2.5 / 32, 1.5 / 32]  # halves of 1/32 round to even, as OpenCV
    fixed, fraction = _opencv_warp._fixed_separable(px, py)
    full_x = np.ascontiguousarray(np.broadcast_to(px[None, :], (72, 80)))
    full_y = np.ascontiguousarray(np.broadcast_to(py[:, None], (72, 80)))
    want_fixed, want_fraction = cv2.convertMaps(full_x, full_y, cv2.CV_16SC2)
    assert np.array_equal(fixed, want_fixed) and np.array_equal(fraction, want_fraction)


def test_small_images_keep_the_batched_path():
    warp = geo.FusedWarp([aug.Rotation(10).geo_step(
        aug.Rotation(10).make_params((2, 1, 28, 28), 0), (28, 28))])
    assert 28 * 28 < geo._OPENCV_MIN_PIXELS["affine"]
    assert len(warp._paths()["affine"]) == 2


def test_channels_last_and_strided_inputs_give_the_same_bits():
    x = _photos(n=4)
    t = aug.Compose([aug.Rotation(20, p=0.5), aug.GridDistortion(p=0.5)])
    want = aug.augment(x, t, seed=6).output
    for variant in (x.contiguous(memory_format=torch.channels_last),
                    torch.cat([x, x], 3)[..., :x.shape[3]]):
        got = aug.augment(variant, t, seed=6).output
        assert got.is_contiguous() and torch.equal(got, want)


# -- the elastic field's path ---------------------------------------------------------------
ELASTIC = ["elastic", "elastic_fused", "elastic_then_rotation", "elastic_projective"]


def _recorded_maps(monkeypatch, x, t, seed):
    """The source pixels (x, y; n x H x W each) that the field path samples: from the
    OpenCV run's maps, and from the float run's grid_sample grid (align_corners=False)."""
    got, want = [], []
    remap_rows = _opencv_warp.remap_rows

    def spy_remap(x_, out, rows, points, *args, **kwargs):
        mx, my = points(rows)
        got.append(torch.stack([mx, my], -1).clone())
        return remap_rows(x_, out, rows, points, *args, **kwargs)
    grid_sample = geo._grid_sample

    def spy_grid(image, grid, **kwargs):
        height, width = image.shape[-2:]
        pixels = torch.stack([((grid[..., 0] + 1) * width - 1) / 2,
                              ((grid[..., 1] + 1) * height - 1) / 2], -1)
        want.append(pixels.clone())
        return grid_sample(image, grid, **kwargs)
    monkeypatch.setattr(_opencv_warp, "remap_rows", spy_remap)
    monkeypatch.setattr(geo, "_grid_sample", spy_grid)
    fast = aug.augment(x, t, seed=seed).output
    slow = aug.augment(x.float(), t, seed=seed).output
    return fast, slow, torch.cat(got), torch.cat(want)


@pytest.mark.parametrize("name", ELASTIC)
def test_the_field_maps_are_the_float_paths_maps_in_pixels(monkeypatch, name):
    """OpenCV takes absolute source pixels (centres at integers), grid_sample normalised
    coordinates: the same map in each convention, to float rounding. (Reading the field
    at each pixel's own point instead, as the mesh path does, is another map: a field
    followed by a shift is read elsewhere, up to 255 levels off.)"""
    x = _photos(n=4)
    fast, slow, got, want = _recorded_maps(monkeypatch, x, TRANSFORMS[name](), seed=5)
    assert got.shape == want.shape == (4, *SIZE, 2)
    assert float((got - want).abs().max()) < 2e-3
    diff = (fast.int() - slow.round().int()).abs()  # float maps: rounding of the weights
    assert int(diff.max()) <= 2 and float((diff <= 1).float().mean()) > 0.999


def test_field_rows_use_opencv_only_from_64_by_64(monkeypatch):
    calls = []
    remap_rows = _opencv_warp.remap_rows

    def spy(*args, **kwargs):
        calls.append(len(args[2]))
        return remap_rows(*args, **kwargs)
    monkeypatch.setattr(_opencv_warp, "remap_rows", spy)
    t = aug.Compose([aug.Rotation(15), aug.Elastic(34, 4), aug.Translation(0.1)])
    small = aug.augment(_photos(n=3, size=(28, 28)), t, seed=0).output
    assert calls == [] and small.dtype == torch.uint8
    aug.augment(_photos(n=3, size=(64, 64)), t, seed=0)
    assert calls == [3]
    aug.augment(_photos(n=3, size=(64, 64)).float(), t, seed=0)  # float: grid_sample
    assert calls == [3]


@pytest.mark.parametrize("fill", ["constant", "nearest", "reflect", "wrap"])
def test_field_fill_modes_match_the_float_path(fill):
    x = _photos(n=3)
    t = aug.Compose([aug.Rotation(30, fill=fill, fill_value=90),
                     aug.Elastic(34, 4, fill=fill, fill_value=90),
                     aug.Translation(0.2, fill=fill, fill_value=90)])
    fast = aug.augment(x, t, seed=2).output.int()
    slow = aug.augment(x.float(), t, seed=2).output.round().int()
    diff = (fast - slow).abs()
    assert int(diff.max()) <= 4, fill
    assert float((diff <= 1).float().mean()) > 0.99, fill


def test_field_targets_move_alike_for_uint8_and_float_images():
    """Boxes and keypoints follow the same parameters whichever path the image takes, and
    still bound the moved object."""
    image = torch.zeros((2, 1, 96, 96), dtype=torch.uint8)
    image[..., 30:60, 25:70] = 255
    boxes = aug.BoundingBoxes([torch.tensor([[25.0, 30.0, 70.0, 60.0]])] * 2, "xyxy", (96, 96))
    points = aug.Keypoints([torch.tensor([[25.0, 30.0], [70.0, 60.0]])] * 2, (96, 96))
    t = aug.Compose([aug.Rotation(15), aug.Elastic(20, 6), aug.Translation(0.1)])
    out, moved, moved_points = t((image, boxes, points), seed=1)
    out_f, moved_f, moved_points_f = t((image.float(), boxes, points), seed=1)
    for a, b in zip(moved.boxes + moved_points.points, moved_f.boxes + moved_points_f.points):
        assert torch.equal(a, b)
    for i in range(2):
        ys, xs = torch.nonzero(out[i, 0] > 127, as_tuple=True)
        shape = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        box = moved.boxes[i][0].tolist()
        assert all(abs(a - b) <= 3 for a, b in zip(box, shape)), (box, shape)
    assert int((out.int() - out_f.round().int()).abs().max()) <= 8  # a hard edge


def test_field_thread_pool_and_blocks_give_the_same_bits(monkeypatch):
    x = _photos(n=13)
    t = aug.Compose([aug.Rotation(15), aug.Elastic(34, 4), aug.Translation(0.1)])
    single, pooled = _one_thread_and_pooled(x, t, 8, monkeypatch)
    assert torch.equal(single, pooled)
    remap_rows = _opencv_warp.remap_rows
    monkeypatch.setattr(_opencv_warp, "remap_rows", lambda *a, **k: remap_rows(
        *a, **{**k, "block_pixels": 1}))  # one image per block
    assert torch.equal(aug.augment(x, t, seed=8).output, single)


@pytest.mark.parametrize("name", ["rotation", "grid_distortion", "elastic_fused"])
def test_three_channels_sampled_as_four_give_each_channels_own_values(name):
    """A 3-channel group is warped as 4 channels (faster in OpenCV 5): each channel equals
    that channel warped alone."""
    x = _photos(n=3, channels=3)
    t = TRANSFORMS[name]()
    together = aug.augment(x, t, seed=4).output
    for c in range(3):
        alone = aug.augment(x[:, c:c + 1].contiguous(), t, seed=4).output
        assert torch.equal(together[:, c:c + 1], alone), (name, c)
