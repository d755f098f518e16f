"""Online augmentation (AugmentedDataset): parameters drawn for a whole batch in one pass
equal the same samples drawn one by one, for every registered transform and named policy;
the per-sample fallback; DataLoader batches through ``__getitems__``; the row generator."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from augment_helpers import Items

import smartset.augment as aug
from smartset.augment._rowrandom import NotRowwise, RowRandom, row_key

_OPTIONS = {"crop": {"size": (16, 18)}, "resize": {"size": (12, 16)},
            "resized_crop": {"size": (16, 18)}}




class _Batched(Items):
    """A dataset with torch's batched fetch; counts its calls."""

    calls = 0

    def __getitems__(self, indices):
        self.calls += 1
        return [self[i] for i in indices]


def _images(n=12, channels=3, size=(20, 24), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, channels, *size), generator=g) * 0.6
    x[:, :, 5:11, 7:14] = 1.0
    return (x * 255).round().to(torch.uint8)


def _make(name):
    t = aug.get_transform(name, **_OPTIONS.get(name, {}))
    if name == "featurewise_normalize":
        t.fit(_images(8).float() / 255)
    return t


def _item_images(dataset, indices):
    return torch.stack([dataset[i][0] for i in indices])


def _batch_images(dataset, indices):
    return dataset.collate_fn([dataset[i] for i in indices])[0]


@pytest.mark.parametrize("name", aug.available_transforms())
def test_every_transform_gives_a_sample_the_same_image_in_any_batch(name):
    """Drawn together (in a shuffled order) or one by one, each sample gets the same
    parameters and image; p=0.5 gates and the noise addressing included."""
    t = _make(name)
    if t.output_shape((1, 3, 20, 24)) == (1, 3, 20, 24):  # size changers need p=1
        t.p = 0.5
    images = _images()
    batched = aug.AugmentedDataset(Items(images), t, seed=3, mode="batch")
    single = aug.AugmentedDataset(Items(images), t, seed=3)
    order = [7, 2, 11, 0, 5, 9, 1]
    together = _batch_images(batched, order)
    alone = _item_images(single, order)
    assert torch.equal(together, alone), name
    # and not the same image for every sample unless the transform is deterministic
    if not t.deterministic and t.kind == "geometric":
        assert not torch.equal(together[0], _item_images(single, [2])[0])


@pytest.mark.parametrize("name", aug.NAMED_POLICIES)
def test_every_named_policy_draws_in_one_pass_and_matches_its_samples(name):
    images = _images(10, channels=1, size=(28, 28))
    batched = aug.AugmentedDataset(Items(images), name, seed=1, mode="batch")
    single = aug.AugmentedDataset(Items(images), name, seed=1)
    assert batched.uses_batched_draws((1, 28, 28)), name
    order = [9, 3, 4, 0, 8]
    assert torch.equal(_batch_images(batched, order), _item_images(single, order)), name


def test_a_policy_that_draws_per_batch_falls_back_to_a_generator_per_sample():
    policy = aug.Compose([aug.Rotation(20, same_on_batch=True), aug.Elastic(34, 4)])
    images = _images(6, channels=1, size=(28, 28))
    batched = aug.AugmentedDataset(Items(images), policy, seed=2, mode="batch")
    single = aug.AugmentedDataset(Items(images), policy, seed=2)
    assert not batched.uses_batched_draws((1, 28, 28))
    order = [5, 1, 3]
    assert torch.equal(_batch_images(batched, order), _item_images(single, order))
    # the fallback is the generator per (seed, epoch, index) it always was
    expected = policy.make_params((1, 1, 28, 28), np.random.default_rng([2, 0, 3]))
    assert np.array_equal(batched._params([3], (1, 28, 28)).params[0]["angle"],
                          expected.params[0]["angle"])


