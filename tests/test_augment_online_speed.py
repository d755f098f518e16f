"""The shortcuts a DataLoader worker takes at 224 x 224 (issue #23): the elastic field's
full-resolution maps from one matrix per axis (_field_maps.py) are the lattice path's maps
to float rounding and give each row's bits whatever the block; RowRandom's hashing without
np.errstate and with kept slot words draws what SplitMix64 gives."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import smartset.augment as aug
from smartset.augment import _geometry as geo
from smartset.augment import _opencv_warp
from smartset.augment._field_maps import axis_operator, full_resolution_map
from smartset.augment._fields import _refine
from smartset.augment._rowrandom import RowRandom, mix64

_MASK = (1 << 64) - 1


def _lattice_then_upsample(coarse, affine, size, refine):
    """The lattice path: refine the coarse field, add the affine part at the lattice nodes,
    upsample bilinearly (align_corners=True)."""
    fine = coarse
    if refine[1]:
        fine = _refine(fine, 3)
    if refine[0]:
        fine = _refine(fine, 2)
    h, w = fine.shape[-2:]
    xs = torch.linspace(0, size[1] - 1, w)
    ys = torch.linspace(0, size[0] - 1, h)
    lat = geo.FusedWarp._affine_on_grid(affine, xs, ys, torch.device("cpu")) + fine
    return F.interpolate(lat, size=size, mode="bilinear", align_corners=True)


@pytest.mark.parametrize("refine", [(True, True), (False, True), (True, False)])
def test_full_resolution_map_is_the_lattice_paths_map(refine):
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn((3, 2, 9, 11), generator=g) * 3
    angle = np.deg2rad([10.0, -20.0, 5.0])
    affine = np.tile(np.eye(3), (3, 1, 1))
    affine[:, 0, 0] = affine[:, 1, 1] = np.cos(angle)
    affine[:, 0, 1], affine[:, 1, 0] = -np.sin(angle), np.sin(angle)
    affine[:, :2, 2] = [[3.0, -2.0], [0.5, 1.5], [-4.0, 0.0]]
    size = (37, 45)
    want = _lattice_then_upsample(coarse, affine, size, refine)
    got = full_resolution_map(coarse, affine, size, refine)
    assert got.shape == want.shape == (3, 2, *size)
    assert float((got - want).abs().max()) < 1e-4


def test_axis_operator_is_a_partition_of_unity_read_only():
    op = axis_operator(31, True, 224)
    assert op.shape == (31, 224)
    assert torch.allclose(op.sum(0), torch.ones(224), atol=1e-6)  # constants are kept
    assert axis_operator(31, True, 224) is op


def test_each_row_map_is_the_same_bits_in_any_block():
    g = torch.Generator().manual_seed(1)
    coarse = torch.randn((7, 2, 12, 12), generator=g)
    affine = np.tile(np.eye(3), (7, 1, 1))
    affine[:, :2, 2] = np.arange(14).reshape(7, 2)
    together = full_resolution_map(coarse, affine, (40, 40), (True, True))
    for i in range(7):
        alone = full_resolution_map(coarse[i:i + 1], affine[i:i + 1], (40, 40), (True, True))
        assert torch.equal(alone[0], together[i])


def test_the_benchmark_pipeline_takes_the_matrix_path(monkeypatch):
    """Rotation, elastic, translation on uint8 photos: the maps come from the coarse
    field (no lattice is upsampled), within a level of the float path."""
    calls = []
    real = geo.full_resolution_map
    monkeypatch.setattr(geo, "full_resolution_map",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    g = torch.Generator().manual_seed(2)
    x = (torch.rand((3, 3, 72, 80), generator=g) * 40 + 100).to(torch.uint8)
    t = aug.Compose([aug.Rotation(15), aug.Elastic(34, 4), aug.Translation(0.1)])
    fast = aug.augment(x, t, seed=5).output
    slow = aug.augment(x.float(), t, seed=5).output
    assert sum(calls) == 3
    assert int((fast.int() - slow.round().int()).abs().max()) <= 2
    assert _opencv_warp.usable(x, mode="bilinear", keep_float=False)


def _splitmix_finaliser(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def test_mix64_is_splitmix64_without_warnings_in_any_shape():
    values = np.random.default_rng(3).integers(0, 2**63, 12, dtype=np.uint64) * np.uint64(2)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for shaped in (values, values.reshape(3, 4), values[:1].reshape(())):
            got = mix64(shaped)
            assert got.shape == shaped.shape and got.dtype == np.uint64
            want = [_splitmix_finaliser(int(v)) for v in shaped.reshape(-1)]
            assert got.reshape(-1).tolist() == want
        draws = RowRandom(2**64 - 1, [0, 5, 2**40]).uniform(0, 1, (3, 2))
    assert draws.shape == (3, 2) and ((draws >= 0) & (draws < 1)).all()


def test_kept_slot_words_do_not_change_later_draws():
    """The second RowRandom of a key reads its slot words from the cache: same values."""
    first = RowRandom(77, [1, 2, 3])
    a = [first.uniform(0, 1, 3), first.integers(0, 10, (3, 4)), first.standard_normal(3)]
    second = RowRandom(77, [1, 2, 3])
    b = [second.uniform(0, 1, 3), second.integers(0, 10, (3, 4)), second.standard_normal(3)]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], RowRandom(78, [1, 2, 3]).uniform(0, 1, 3))
