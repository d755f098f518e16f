"""Images behind fsspec URLs (``memory://``, ``file://``): ingest lists and hashes them
through fsspec and stores the URLs; later stages decode them through one helper
(``smartset.imageio.open_image``) and find what they find in a local copy."""

import importlib.util
import uuid

import fsspec
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import smartset
from smartset.cli import app
from smartset.errors import SourceError, StorageError
from smartset.imageio import load_image, open_image
from smartset.storage import is_url, list_files, read_bytes


def _texture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((64, 48), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A folder-per-class tree: 20 images, an exact copy, a dark one, a file that is not
    an image, and a text file ingest ignores."""
    root = tmp_path_factory.mktemp("tree")
    for i in range(20):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        _texture(i).save(folder / f"{i:02d}.png")
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "01.png").read_bytes())
    Image.fromarray((np.asarray(_texture(99)) * 0.08).astype(np.uint8)).save(root / "dog" / "dark.png")
    (root / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture
def memory_copy(tree):
    """``tree`` copied to a fresh ``memory://`` bucket (removed afterwards)."""
    url = f"memory://smartset-{uuid.uuid4().hex[:8]}/photos"
    fs = fsspec.filesystem("memory")
    for path in tree.rglob("*"):
        if path.is_file():
            fs.pipe(f"{url}/{path.relative_to(tree).as_posix()}", path.read_bytes())
    yield url
    fs.rm(url.split("/photos")[0], recursive=True)


def _ingested(ws, source):
    report = ws.ingest(source, engine="serial", show_progress=False)
    samples = ws.samples().set_index("relpath").sort_index()
    return report, samples


def test_a_memory_url_ingests_as_the_local_copy_does(tmp_path, tree, memory_copy):
    local_report, local = _ingested(smartset.init(tmp_path / "local"), tree)
    ws = smartset.init(tmp_path / "memory")
    report, remote = _ingested(ws, memory_copy)
    assert report.layout == local_report.layout == "folders"
    assert report.root == memory_copy and report.classes == local_report.classes
    assert report.issues == local_report.issues == {"not_an_image": 1}
    assert report.ignored == {".txt": 1}
    columns = ["sha256", "size", "format", "width", "height", "mode", "label", "split"]
    assert remote[columns].equals(local[columns])
    # the catalog holds the URLs, and every stage reads them through one helper
    assert remote.loc["cat/01.png", "path"] == f"{memory_copy}/cat/01.png"
    path = remote.loc["cat/01.png", "path"]
    assert np.array_equal(load_image(path), load_image(local.loc["cat/01.png", "path"]))
    assert open_image(path).size == (64, 48)
    # incremental: nothing changed, nothing read; a rewritten file is read again
    assert ws.ingest(memory_copy, engine="serial", show_progress=False).files_read == 0
    fsspec.filesystem("memory").pipe(f"{memory_copy}/cat/03.png", read_bytes(
        f"{memory_copy}/cat/05.png") + b"")
    again = ws.ingest(memory_copy, engine="serial", show_progress=False)
    assert (again.files_read, again.updated) == (1, 1)
    ws.close()


def test_file_urls_and_the_local_engine(tmp_path, tree):
    url = f"file://{tree}"
    assert is_url(url) and not is_url(str(tree))
    assert [f.relpath for f in list_files(url)][:2] == ["cat/01.png", "cat/03.png"]
    ws = smartset.init(tmp_path / "ws")
    report = ws.ingest(url, engine="local", workers=2, batch_size=4, show_progress=False)
    assert report.ok == 22 and report.classes == {"dog": 11, "cat": 11}
    assert ws.samples()["path"].str.startswith(url + "/").all()
    ws.close()


def test_learning_and_augmentation_read_urls(tmp_path, tree, memory_copy):
    pytest.importorskip("torch")
    from smartset.augment import augment_version
    from smartset.learn import load_version

    ws = smartset.init(tmp_path / "ws")
    ws.ingest(memory_copy, engine="serial", show_progress=False)
    data = load_version(ws, size=32, cache=False)
    assert data.images.shape == (22, 32, 32, 3)
    # augmentation decodes the originals from the URLs; its copies are local PNGs
    # memory:// lives in this process: forked workers see it, spawned ones would not (the
    # local engine spawns when a thread left by an earlier test is still running)
    from smartset.engine import LocalEngine

    result = augment_version(ws, policy="rotation", factor=2,
                             engine=LocalEngine(2, start_method="fork"), batch_size=8,
                             name="rotated")
    assert result["n_augmented"] == 22
    derived = ws.samples("rotated").dropna(subset=["origin_id"])
    assert not derived["path"].map(is_url).any()
    ws.close()


def test_audit_of_a_memory_url_finds_what_it_finds_locally(tmp_path, tree, memory_copy):
    from smartset.audit import audit

    found = {}
    for name, source in (("local", tree), ("memory", memory_copy)):
        ws = smartset.init(tmp_path / name)
        ws.ingest(source, engine="serial", show_progress=False)
        result = audit(ws, engine="serial", report=False)
        relpath = ws.samples().set_index("id")["relpath"]
        found[name] = sorted((f.kind, relpath.get(f.sample_id, ""), f.reason)
                             for f in result.findings.itertuples())
        ws.close()
    assert found["memory"] == found["local"]
    assert ("exact_duplicate", "cat/copy.png") in {(k, r) for k, r, _ in found["local"]}


def test_clear_errors_for_urls(tmp_path, memory_copy):
    ws = smartset.init(tmp_path / "ws")
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(StorageError, match=r"needs the package 's3fs'.*pip install s3fs"):
            ws.ingest("s3://bucket/photos", show_progress=False)
    with pytest.raises(StorageError, match="Unknown URL scheme 'nosuch'"):
        ws.ingest("nosuch://bucket/photos", show_progress=False)
    with pytest.raises(SourceError, match="does not exist"):
        ws.ingest(memory_copy + "-missing", show_progress=False)
    with pytest.raises(SourceError, match="is a URL. Copy the table to a local path"):
        ws.ingest(memory_copy, layout="csv", show_progress=False)
    # on the CLI: exit code 1 and the package to install
    result = CliRunner().invoke(app, ["ingest", str(ws.path), "nosuch://bucket/x"])
    assert result.exit_code == 1 and "Unknown URL scheme" in result.output, result.output
    ws.close()


def test_review_app_serves_images_behind_urls(tmp_path, tree, memory_copy):
    from review_helpers import TOKEN, Client

    from smartset.review.app import create_app

    ws = smartset.init(tmp_path / "ws")
    _, samples = _ingested(ws, memory_copy)
    client = Client(create_app(ws.path, token=TOKEN))
    try:
        sid = samples.loc["cat/01.png", "id"]
        image = client.get(f"/api/samples/{sid}/image")
        assert image.status_code == 200 and image.content == (tree / "cat" / "01.png").read_bytes()
        thumb = client.get(f"/api/samples/{sid}/thumb")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    finally:
        client.close()
        ws.close()
