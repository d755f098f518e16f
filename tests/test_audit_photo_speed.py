"""The photo audit's faster paths give the results of the plain ones: window verification
of pairs of positions (each unordered pair once, windows made once per image of a chunk)
equals :func:`window_pair_scores` pair by pair, and the network under
:func:`reuse_freed_blocks` gives the same vectors and leaves the allocator as it was."""

from __future__ import annotations

import cv2
import numpy as np

from smartset import _memory
from smartset.audit.near_copies import (_window_scores_of_positions, pair_scorer,
                                        window_pair_scores)


def _thumbs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (24, 48, 48)).astype(np.float32)
    base = np.stack([cv2.GaussianBlur(b, (7, 7), 2.0) for b in base])
    copies = np.stack([cv2.resize(b[2:46, 1:45], (48, 48), interpolation=cv2.INTER_AREA)
                       for b in base[:8]])  # off-centre crops, resized back
    return np.clip(np.concatenate([base, copies]), 0, 255).astype(np.uint8)


def test_scores_of_positions_equal_the_pairwise_scores():
    thumbs = _thumbs()
    rng = np.random.default_rng(1)
    n = len(thumbs)
    first = np.r_[rng.integers(0, n, 150), np.arange(8), np.arange(24, 32), 5]
    second = np.r_[rng.integers(0, n, 150), np.arange(24, 32), np.arange(8), 5]
    reads = []

    def read(rows):
        reads.append(len(rows))
        return thumbs[np.asarray(rows)]

    expected = window_pair_scores(thumbs[first], thumbs[second])
    found = _window_scores_of_positions(first, second, read)
    np.testing.assert_allclose(found, expected, atol=1e-5)
    assert found[150:166].min() > 0.98  # the copies verify, both ways round
    assert sum(reads) < 2 * len(first)  # images shared between pairs are read once a chunk
    scorer = pair_scorer("windows", read)
    np.testing.assert_allclose(scorer(first, second), expected, atol=1e-5)
    assert len(_window_scores_of_positions(np.zeros(0, int), np.zeros(0, int), read)) == 0


def test_scores_of_positions_do_not_depend_on_the_thread_count(monkeypatch):
    import threading

    from smartset.audit import near_copies

    thumbs = _thumbs()
    rng = np.random.default_rng(2)
    first, second = rng.integers(0, len(thumbs), 300), rng.integers(0, len(thumbs), 300)
    found, alive = {}, threading.active_count()
    for threads in (1, 2, 3):
        monkeypatch.setattr(near_copies, "_verify_threads", lambda chunks, t=threads: t)
        found[threads] = _window_scores_of_positions(first, second,
                                                     lambda rows: thumbs[np.asarray(rows)])
        assert threading.active_count() == alive  # no pool thread outlives the call
    assert np.array_equal(found[1], found[2]) and np.array_equal(found[1], found[3])


def test_local_order_is_a_permutation_that_keeps_shared_images_together():
    from smartset.audit.near_copies import _local_order

    # two stars whose members interleave in position order: sorted by position, every
    # stretch of pairs touches both stars; in the local order each star is one stretch
    hub_a, hub_b = 0, 1
    members_a, members_b = np.arange(2, 200, 2), np.arange(3, 200, 2)
    low = np.r_[np.full(len(members_a), hub_a), np.full(len(members_b), hub_b)]
    high = np.r_[members_a, members_b]
    shuffle = np.random.default_rng(0).permutation(len(low))
    low, high = low[shuffle], high[shuffle]
    order = _local_order(low, high)
    assert sorted(order.tolist()) == list(range(len(low)))
    hubs = low[order]
    assert (np.diff(hubs) != 0).sum() == 1  # one star, then the other
    assert len(_local_order(low[:1], high[:1])) == 1


