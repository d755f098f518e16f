"""Thread counts chosen on purpose (smartset._threads): the choice, the cap, DataLoader
workers, and results that do not depend on the thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from smartset._threads import (ENV_THREADS, blas_threads, capped_threads, choose_threads,
                               limit_threads, worker_init_fn)


@pytest.mark.parametrize("cores, busy, expected", [
    (2, 0.0, 2), (2, 0.4, 1), (2, 1.0, 1), (2, 9.0, 1), (8, 0.0, 8), (8, 2.5, 5),
    (8, 7.9, 1), (1, 0.0, 1),
])
def test_augment_threads_are_the_free_cores(cores, busy, expected):
    assert choose_threads(purpose="augment", cores=cores, busy=busy, in_worker=False,
                          env={}) == expected


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 1), (3, 0.0, 1), (4, 0.0, 4),
                                                   (8, 6.0, 2)])
def test_training_uses_one_thread_below_four_cores(cores, busy, expected):
    assert choose_threads(purpose="train", cores=cores, busy=busy, in_worker=False,
                          env={}) == expected


def test_explicit_count_then_environment_then_worker():
    assert choose_threads(3, cores=2, busy=5.0, in_worker=True, env={ENV_THREADS: "2"}) == 3
    assert choose_threads(cores=8, busy=0.0, in_worker=True, env={ENV_THREADS: "2"}) == 2
    assert choose_threads(cores=8, busy=0.0, in_worker=True, env={}) == 1
    assert choose_threads(cores=8, busy=0.0, in_worker=True, env={ENV_THREADS: ""}) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_requested_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="positive integer"):
        choose_threads(bad, env={})


def test_bad_environment_value_names_the_variable_and_the_fix():
    with pytest.raises(ValueError, match=f"{ENV_THREADS}='two'.*positive integer"):
        choose_threads(cores=2, busy=0.0, in_worker=False, env={ENV_THREADS: "two"})
    with pytest.raises(ValueError, match="purpose"):
        choose_threads(purpose="audit", env={})


def test_limit_threads_sets_and_restores_torch_and_opencv():
    cv2 = pytest.importorskip("cv2")
    before = torch.get_num_threads(), cv2.getNumThreads()
    with limit_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_capped_threads_never_raises_the_callers_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with capped_threads("augment"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class _Probe(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import cv2

        return torch.tensor([torch.get_num_threads(), cv2.getNumThreads()])


def _init_after_raising(worker_id):
    """Start the worker with 3 threads in both libraries, then smartset's init."""
    import cv2

    cv2.setNumThreads(3)
    torch.set_num_threads(3)
    worker_init_fn(worker_id)


def test_dataloader_worker_init_gives_each_worker_one_thread(monkeypatch):
    pytest.importorskip("cv2")
    monkeypatch.delenv(ENV_THREADS, raising=False)
    loader = DataLoader(_Probe(), batch_size=1, num_workers=1,
                        worker_init_fn=_init_after_raising, multiprocessing_context="spawn")
    seen = torch.cat(list(loader))
    assert seen.flatten().tolist() == [1, 1, 1, 1]


def test_augmented_dataset_offers_the_worker_init():
    from smartset.augment.online import AugmentedDataset

    assert AugmentedDataset.worker_init_fn is worker_init_fn


def test_augmentation_is_bit_identical_with_one_or_two_threads(monkeypatch):
    from smartset.augment import Compose, Elastic, Rotation, Translation, augment

    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, 256, (12, 3, 40, 40), dtype=np.uint8))
    policy = Compose([Rotation(15.0), Elastic(34.0, 4.0), Translation(0.1)])
    outputs = []
    for threads in ("1", "2"):
        monkeypatch.setenv(ENV_THREADS, threads)
        with limit_threads(int(threads)):
            outputs.append(augment(batch, policy, seed=3).output)
    assert torch.equal(outputs[0], outputs[1])


