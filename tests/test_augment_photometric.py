"""Photometric kernels against references (OpenCV, NumPy, Keras' formulas) and the
Keras-style normalisation, featurewise statistics fitted on data included."""

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment import functional as fn

cv2 = pytest.importorskip("cv2")


def _grey(n=3, height=37, width=45, seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    out = []
    for _ in range(n):
        base = 90 + 60 * np.sin(xs / rng.uniform(4, 9)) * np.cos(ys / rng.uniform(4, 9))
        out.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("clip, grid", [(2.0, (8, 8)), (4.0, (4, 6)), (1.0, (3, 3)), (0.0, (8, 8))])
def test_clahe_matches_opencv(clip, grid):
    images = _grey()
    x = torch.from_numpy(images)[:, None]
    got = fn.clahe(x, clip, grid)[:, 0].numpy().astype(int)
    for i, image in enumerate(images):
        expected = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid[1], grid[0])).apply(image)
        assert np.abs(got[i] - expected).max() <= 1
        assert (got[i] != expected).mean() < 0.02


def test_clahe_on_colour_keeps_hue():
    rgb = torch.from_numpy(np.stack([_grey(1, seed=s)[0] for s in range(3)]))[None]
    out = fn.clahe(rgb, 3.0)
    assert out.dtype == torch.uint8 and out.shape == rgb.shape
    hue_in = fn.rgb_to_hsv(rgb.float() / 255)[:, 0]
    hue_out = fn.rgb_to_hsv(out.float() / 255)[:, 0]
    diff = torch.remainder(hue_in - hue_out + 0.5, 1.0) - 0.5
    assert diff.abs().median() < 0.01


def test_blurs_match_opencv():
    images = _grey()
    x = torch.from_numpy(images)[:, None]
    blurred = fn.gaussian_blur(x.float() / 255, [1.0, 1.7, 0.6])[:, 0].numpy() * 255
    for i, sigma in enumerate([1.0, 1.7, 0.6]):
        k = 2 * int(np.ceil(3 * sigma)) + 1
        expected = cv2.GaussianBlur(images[i].astype(np.float32), (k, k), sigma,
                                    borderType=cv2.BORDER_REFLECT_101)
        assert np.abs(blurred[i] - expected).max() < 0.01
    median = fn.median_blur(x, [3, 5, 3])[:, 0].numpy()
    for i, k in enumerate([3, 5, 3]):
        assert np.array_equal(median[i], cv2.medianBlur(images[i], k))
    box = fn.box_blur(x.float() / 255, 5)[:, 0].numpy() * 255
    expected = cv2.blur(images[0].astype(np.float32), (5, 5), borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(box[0] - expected).max() < 1e-3 * 255


def test_intensity_kernels():
    x = torch.tensor([[[[0, 64, 128, 255]]]], dtype=torch.uint8)
    assert fn.adjust_brightness(x, 0.5).tolist() == [[[[0, 32, 64, 128]]]]
    assert fn.adjust_gamma(x, 2.0)[0, 0, 0, 2].item() == round(255 * (128 / 255) ** 2)
    flat = fn.adjust_contrast(x.float() / 255, 0.0)
    assert torch.allclose(flat, flat.mean().expand_as(flat))
    # Keras channel shift: the same shift on every channel, clipped to the image's range
    rgb = torch.tensor([[[[10.0]], [[100.0]], [[200.0]]]]) / 255
    shifted = fn.channel_shift(rgb, 50 / 255) * 255
    assert shifted.flatten().tolist() == pytest.approx([60.0, 150.0, 200.0])
    colour = torch.rand((2, 3, 5, 6))
    assert torch.allclose(fn.adjust_hue(colour, 0.0), colour, atol=1e-5)
    assert torch.allclose(fn.adjust_hue(fn.adjust_hue(colour, 0.2), -0.2), colour, atol=1e-5)
    assert torch.allclose(fn.adjust_saturation(colour, 1.0), colour)
    assert torch.allclose(fn.hsv_to_rgb(fn.rgb_to_hsv(colour)), colour, atol=1e-5)


def test_noise_erasing_sharpen_smooth():
    x = torch.full((200, 1, 16, 16), 128, dtype=torch.uint8)
    noisy = aug.GaussianNoise(std=(0.1, 0.1))(x, seed=0).float()
    assert abs(noisy.std().item() - 25.5) < 1.0
    salty = aug.SaltAndPepper(amount=(0.1, 0.1))(x, seed=0)
    share = ((salty == 255) | (salty == 0)).float().mean().item()
    assert abs(share - 0.1) < 0.01
    erased = aug.Erasing(size=6, value=0)(x, seed=0)
    assert ((erased == 0).sum((1, 2, 3)) > 0).all()
    ones = torch.ones((1, 1, 8, 8))
    assert torch.allclose(fn.sharpen(ones * 0.5, 0.5, 1.0), ones * 0.5)  # flat stays flat
    assert torch.allclose(fn.sharpen(ones * 0.5, 0.5, 2.0), ones * 0.75)  # lightness
    assert torch.allclose(fn.smooth(ones * 0.3, "smooth_more"), ones * 0.3)


def test_rescale_and_samplewise_as_keras():
    x = torch.from_numpy(_grey())[:, None]
    scaled = aug.Rescale(1 / 255)(x, seed=0)
    assert scaled.dtype == torch.float32 and scaled.max() <= 1
    y = x.numpy().astype(np.float64)
    centred = aug.SamplewiseCenter()(x.double(), seed=0).numpy()
    assert np.allclose(centred, y - y.mean(axis=(1, 2, 3), keepdims=True))
    normed = aug.SamplewiseStdNormalization()(x.double(), seed=0).numpy()
    assert np.allclose(normed, y / (y.std(axis=(1, 2, 3), keepdims=True) + 1e-6))


def test_featurewise_fitted_on_data_and_zca():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal([[[0.2]], [[0.5]], [[0.7]]], 0.1, (500, 3, 4, 4)))
    norm = aug.FeaturewiseNormalizer()
    with pytest.raises(aug.NotFittedError, match="fit"):
        norm(x, seed=0)
    assert norm.fit(x) is norm
    assert np.allclose(norm.mean_.numpy(), [0.2, 0.5, 0.7], atol=0.01)
    out = norm(x, seed=0)
    assert out.dtype == torch.float64
    assert np.allclose(out.mean((0, 2, 3)).numpy(), 0, atol=1e-4)
    assert np.allclose(out.std((0, 2, 3)).numpy(), 1, atol=1e-2)
    # fitting on an iterable of batches or a dataset of (image, target) gives the same
    batches = aug.FeaturewiseNormalizer().fit([(b, None) for b in x.split(128)])
    assert torch.allclose(batches.mean_, norm.mean_) and torch.allclose(batches.std_, norm.std_)
    zca = aug.FeaturewiseNormalizer(zca_whitening=True, zca_epsilon=1e-9).fit(x)
    flat = zca(x, seed=0).reshape(len(x), -1)
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(48, dtype=covariance.dtype), atol=0.05)
