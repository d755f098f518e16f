"""The 8-bit CPU fast paths of the degradation and colour kernels (OpenCV calls, batched
lookups) give the bits of the general rule they stand for, on small and large planes, with
one thread and with several (issue #22)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment import _degrade as dg


def _images(n, size, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, channels, *size), dtype=np.uint8)
    x[: n // 2] = np.where(x[: n // 2] > 127, 255, 0)  # hard edges: many exact half-way sums
    return torch.from_numpy(x)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)


@pytest.mark.parametrize("size", [(28, 28), (9, 13), (90, 100)])
def test_motion_blur_uint8_is_the_exact_rounded_mean(size, threads):
    x = _images(24, size)
    rng = np.random.default_rng(1)
    lengths = rng.choice([1, 3, 5, 7, 9, 15, 31], len(x))
    angles = rng.uniform(0, 360, len(x))
    fast = dg.motion_blur(x, lengths, angles)
    exact = dg.motion_blur(x.to(torch.int16), lengths, angles)  # the summing path
    assert fast.dtype == torch.uint8
    assert torch.equal(fast.to(torch.int16), exact)


def test_motion_blur_even_length_keeps_the_general_rule():
    x = _images(4, (20, 20))
    out = dg.motion_blur(x, 4, 0.0)
    assert torch.equal(out.to(torch.int16), dg.motion_blur(x.to(torch.int16), 4, 0.0))


@pytest.mark.parametrize("size", [(28, 28), (90, 100)])
def test_equalize_histograms_agree(size, threads):
    x = _images(6, size)
    x[0] = 7  # one level only: unchanged
    fast = dg.equalize(x)
    levels = x.reshape(-1, size[0] * size[1]).to(torch.int64)
    hist = torch.stack([torch.bincount(v, minlength=256) for v in levels])
    assert torch.equal(fast[0], x[0])
    # PIL's rule, per plane, from the plain histogram
    for k, (plane, h) in enumerate(zip(x.reshape(-1, *size), hist)):
        nonzero = h[h > 0]
        step = int((h.sum() - nonzero[-1]) // 255)
        if step == 0:
            expected = plane
        else:
            lut = torch.clamp((torch.cumsum(h, 0) + step // 2) // step, 0, 255)
            lut = torch.cat([torch.zeros(1, dtype=lut.dtype), lut[:-1]])
            expected = lut[plane.to(torch.int64)].to(torch.uint8)
        assert torch.equal(fast.reshape(-1, *size)[k], expected), k


@pytest.mark.parametrize("size", [(28, 28), (90, 100)])
def test_solarize_and_posterize_match_their_formulas(size, threads):
    x = _images(8, size)
    thresholds = np.linspace(0.0, 1.0, len(x))
    out = dg.solarize(x, thresholds)
    level = x.to(torch.float32) / 255
    t = torch.tensor(thresholds, dtype=torch.float32).view(-1, 1, 1, 1)
    assert torch.equal(out, torch.where(level >= t, 255 - x, x))
    bits = np.arange(len(x)) % 8 + 1
    kept = torch.tensor(256 - 2 ** (8 - bits), dtype=torch.uint8).view(-1, 1, 1, 1)
    assert torch.equal(dg.posterize(x, bits), x & kept)


def test_lowres_threads_give_the_bits_of_one_thread():
    x = _images(40, (64, 72))
    scales = np.linspace(0.2, 1.0, len(x))
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dg.downscale(x, scales)
        torch.set_num_threads(2)
        two = dg.downscale(x, scales)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)
    assert torch.equal(dg.downscale(x[:1], 1.0), x[:1])


@pytest.mark.parametrize("size", [(28, 28), (90, 100)])
def test_uint8_mixup_is_the_rounded_float_blend(size, threads):
    x = _images(6, size)
    mix = aug.BatchMix(mixup=0.4)
    params = mix.make_params(x.shape, 3)
    out, soft = mix.apply(x, torch.arange(6), params, num_classes=6)
    lam = params["lam"]
    blend = x.double() * lam + x.roll(1, 0).double() * (1 - lam)
    assert out.dtype == torch.uint8
    assert (out.double() - blend).abs().max() <= 0.5 + 1e-6
    assert torch.allclose(soft.sum(1), torch.ones(6))
    again, _ = mix.apply(x, torch.arange(6), params, num_classes=6)
    assert torch.equal(again, out)


def test_lowres_of_colour_photos_equals_the_plane_by_plane_rule():
    import cv2

    x = _images(3, (80, 90))
    scales = [0.3, 0.55, 1.0]
    out = dg.downscale(x, scales)
    for i, s in enumerate(scales):
        size = (int(round(90 * s)), int(round(80 * s)))
        for c in range(3):
            plane = x[i, c].numpy()
            small = cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
            expected = cv2.resize(small, (90, 80), interpolation=cv2.INTER_LINEAR)
            assert np.array_equal(out[i, c].numpy(), expected)


def test_motion_blur_of_a_large_batch_of_digits():
    # many samples of one line in a run: the stacked image is written in place
    x = _images(300, (28, 28), channels=1, seed=4)
    rng = np.random.default_rng(2)
    lengths, angles = rng.choice([3, 5, 7], len(x)), rng.uniform(0, 360, len(x))
    fast = dg.motion_blur(x, lengths, angles)
    assert torch.equal(fast.to(torch.int16), dg.motion_blur(x.to(torch.int16), lengths, angles))