def test_epochs_and_seeds_change_the_parameters_and_records_replay():
    images = _images(8, channels=1, size=(28, 28))
    dataset = aug.AugmentedDataset(Items(images), "rotation-elastic", seed=4,
                                   return_params=True)
    first, _, record = dataset[5]
    assert torch.equal(aug.replay(images[5], record), first)  # bit for bit
    dataset.set_epoch(1)
    assert not torch.equal(dataset[5][0], first)
    dataset.set_epoch(0)
    assert torch.equal(dataset[5][0], first)
    other = aug.AugmentedDataset(Items(images), "rotation-elastic", seed=5)
    assert not torch.equal(other[5][0], first)


def test_dataloader_fetches_a_batch_in_one_call_in_both_modes():
    images = _images(12, channels=1, size=(28, 28))
    reference = aug.AugmentedDataset(Items(images), "rotation-elastic", seed=7)
    expected = _item_images(reference, range(12))
    source = _Batched(images)
    item_mode = aug.AugmentedDataset(source, "rotation-elastic", seed=7)
    got = torch.cat([x for x, _ in DataLoader(item_mode, batch_size=5)])
    assert torch.equal(got, expected) and source.calls == 3
    batch_mode = aug.AugmentedDataset(Items(images), "rotation-elastic", seed=7, mode="batch")
    loader = DataLoader(batch_mode, batch_size=5, collate_fn=batch_mode.collate_fn)
    targets = torch.cat([t for _, t in loader])
    assert torch.equal(torch.cat([x for x, _ in loader]), expected)
    assert targets.tolist() == [i % 3 for i in range(12)]


def test_items_of_several_sizes_in_item_mode_are_augmented_one_by_one():
    images = [torch.zeros((3, 20, 30), dtype=torch.uint8), torch.full((3, 24, 24), 9, dtype=torch.uint8)]
    dataset = aug.AugmentedDataset(Items(images), aug.Rotation(5), seed=0)
    items = dataset.__getitems__([1, 0])
    assert [tuple(x.shape) for x, _ in items] == [(3, 24, 24), (3, 20, 30)]
    assert torch.equal(items[0][0], dataset[1][0])


def test_row_generator_rows_do_not_depend_on_the_batch():
    key = row_key(11, 2)
    rows = np.array([4, 90, 7, 1000])
    together = RowRandom(key, rows)
    alone = [RowRandom(key, [r]) for r in rows]
    draws = [lambda g, n: g.random(n), lambda g, n: g.uniform(-3, 5, (n, 2)),
             lambda g, n: g.integers(0, 2**53, size=n, dtype=np.int64),
             lambda g, n: g.choice([1, 3, 5], n, p=[0.2, 0.3, 0.5]),
             lambda g, n: g.normal(1.0, 2.0, n * 3).reshape(n, 3)]
    for draw in draws:
        whole = draw(together, 4)
        parts = np.concatenate([draw(g, 1) for g in alone])
        assert np.array_equal(whole, parts)
    with pytest.raises(NotRowwise):
        together.random(3)  # 3 values for 4 samples
    with pytest.raises(NotRowwise):
        together.beta(1.0, 1.0)
    with pytest.raises(NotRowwise):
        together.choice(5, 4, replace=False)


def test_row_generator_draws_look_uniform_and_independent():
    g = RowRandom(row_key(0, 0), np.arange(20000))
    u = g.random((20000, 2))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # two values of one sample
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03  # neighbouring samples
    counts = np.bincount(g.integers(0, 10, 20000), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200
    f32 = g.random(20000, dtype=np.float32)
    assert f32.dtype == np.float32 and f32.max() < 1


def test_noise_words_of_a_shuffled_batch_are_each_rows_own():
    """A sparse set of indices (a shuffled batch, a repeated index) reads, row by row, what a
    fresh generator of the stream reads at that index."""
    from smartset.augment._noise import stream_words

    rng = np.random.default_rng(0)
    indices = np.concatenate([rng.choice(100_000, 40, replace=False), [17, 17, 5]])
    streams = np.where(np.arange(len(indices)) % 3 == 0, 123, 456)
    got = stream_words(streams, indices, 5)
    for row, (stream, index) in enumerate(zip(streams, indices)):
        bits = np.random.PCG64(int(stream))
        bits.advance(int(index) * 5)
        assert np.array_equal(got[row], bits.random_raw(5)), row
