"""The faster 8-bit paths of issue #22's photometric rows give the bits of the rule they
replace: solarize as ``v XOR mask`` (no lookup table), motion blur with a line's own
rectangle as kernel, and a policy's partly applied steps writing into a batch made earlier
in the same run (never into the caller's tensor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment import _degrade as dg
from smartset.augment import _plan


def _images(n, size, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, channels, *size), dtype=np.uint8)
    x[0] = np.arange(256, dtype=np.uint8).repeat(-(-x[0].size // 256))[:x[0].size].reshape(
        x[0].shape)  # every level in one sample
    return torch.from_numpy(x)


def _solarize_table(x, thresholds):
    """The rule as a per-sample table on the 256 levels (the float formula on v / 255)."""
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    t = torch.as_tensor(thresholds, dtype=torch.float32).view(-1, 1)
    table = torch.where(levels[None] >= t, 255 - torch.arange(256), torch.arange(256))
    return torch.stack([table[k][x[k].long()] for k in range(len(x))]).to(torch.uint8)


@pytest.mark.parametrize("size,channels", [((28, 28), 1), ((9, 13), 3), ((90, 100), 3),
                                           ((70, 70), 1)])
def test_solarize_uint8_equals_the_table_rule(size, channels):
    x = _images(12, size, channels)
    rng = np.random.default_rng(3)
    thresholds = rng.uniform(0, 1, len(x))
    # the ends (0: every level inverts, 1: only 255) and levels exactly on a threshold
    thresholds[:5] = [0.0, 1.0, 128 / 255, 254 / 255, 1 / 255]
    out = dg.solarize(x, thresholds)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, _solarize_table(x, thresholds))
    assert torch.equal(out, dg._lut(x, _lut_tables(thresholds)))  # the old lookup path


def _lut_tables(thresholds):
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    first = np.searchsorted(levels, np.asarray(thresholds, np.float32), side="left")
    v = np.arange(256)
    return torch.from_numpy(np.where(v[None] >= first[:, None], 255 - v, v).astype(np.uint8))


def test_solarize_of_a_non_contiguous_batch_leaves_the_input():
    base = _images(6, (80, 80))
    x = base[:, :, ::2, ::2]  # a strided view
    before = x.clone()
    out = dg.solarize(x, 0.5)
    assert torch.equal(x, before)
    assert torch.equal(out, _solarize_table(before, [0.5] * len(x)))


@pytest.mark.parametrize("size", [(28, 28), (80, 96)])
def test_motion_blur_rectangular_kernels_keep_the_exact_mean(size):
    # horizontal, vertical and shallow lines: kernels of 1-3 rows or columns
    x = _images(12, size)
    lengths = np.array([3, 5, 7, 9, 3, 5, 7, 9, 7, 7, 5, 3])
    angles = np.array([0, 0, 90, 90, 180, 270, 10, 80, 45, 135, 3, 89.5])
    fast = dg.motion_blur(x, lengths, angles)
    exact = dg.motion_blur(x.to(torch.int16), lengths, angles)
    assert torch.equal(fast.to(torch.int16), exact)
    kernel = dg._line_kernel(3, (7, *[3 * 7 + c for c in range(7)]))  # a horizontal line
    assert kernel.shape == (1, 7)


def test_reflect_pad_matches_the_index_rule():
    x = np.random.default_rng(0).integers(0, 256, (3, 2, 6, 9), dtype=np.uint8)
    for r in (1, 3, 5, 6, 9):
        rows = dg._reflect_index(6, r, "cpu").numpy()
        cols = dg._reflect_index(9, r, "cpu").numpy()
        assert np.array_equal(dg._reflect_pad(x, r), x[:, :, rows][:, :, :, cols])


@pytest.mark.parametrize("name", ["trivial", "randaugment"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_policy_steps_in_place_give_the_copying_result(name, dtype):
    x = _images(24, (40, 40))
    x = x if dtype == torch.uint8 else x.to(dtype) / 255
    before = x.clone()
    policy = aug.resolve_policy(name)
    params = policy.make_params(x.shape, 5)
    assert any(0 < p.applied.sum() < len(x) for p in params.params)  # partly applied steps
    fast = policy.apply(x, params)
    assert torch.equal(x, before)  # the caller's batch is never written
    assert fast.data_ptr() != x.data_ptr()
    assert torch.equal(fast, _step_by_step(list(zip(policy.leaves(), params.params)), x))


def _step_by_step(steps, x):
    """The reference: each photometric step on its applied rows of a fresh copy, indexed by
    torch; runs of geometric steps fused as the plan fuses them."""
    i, y = 0, x
    while i < len(steps):
        transform = steps[i][0]
        if transform.kind == "geometric":
            j = i + 1
            while (j < len(steps) and steps[j][0].kind == "geometric"
                   and steps[j][0].fill_key == transform.fill_key):
                j += 1
            (y,), _ = _plan._run_geometric(steps[i:j], [y])
            i = j
            continue
        params = steps[i][1]
        rows = np.flatnonzero(params.applied)
        out = y.clone()
        if len(rows):
            index = torch.from_numpy(rows)
            out[index] = transform._apply_images(y[index], params.subset(rows))
        y, i = out, i + 1
    return y


def test_a_partly_applied_step_never_writes_into_the_input():
    x = _images(8, (30, 30))
    before = x.clone()
    t = aug.Posterize(bits=(2, 2), p=0.5)
    params = t.make_params(x.shape, 1)
    assert 0 < params.applied.sum() < len(x)
    out, owned = _plan._run_photometric(t, params, x, owned=False)
    assert torch.equal(x, before) and owned
    rows = params.applied
    assert torch.equal(out[~torch.from_numpy(rows)], x[~torch.from_numpy(rows)])
    assert torch.equal(out[torch.from_numpy(rows)], x[torch.from_numpy(rows)] & 0xC0)
    # an owned batch is written in place: the same tensor comes back
    again, owned = _plan._run_photometric(t, params, out, owned=True)
    assert again is out and owned
    assert not _plan._made_here(x[:4], [x]) and _plan._made_here(x.clone(), [x])