def test_reuse_freed_blocks_nests_and_restores(monkeypatch):
    calls = []
    monkeypatch.setattr(_memory, "_mallopt", lambda parameter, value: calls.append(
        (parameter, value)))
    monkeypatch.setattr(_memory, "_mmap_threshold", 1 << 20)
    with _memory.reuse_freed_blocks(limit=1 << 28):
        with _memory.reuse_freed_blocks():
            assert _memory._reusing == 2
        assert calls == [(_memory._M_MMAP_THRESHOLD, 1 << 28),
                         (_memory._M_TRIM_THRESHOLD, 1 << 29)]  # the inner one: no change
        _memory.return_large_blocks(1 << 21)  # inside: recorded, applied on the way out
        assert len(calls) == 2
    assert _memory._reusing == 0
    assert calls[2:] == [(_memory._M_MMAP_THRESHOLD, 1 << 21),
                         (_memory._M_TRIM_THRESHOLD, 128 << 10)]


def test_backbone_size_is_checked_cached_apart_and_recorded(tmp_path):
    import pytest

    from smartset.audit.features import AUDIT_BACKBONE_SIZE, FeaturePlan
    from smartset.backbones import backbone_spec
    from smartset.embeddings import _cache_folder, _input_size

    spec = backbone_spec("efficientnet_lite0")
    assert _input_size(spec, None) == spec.size and _input_size(spec, 160) == 160
    for bad in (8, 160.5, True, "160"):
        with pytest.raises(ValueError, match="input size must be a whole number"):
            _input_size(spec, bad)

    class _Ws:
        cache_dir = tmp_path

    assert _cache_folder(_Ws, spec.name, 160) != _cache_folder(_Ws, spec.name, 224)
    plan = FeaturePlan("auto", "photos", spec.name, "windows", spec.name, backbone_size=160)
    assert plan.describe()["backbone_size"] == 160
    assert "backbone_size" not in FeaturePlan("pixels", "photos", "pixels", "windows",
                                              "pixels").describe()
    assert AUDIT_BACKBONE_SIZE == spec.size  # the audit reads the backbone's own size


def test_report_cards_get_their_thumbnails_made_together(monkeypatch, tmp_path):
    import pandas as pd

    from smartset.audit import report

    made = []

    def fake_thumbnail(cache, path, sha):
        made.append(sha)
        return None if sha == "bad" else sha.encode()

    monkeypatch.setattr(report, "thumbnail_jpeg", fake_thumbnail)

    class _Ws:
        cache_dir = tmp_path

    samples = pd.DataFrame({"id": ["a", "b", "c"], "path": ["a.jpg", "b.jpg", "c.jpg"],
                            "sha256": ["s1", "s2", "bad"], "label": ["x", None, "y"],
                            "split": ["train"] * 3, "relpath": ["a.jpg", "b.jpg", "c.jpg"]})
    thumbs = report._Thumbs(_Ws, samples)
    parts = ["<p>start</p>", thumbs.card("a", "1"), thumbs.card("c", "2"),
             thumbs.card("a", "3"), "<p>end</p>"]
    assert not made  # nothing decoded while the page is written
    page = "".join(thumbs.fill(parts))
    assert sorted(made) == ["bad", "s1"]  # each sample once
    assert "\x00" not in page and page.count("undecodable") == 1
    assert page.count("base64,czE=") == 2  # b"s1", in both of a's cards
    assert page.index("start") < page.index("czE=") < page.index("end")


def test_the_network_runs_on_the_chosen_threads_and_restores_them(monkeypatch):
    import torch

    from smartset import embeddings

    seen = []

    def fake_batch(batch, **kwargs):
        seen.append(torch.get_num_threads())
        return {"embedding": [np.ones(4, np.float32) for _ in batch["path"]],
                "error": [None] * len(batch["path"])}

    monkeypatch.setattr(embeddings, "embed_batch", fake_batch)
    monkeypatch.setenv("SMARTSET_THREADS", "1")  # as if the other core were busy
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        vectors, errors = embeddings.embed_paths(["a.jpg", "b.jpg", "c.jpg"], batch_size=2,
                                                 progress=False)
        assert seen == [1, 1] and vectors.shape == (3, 4) and errors == [None] * 3
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
