"""The photo transforms of issue #22: what each computes (against PIL or a hand-made case),
that boxes follow the content through the new geometric ones, the photo policies
(RandAugment, TrivialAugment) and MixUp/CutMix. The conformance suite covers the shared
invariants (batch = samples, dtype, replay, pickling) of every registered transform."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import smartset.augment as aug
from smartset.augment import functional as fn
from smartset.augment.errors import AugmentParameterError, BatchShapeError


def _photo(n=4, seed=0, size=(32, 40)):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, 3, *size), generator=g) * 255).round().to(torch.uint8)


def _square(n=4, size=(40, 50), box=(15, 10, 30, 20)):
    x = torch.zeros((n, 1, *size), dtype=torch.uint8)
    x1, y1, x2, y2 = box
    x[:, :, y1:y2, x1:x2] = 255
    boxes = aug.BoundingBoxes([torch.tensor([[float(v) for v in box]])] * n, "xyxy", size)
    return x, boxes


# -- kernels -------------------------------------------------------------------------------
def test_motion_blur_spreads_a_point_along_a_line_of_its_length():
    x = torch.zeros((2, 1, 21, 21), dtype=torch.float32)
    x[:, :, 10, 10] = 1.0
    out = fn.motion_blur(x, [7, 5], [0.0, 90.0])
    horizontal, vertical = out[0, 0], out[1, 0]
    assert torch.allclose(horizontal[10, 7:14], torch.full((7,), 1 / 7))
    assert float(horizontal.sum()) == pytest.approx(1.0)
    assert torch.allclose(vertical[8:13, 10], torch.full((5,), 1 / 5))
    assert float(vertical[10, 9]) == 0.0


def test_motion_blur_of_uint8_is_the_exact_rounded_mean():
    x = _photo(2)
    out = fn.motion_blur(x, 3, 0.0)
    padded = x.to(torch.int64)
    expected = (padded[..., 5:6, 9] + padded[..., 5:6, 10] + padded[..., 5:6, 11] + 1) // 3
    assert torch.equal(out[..., 5:6, 10].to(torch.int64), expected)


def test_lowres_at_scale_one_is_the_identity_and_lower_loses_detail():
    x = _photo(3)
    assert torch.equal(fn.downscale(x, 1.0), x)
    low = fn.downscale(x.float() / 255, 0.25)
    high = fn.downscale(x.float() / 255, 0.75)
    reference = x.float() / 255
    assert float((low - reference).abs().mean()) > float((high - reference).abs().mean())
    # a constant image stays constant through any resolution
    flat = torch.full((1, 1, 28, 28), 0.5)
    assert torch.allclose(fn.downscale(flat, 0.3), flat)


def test_jpeg_quality_orders_the_error_and_matches_opencv():
    import cv2

    x = torch.from_numpy(np.load(_mnist())["images"][:8]).unsqueeze(1)
    errors = [float((fn.jpeg(x, q).float() - x.float()).abs().mean()) for q in (5, 40, 95)]
    assert errors[0] > errors[1] > errors[2] > 0
    ok, data = cv2.imencode(".jpg", x[0, 0].numpy(), [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert np.array_equal(fn.jpeg(x[:1], 40)[0, 0].numpy(), cv2.imdecode(data, 0))
    with pytest.raises(aug.BatchShapeError, match="1 or 3"):
        aug.JpegCompression()(torch.zeros((1, 2, 8, 8), dtype=torch.uint8), seed=0)


def test_jpeg_of_rgb_photos_is_opencvs_round_trip_of_the_bgr_image():
    """Colour planes go to the codec as BGR (merge) and come back split into RGB planes:
    the pixels are those of encoding the BGR image and decoding it, on real photos, large
    (the thread pool) and small."""
    import cv2

    photos = _photos(16, (96, 80))
    for x in (photos, photos[:3, :, :20, :28]):
        x = x.contiguous()
        qualities = np.arange(len(x)) * 7 + 10
        out = fn.jpeg(x, qualities)
        for image, q, got in zip(x, qualities, out):
            bgr = np.ascontiguousarray(image.permute(1, 2, 0).numpy()[..., ::-1])
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
            expected = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
            assert np.array_equal(got.permute(1, 2, 0).numpy(), expected)


def _photos(n, size):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "guns-smartphones"
    paths = sorted(root.glob("train/*/*.jpg"))[:n]
    if len(paths) < n:
        pytest.skip("shared/data/guns-smartphones is not beside the repository")
    images = [np.asarray(Image.open(p).convert("RGB").resize(size[::-1])) for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def _mnist():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist10k.npz"
    if not path.exists():
        pytest.skip("shared/data/mnist10k.npz is not beside the repository")
    return path


@pytest.mark.parametrize("name, pil", [
    ("equalize", ImageOps.equalize),
    ("posterize", lambda im: ImageOps.posterize(im, 3)),
    ("solarize", lambda im: ImageOps.solarize(im, 128)),
])
def test_colour_operations_match_pil(name, pil):
    x = _photo(2, seed=3)
    x[1] = (x[1] // 3) + 40  # a narrower histogram
    kernels = {"equalize": lambda t: fn.equalize(t), "posterize": lambda t: fn.posterize(t, 3),
               "solarize": lambda t: fn.solarize(t, 128 / 255)}
    out = kernels[name](x)
    for i in range(len(x)):
        image = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        expected = np.asarray(pil(image))
        assert np.array_equal(out[i].permute(1, 2, 0).numpy(), expected), name


def test_autocontrast_stretches_each_channel_to_the_full_range():
    x = (_photo(2) // 2) + 50
    out = fn.autocontrast(x)
    assert out.amin((2, 3)).eq(0).all() and out.amax((2, 3)).eq(255).all()
    flat = torch.full((1, 3, 4, 4), 77, dtype=torch.uint8)
    assert torch.equal(fn.autocontrast(flat), flat)


def test_color_leaves_greyscale_unchanged():
    grey = _photo(2)[:, :1]
    assert torch.equal(aug.Color(0.9)(grey, seed=0), grey)


# -- geometric -----------------------------------------------------------------------------
@pytest.mark.parametrize("transform", [
    aug.GridDistortion(distort_limit=0.4), aug.OpticalDistortion(distort_limit=0.6),
    aug.RandomResizedCrop((30, 30), scale=(0.3, 0.6)),
    aug.Compose([aug.Rotation(10), aug.GridDistortion(), aug.OpticalDistortion(0.3)])])
def test_boxes_follow_the_content(transform):
    x, boxes = _square()
    out, moved = transform((x, boxes), seed=1)
    for i in range(len(x)):
        ys, xs = torch.nonzero(out[i, 0] > 127, as_tuple=True)
        content = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert torch.allclose(moved.to_xyxy()[i][0], content, atol=1.0), (i, moved.to_xyxy()[i])


def test_distortions_at_zero_are_the_identity():
    x = _photo(2)
    assert torch.equal(aug.GridDistortion(distort_limit=0.0)(x, seed=0), x)
    assert torch.equal(aug.OpticalDistortion(0.0, shift_limit=0.0)(x, seed=0), x)


def test_optical_distortion_with_positive_k_pulls_content_inwards():
    x = torch.zeros((1, 1, 41, 41))
    x[:, :, 5:36, 5:36] = 1.0
    out = aug.OpticalDistortion((0.5, 0.5), shift_limit=0.0)(x, seed=0)
    assert float(out.sum()) < float(x.sum()) * 0.9
    assert float(out[0, 0, 20, 20]) == pytest.approx(1.0)


def test_resized_crop_draws_area_and_ratio_in_range_and_whole_is_identity():
    t = aug.RandomResizedCrop(scale=(0.2, 0.5), ratio=(0.5, 2.0))
    params = t.make_params((500, 3, 100, 120), 0)
    share = params["height"] * params["width"] / (100 * 120)
    ratio = params["width"] / params["height"]
    assert share.min() > 0.18 and share.max() < 0.52
    assert ratio.min() > 0.45 and ratio.max() < 2.2
    assert (params["top"] + params["height"] <= 100).all()
    assert (params["left"] + params["width"] <= 120).all()
    x = _photo(2, size=(24, 24))
    assert torch.equal(aug.RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, seed=0), x)
    skipped = aug.RandomResizedCrop((12, 12), p=0.0)(x, seed=0)
    assert torch.equal(skipped, aug.Resize((12, 12))(x, seed=0))


def test_translation_takes_an_x_y_pair():
    t = aug.Translation((0.3, 0.0))
    params = t.make_params((50, 1, 20, 20), 0)
    assert np.abs(params["tx"]).max() > 1.0 and np.abs(params["ty"]).max() == 0.0


# -- policies ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["photo-light", "photo-strong", "photo-degrade", "randaugment",
                                  "trivial"])
def test_photo_policies_replay_from_their_records(name):
    x = _photo(6)
    result = aug.augment(x, name, seed=4)
    assert result.output.shape == x.shape
    for i in (0, 5):
        record = json.loads(json.dumps(result.records[i]))
        assert record["policy"]["named"] == name
        assert torch.equal(aug.replay(x[i], record), result.output[i])


@pytest.mark.parametrize("n", [1, 3])
def test_randaugment_applies_n_operations_per_sample(n):
    x = _photo(20)[:, :1]  # greyscale works too
    result = aug.augment(x, {"named": "randaugment", "n": n, "magnitude": 15}, seed=0)
    for record in result.records:
        chosen = [s["op"] for s in record["steps"] if s.get("applied", True)]
        assert len(chosen) == n
    trivial = aug.augment(x, "trivial", seed=0)
    assert all(sum(s.get("applied", True) for s in r["steps"]) == 1 for r in trivial.records)


def test_randaugment_magnitude_sets_the_amount():
    from smartset.augment._auto import rand_augment

    rotations = [leaf.degrees for leaf in rand_augment(1, 30).leaves() if leaf.name == "rotation"]
    assert sorted(v[0] for v in rotations) == [-30.0, 30.0]
    with pytest.raises(AugmentParameterError, match="magnitude"):
        rand_augment(2, 31)


def test_photo_policies_are_listed_by_the_cli():
    from typer.testing import CliRunner

    from smartset.augment._cli import augment_app

    result = CliRunner().invoke(augment_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)["photo_policies"]
    assert {"photo-light", "photo-strong", "randaugment", "trivial"} <= set(listed)


# -- mixup and cutmix ----------------------------------------------------------------------
def test_mixup_blends_images_and_labels_with_one_lambda():
    x = _photo(4).float() / 255
    labels = torch.tensor([0, 1, 2, 1])
    mix = aug.BatchMix(mixup=0.4)
    params = mix.make_params(x.shape, 3)
    out, soft = mix.apply(x, labels, params, num_classes=3)
    lam = params["lam"]
    assert torch.allclose(out[1], lam * x[1] + (1 - lam) * x[0])
    assert torch.allclose(soft[1], torch.tensor([1 - lam, lam, 0.0]))
    assert torch.allclose(soft.sum(1), torch.ones(4))


def test_cutmix_pastes_a_box_whose_share_is_one_minus_lambda():
    x = _photo(4)
    mix = aug.BatchMix(cutmix=1.0)
    params = json.loads(json.dumps(mix.make_params(x.shape, 5)))
    out, soft = mix.apply(x, torch.arange(4), params, num_classes=4)
    x1, y1, x2, y2 = params["box"]
    assert torch.equal(out[2, :, y1:y2, x1:x2], x[1, :, y1:y2, x1:x2])
    changed_share = (x2 - x1) * (y2 - y1) / (32 * 40)
    assert params["lam"] == pytest.approx(1 - changed_share)
    assert float(soft[2, 2]) == pytest.approx(params["lam"]) and out.dtype == torch.uint8
    again, _ = mix(x, torch.arange(4), num_classes=4, seed=5)
    assert torch.equal(again, out)


def test_mix_errors_name_the_fix():
    with pytest.raises(AugmentParameterError, match="mixup > 0"):
        aug.BatchMix()
    with pytest.raises(AugmentParameterError, match="num_classes"):
        aug.BatchMix(mixup=0.2)(_photo(2), torch.tensor([0, 1]), seed=0)
    with pytest.raises(BatchShapeError, match="labels"):
        aug.BatchMix(mixup=0.2)(_photo(2), torch.tensor([0, 1, 2]), num_classes=3, seed=0)
    assert aug.resolve_mix("mixup=0.2,cutmix=1.0") == aug.BatchMix(mixup=0.2, cutmix=1.0)


def test_training_with_mix_and_a_photo_policy_runs_and_records_them():
    from smartset.learn.estimator import ImageClassifier

    g = np.random.default_rng(0)
    x = g.integers(0, 255, (48, 16, 16, 3), dtype=np.uint8)
    y = np.repeat(["a", "b"], 24)
    x[y == "a", 4:12, 4:12] = 255
    model = ImageClassifier("lenet", epochs=1, batch_size=16, mix={"mixup": 0.2, "cutmix": 1.0},
                            augment="trivial", progress=False).fit(x, y)
    assert np.isfinite(model.history_[0]["loss"])
    assert model.get_params()["mix"] == {"mixup": 0.2, "cutmix": 1.0}


def test_lowres_is_a_shift_of_evaluate():
    from smartset.learn.robustness import SHIFTS, shift_images

    assert "lowres" in SHIFTS
    images = np.load(_mnist())["images"][:4, :, :, None]
    shifted = shift_images(images, "lowres")
    assert shifted.shape == images.shape and not np.array_equal(shifted, images)


@pytest.mark.parametrize("name", ["gaussian_noise", "erasing", "color_jitter", "motion_blur",
                                  "solarize", "lowres", "clahe"])
def test_large_images_run_in_chunks_with_the_same_bits(name):
    from smartset.augment import _plan

    options = {"erasing": {"value": "random"}}.get(name, {})
    t = aug.get_transform(name, **options)
    x = _photo(5, seed=2, size=(120, 250))  # 90,000 values a sample: 2 a chunk
    params = t.make_params(x.shape, 9)
    chunked = t.apply(x, params)
    saved = _plan._CHUNK_VALUES
    try:
        _plan._CHUNK_VALUES = 1 << 30  # the whole batch at once
        whole = t.apply(x, params)
    finally:
        _plan._CHUNK_VALUES = saved
    assert torch.equal(chunked, whole)
    assert len(x) > saved // x[0].numel()  # more samples than one chunk holds
