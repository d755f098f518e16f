"""kNN at scale (smartset.neighbours, shared by audit, clean and review): exact search in
blocks from disk, IVF above a size, its recall measured; exact search in memory by
Euclidean or cosine distance, top-k and radius queries, with and without FAISS."""

import numpy as np
import pytest

from smartset import neighbours
from smartset.audit import neighbours as audit_neighbours
from smartset.audit.neighbours import group_pairs
from smartset.neighbours import VectorFile, recall_at_k, search_neighbours


def _clustered(n: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` centres: the structure IVF relies on."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    data = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data.astype(np.float32)


def _brute_force(data: np.ndarray, k: int) -> np.ndarray:
    sims = data @ data.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_blocked_exact_search_from_disk_equals_brute_force(tmp_path, monkeypatch):
    data = _clustered(700)
    monkeypatch.setattr(neighbours, "_BASE_BLOCK", 128)   # several database blocks
    monkeypatch.setattr(neighbours, "_QUERY_BLOCK", 100)  # several query blocks
    on_disk = VectorFile.write(tmp_path / "v.f32", (data[i:i + 50] for i in range(0, 700, 50)),
                               32, np.float32)
    assert on_disk.shape == (700, 32)
    np.testing.assert_array_equal(on_disk[10:20], data[10:20])
    np.testing.assert_array_equal(on_disk[np.array([5, 1, 600])], data[[5, 1, 600]])
    found = search_neighbours(on_disk, 6)
    assert found.index == "flat" and not found.approximate and found.recall is None
    kept = search_neighbours(on_disk, 6, out=tmp_path / "answer.bin")  # the answer on disk
    np.testing.assert_array_equal(kept.indices, found.indices)
    np.testing.assert_array_equal(kept.similarities, found.similarities)
    rows = np.array([650, 3, 77])
    np.testing.assert_array_equal(kept.table.take(rows)[0], found.indices[rows])
    np.testing.assert_array_equal(kept.table.column(2), found.indices[:, 2])
    np.testing.assert_array_equal(found.indices, _brute_force(data, 6))
    expected = np.take_along_axis(data @ data.T, found.indices, axis=1)
    np.testing.assert_allclose(found.similarities, expected, atol=1e-5)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # the NumPy path, blocked too
    np.testing.assert_array_equal(search_neighbours(on_disk, 6).indices, found.indices)


@pytest.mark.parametrize("method, index", [("auto", "ivf-flat"), ("ivf", "ivf-sq8")])
def test_ivf_above_the_limit_reports_its_recall(method, index):
    data = _clustered(4000)
    exact = search_neighbours(data, 10, method="flat")
    approx = search_neighbours(data, 10, method=method, exact_limit=1000, recall_queries=400)
    assert approx.approximate and approx.index == index
    assert approx.params["nlist"] >= 16 and approx.params["recall_queries"] == 400
    assert not (approx.indices == np.arange(4000)[:, None]).any()  # never its own neighbour
    true_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.indices, exact.indices)])
    assert 0.9 <= approx.recall <= 1.0
    assert abs(approx.recall - true_recall) < 0.05  # the sample estimates the whole
    assert recall_at_k(data, exact.indices, sample=300) == 1.0
    broken = exact.indices.copy()
    broken[:, 5:] = -1
    assert recall_at_k(data, broken, sample=300) == pytest.approx(0.5)


def test_ivf_in_shards_finds_what_one_index_finds(monkeypatch, tmp_path):
    """The database is searched a shard at a time and the answer kept on disk (bounded
    memory): the merged answer is the one index's, similarities and neighbours, never the
    query itself."""
    data = _clustered(3000)
    whole = search_neighbours(data, 8, method="ivf", recall_queries=200)
    monkeypatch.setattr(neighbours, "_IVF_SHARD", 700)  # 5 shards, the last one short
    monkeypatch.setattr(neighbours, "_QUERY_BLOCK", 512)
    sharded = search_neighbours(data, 8, method="ivf", recall_queries=200,
                                out=tmp_path / "answer.bin")
    assert sharded.table.path.stat().st_size == 3000 * 8 * 8
    np.testing.assert_allclose(sharded.similarities, whole.similarities, atol=1e-6)
    same = (sharded.indices == whole.indices).mean()
    assert same > 0.99  # only ties may come in another order
    assert not (sharded.indices == np.arange(3000)[:, None]).any()
    assert sharded.recall == pytest.approx(whole.recall, abs=0.01)


def test_fewer_rows_than_neighbours_are_padded():
    data = _clustered(3)
    found = search_neighbours(data, 5)
    assert (found.indices[:, 2:] == -1).all() and np.isneginf(found.similarities[:, 2:]).all()
    assert search_neighbours(data[:1], 3).indices.tolist() == [[-1, -1, -1]]
    with pytest.raises(ValueError, match="method"):
        search_neighbours(data, 2, method="hnsw")


def test_group_pairs_touches_only_paired_images():
    assert group_pairs(10, [(3, 7), (7, 9), (1, 2)]) == [[3, 7, 9], [1, 2]]
    assert group_pairs(10**9, [(5, 10**8)]) == [[5, 10**8]]  # no list of n entries
    with pytest.raises(IndexError):
        group_pairs(4, [(1, 4)])


def test_an_audit_above_the_limit_reports_the_approximate_search(tmp_path, monkeypatch):
    from PIL import Image

    import smartset
    from smartset.audit import audit

    rng = np.random.default_rng(0)
    for i in range(120):
        folder = tmp_path / "src" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC).save(folder / f"{i}.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "src", engine="serial", show_progress=False)
    exact = audit(ws, engine="serial", report=False)
    assert "neighbour_search" not in exact.summary
    monkeypatch.setattr(neighbours, "EXACT_LIMIT", 50)
    approx = audit(ws, engine="serial", report=False)
    info = approx.summary["neighbour_search"]
    assert info["index"] == "ivf-flat" and 0.0 <= info["recall_at_k"] <= 1.0 and info["k"] == 5
    ws.close()


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).normal(size=10_001),                    # odd count
    np.round(np.random.default_rng(1).uniform(0.9, 1.0, 20_000), 3),  # even, many ties
    np.full(5_000, 0.98),                                             # one value
    np.r_[np.full(3_000, 0.5), np.full(3_001, np.nextafter(0.5, 1))],  # two neighbouring floats
])
def test_the_median_from_a_file_is_exact(tmp_path, monkeypatch, values):
    """The near-duplicate threshold's median is taken from a scratch file a block at a
    time, narrowing by histograms: it equals np.median exactly."""
    monkeypatch.setattr(audit_neighbours._Scratch, "_BLOCK", 1000)
    monkeypatch.setattr(audit_neighbours._Scratch, "_SORT", 64)  # force several narrowing passes
    with audit_neighbours._Scratch(tmp_path) as scratch:
        for part in np.array_split(values, 7):
            scratch.append(part)
        assert scratch.median() == np.median(values)
        path = scratch.path
    assert not path.exists()


def test_group_arrays_matches_a_plain_union_find():
    rng = np.random.default_rng(3)
    first, second = rng.integers(0, 500, 300), rng.integers(0, 500, 300)
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(first.tolist(), second.tolist()):
        parent[find(a)] = find(b)
    expected = {}
    for x in sorted(parent):
        expected.setdefault(find(x), []).append(x)
    expected = sorted(expected.values(), key=lambda g: (-len(g), g[0]))
    members, starts = audit_neighbours.group_arrays(500, first, second)
    assert [members[a:b].tolist() for a, b in zip(starts[:-1], starts[1:])] == expected


# -- exact search in memory (clean's detectors, the review's focus view) ---------------------

def _without_faiss(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss -> ImportError


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_equals_brute_force_with_and_without_faiss(metric, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    if metric == "cosine":
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist = 1.0 - unit @ unit.T
    else:
        dist = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :4]
    with_faiss = neighbours.nearest(x, 4, metric=metric)
    _without_faiss(monkeypatch)
    without = neighbours.nearest(x, 4, metric=metric)
    for idx, d in (with_faiss, without):
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(d, np.take_along_axis(dist, expected, axis=1), atol=1e-4)


def test_nearest_groups_subset_and_padding():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    groups = np.arange(40) % 4
    idx, dist = neighbours.nearest(x, 3, groups=groups)
    assert (groups[idx] == groups[:, None]).all() and (idx != np.arange(40)[:, None]).all()
    subset = np.arange(0, 40, 10)  # 4 rows: each has 3 others
    idx, dist = neighbours.nearest(x, 5, subset=subset)
    outside = np.setdiff1d(np.arange(40), subset)
    assert (idx[outside] == -1).all() and np.isinf(dist[outside]).all()
    assert set(idx[subset, :3].ravel()) <= set(subset.tolist())
    assert (idx[subset, 3:] == -1).all()  # fewer others than k: padded
    with pytest.raises(ValueError, match="Unknown metric 'manhattan'"):
        neighbours.nearest(x, 2, metric="manhattan")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_top_k_over_blocks_equals_brute_force(metric, monkeypatch):
    data = _clustered(500, dim=8)
    monkeypatch.setattr(neighbours, "_BASE_BLOCK", 64)  # the answer merged over 8 blocks
    queries = data[[3, 70, 499]]
    found, scores = neighbours.top_k(data, queries, 7, metric=metric, exclude=[3, 70, 499])
    if metric == "cosine":
        sims = queries @ data.T
        sims[np.arange(3), [3, 70, 499]] = -np.inf
        expected = np.argsort(-sims, axis=1, kind="stable")[:, :7]
        np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, axis=1),
                                   atol=1e-5)
    else:
        dist = np.linalg.norm(queries[:, None] - data[None], axis=2)
        dist[np.arange(3), [3, 70, 499]] = np.inf
        expected = np.argsort(dist, axis=1, kind="stable")[:, :7]
        np.testing.assert_allclose(scores, np.take_along_axis(dist, expected, axis=1),
                                   atol=1e-4)
    np.testing.assert_array_equal(found, expected)
    assert not np.isin([3, 70, 499], found).any()
    _without_faiss(monkeypatch)
    again, _ = neighbours.top_k(data, queries, 7, metric=metric, exclude=[3, 70, 499])
    np.testing.assert_array_equal(again, expected)
    padded, padded_scores = neighbours.top_k(data[:4], data[:1], 6, exclude=[0])
    assert padded[0].tolist()[3:] == [-1, -1, -1] and np.isinf(padded_scores[0, 3:]).all()


def test_within_radius_returns_every_row_inside_nearest_first(monkeypatch):
    data = _clustered(300, dim=6)
    monkeypatch.setattr(neighbours, "_BASE_BLOCK", 50)
    (idx, dist), = neighbours.within_radius(data, data[:1], 0.2)
    expected = np.flatnonzero(1.0 - data @ data[0] <= 0.2)
    assert sorted(idx.tolist()) == sorted(expected.tolist()) and idx[0] == 0
    assert np.all(np.diff(dist) >= 0)
    (idx, dist), = neighbours.within_radius(data, data[5:6], 0.5, metric="euclidean")
    expected = np.flatnonzero(np.linalg.norm(data - data[5], axis=1) <= 0.5)
    assert sorted(idx.tolist()) == sorted(expected.tolist())


def test_inverted_lists_on_disk_without_faiss_and_exact_similarities(tmp_path, monkeypatch):
    """The NumPy inverted lists: the same answer with FAISS's kernel or NumPy's, in memory
    or on disk; every similarity it reports is the exact one of that pair."""
    data = _clustered(3000, dim=16)
    found = search_neighbours(data, 5, method="ivf-flat", nlist=32, nprobe=4, seed=3)
    on_disk = search_neighbours(data, 5, method="ivf-flat", nlist=32, nprobe=4, seed=3,
                                out=tmp_path / "t.bin")
    np.testing.assert_array_equal(on_disk.indices, found.indices)
    rows = np.arange(3000)[:, None]
    assert (found.indices >= 0).all() and not (found.indices == rows).any()
    np.testing.assert_allclose(found.similarities,
                               np.einsum("nd,nkd->nk", data, data[found.indices]), atol=1e-5)
    assert np.all(np.diff(found.similarities, axis=1) <= 1e-6)
    assert found.recall >= 0.9 and found.params["nlist"] == 32
    _without_faiss(monkeypatch)
    numpy_only = search_neighbours(data, 5, method="ivf-flat", nlist=32, nprobe=4, seed=3)
    agree = np.mean(numpy_only.indices == found.indices)
    assert agree > 0.99  # ties may order differently
    assert search_neighbours(data, 5, method="ivf", exact_limit=10).index == "ivf-flat"