def test_training_records_its_thread_choice_and_follows_the_override(monkeypatch):
    from smartset.learn.estimator import ImageClassifier

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 12, 12), dtype=np.uint8)
    labels = np.arange(32) % 2
    monkeypatch.setenv(ENV_THREADS, "2")
    model = ImageClassifier("small_cnn", epochs=1, batch_size=16, progress=False, seed=0)
    model.fit(images, labels)
    assert model.threads_ == 2
    explicit = ImageClassifier("small_cnn", epochs=1, batch_size=16, progress=False, seed=0,
                               threads=1).fit(images, labels)
    assert explicit.threads_ == 1 and explicit.get_params()["threads"] == 1
    assert explicit._meta()["threads"] == 1
    # the same seed gives the same network whatever the thread count, up to float summation
    # order across threads (small_cnn on 12 x 12 runs the same kernels here)
    a, b = model.predict_proba(images), explicit.predict_proba(images)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_the_kept_thread_pool_is_per_process_and_works_in_a_forked_child():
    import multiprocessing

    from smartset._threads import thread_pool

    pool = thread_pool(2)
    assert thread_pool(2) is pool and list(pool.map(abs, [-1, -2])) == [1, 2]
    if "fork" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as child:  # the parent's pool object exists in the child, its threads not
        assert child.apply_async(_sum_in_pool).get(timeout=60) == 6


def _sum_in_pool():
    from smartset._threads import thread_pool

    return sum(thread_pool(2).map(abs, [-1, -2, -3]))



def test_blas_threads_limits_numpys_blas_in_the_block_and_restores_it():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def counts():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]

    np.ones((64, 64)) @ np.ones((64, 64))  # NumPy's BLAS is loaded
    before = counts()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with blas_threads(1):
        assert counts() == [1] * len(before)
        product = np.arange(16.0).reshape(4, 4) @ np.eye(4)
    assert counts() == before
    assert np.array_equal(product, np.arange(16.0).reshape(4, 4))


def test_near_copy_scores_do_not_depend_on_blas_threads(monkeypatch):
    """The verification's scores are the same whether its chunks run on one thread or two
    (and with BLAS capped at 1 thread inside either)."""
    from smartset.audit import near_copies

    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, (12, 64, 64), dtype=np.uint8)
    thumbs[1] = thumbs[0]
    first, second = np.array([0, 2, 4, 6, 8, 1, 3]), np.array([1, 3, 5, 7, 9, 10, 11])
    monkeypatch.setattr(near_copies, "_POSITION_CHUNK", 2)
    read = lambda rows: thumbs[rows]  # noqa: E731
    monkeypatch.setattr(near_copies, "_verify_threads", lambda chunks: 1)
    one = near_copies._window_scores_of_positions(first, second, read)
    monkeypatch.setattr(near_copies, "_verify_threads", lambda chunks: 2)
    two = near_copies._window_scores_of_positions(first, second, read)
    assert np.array_equal(one, two)
    assert one[0] > 0.999 and one[1:5].max() < 0.9


def test_posterize_of_bytes_runs_on_one_thread_and_restores_the_count(monkeypatch):
    """8-bit posterize is one memory-bound pass: it runs on one torch thread (a second gave
    the same wall time for twice the CPU), gives PIL's levels, and leaves the caller's
    thread count as it was."""
    from smartset.augment import _degrade

    seen = []
    real_and = torch.Tensor.__and__
    monkeypatch.setattr(torch.Tensor, "__and__",
                        lambda self, other: seen.append(torch.get_num_threads())
                        or real_and(self, other))
    x = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    bits = np.array([1, 2, 3, 4, 7, 8])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = _degrade.posterize(x, bits)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    keep = torch.as_tensor((256 - 2 ** (8 - bits)).astype(np.uint8)).view(6, 1, 1, 1)
    assert torch.equal(out, x & keep)
