"""The Ray Data engine: the same catalog as the local engine, and a worker killed mid-stage.

Starts a local Ray cluster (``ray.init(num_cpus=2)``) once for the module; skipped where
Ray is not installed (``pip install 'smartset[ray]'``), except the test of that message.
"""

import functools
import io
import os
import signal
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import smartset
from smartset.audit import audit
from smartset.audit.properties import RECORD
from smartset.engine import batches_of, get_engine

from engine_helpers import augmented_state, two_class_images, write_class_folders, write_mixed_images

pytestmark = [
    # Ray's own deprecation notices (its DataContext, its vendored libraries), not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:google"),
    pytest.mark.filterwarnings("ignore::FutureWarning:ray"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.delitem(sys.modules, "smartset.engine_ray", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'smartset\[ray\]'"):
        get_engine("ray")


def test_missing_ray_on_the_cli(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from smartset.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "smartset.engine_ray", raising=False)
    (tmp_path / "src" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "src" / "cat" / "a.png")
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path / "ws")]).exit_code == 0
    result = runner.invoke(app, ["ingest", str(tmp_path / "ws"), str(tmp_path / "src"),
                                 "--engine", "ray"])
    assert result.exit_code == 1, result.output
    assert "smartset[ray]" in result.output


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    import ray.cloudpickle

    # Workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _texture(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    noise = rng.normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """60 distinct images in 2 classes and 2 splits, an exact and a near copy, a dark one."""
    root = tmp_path_factory.mktemp("images")
    for i in range(60):
        folder = root / ("train" if i % 5 else "test") / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        _texture(i).save(folder / f"{i:02d}.png")
    (root / "train" / "cat" / "copy.png").write_bytes((root / "train" / "cat" / "01.png").read_bytes())
    buffer = io.BytesIO()
    _texture(3).crop((2, 2, 94, 70)).save(buffer, format="JPEG", quality=60)
    (root / "train" / "cat" / "near.jpg").write_bytes(buffer.getvalue())
    Image.fromarray((np.asarray(_texture(99)) * 0.1).astype(np.uint8)).save(
        root / "train" / "dog" / "dark.png")
    return root


def _audit_state(ws, result):
    """What must not depend on the engine: samples, properties, duplicate sets, findings."""
    samples = ws.samples().set_index("relpath").sort_index()
    relpath = ws.samples().set_index("id")["relpath"]
    props = result.properties.set_index("relpath").sort_index()
    groups = sorted((g["kind"], tuple(g["scopes"]), tuple(sorted(relpath[m] for m in g["members"])))
                    for g in result.duplicate_groups)
    findings = sorted((f.kind, relpath.get(f.sample_id, "") if f.sample_id else "", f.reason)
                      for f in result.findings.itertuples())
    return samples, props, groups, findings


def _catalog_rows(ws) -> dict:
    from smartset.audit.store import PROPERTIES_TABLE as _TABLE

    rows = ws.catalog.query(f"SELECT COUNT(*) AS n, COUNT(DISTINCT sample_id) AS d "
                            f"FROM {_TABLE}")[0]
    [artifact] = ws.catalog.query("SELECT path FROM artifacts WHERE name LIKE 'audit.vectors.%'")
    records = (ws.path / artifact["path"]).stat().st_size // RECORD.itemsize
    return {"samples": len(ws.samples()), "properties": rows["n"], "distinct": rows["d"],
            "records": records}


def test_ray_gives_the_same_catalog_as_local(ray_cluster, images, tmp_path):
    states = {}
    for name in ("local", "ray"):
        ws = smartset.init(tmp_path / name)
        ws.ingest(images, engine=name, workers=2, batch_size=16, show_progress=False)
        result = audit(ws, engine=name, workers=2, report=False)
        states[name] = _audit_state(ws, result)
        assert _catalog_rows(ws) == {"samples": 63, "properties": 63, "distinct": 63,
                                     "records": 63}
        ws.close()
    (local_samples, local_props, local_groups, local_findings) = states["local"]
    (ray_samples, ray_props, ray_groups, ray_findings) = states["ray"]
    columns = ["sha256", "size", "format", "width", "height", "mode", "split", "label"]
    pd.testing.assert_frame_equal(local_samples[columns], ray_samples[columns])
    numeric = local_props.select_dtypes("number").columns.drop(["label_event_id"], errors="ignore")
    np.testing.assert_allclose(local_props[numeric].to_numpy(float), ray_props[numeric].to_numpy(float),
                               rtol=1e-9, atol=1e-12, equal_nan=True)
    assert (local_props["pixel_hash"] == ray_props["pixel_hash"]).all()
    assert local_groups == ray_groups
    assert {g[2] for g in local_groups} >= {("train/cat/01.png", "train/cat/copy.png")}
    assert local_findings == ray_findings


def test_engine_results_come_back_in_order(ray_cluster):
    engine = get_engine("ray", workers=2)
    engine.window = 3  # several windows: results stream in input order across them
    out = list(engine.map_batches(_square, batches_of({"x": list(range(40))}, 4),
                                  fn_kwargs={"offset": 1}))
    assert [v for batch in out for v in batch["y"]] == [(x + 1) ** 2 for x in range(40)]
    assert out[0]["none"] == [None] * 4


def _square(batch, offset=0):
    return {"y": [(x + offset) ** 2 for x in batch["x"]], "none": [None] * len(batch["x"])}


def _die_once(fn, marker, batch, **kwargs):
    """The stage function, but the first worker to run it is killed (SIGKILL) mid-batch."""
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fn(batch, **kwargs)
    os.close(descriptor)
    os.kill(os.getpid(), signal.SIGKILL)


class _KillOneWorker:
    """The Ray engine, with one of its worker processes killed during the stage."""

    name = "ray"

    def __init__(self, marker):
        self.inner, self.marker = get_engine("ray", workers=2), str(marker)

    def map_batches(self, fn, batches, *, fn_kwargs=None):
        return self.inner.map_batches(functools.partial(_die_once, fn, self.marker), batches,
                                      fn_kwargs=fn_kwargs)


def test_a_killed_worker_loses_and_duplicates_no_catalog_row(ray_cluster, images, tmp_path):
    marker = tmp_path / "killed"
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(images, engine=_KillOneWorker(marker), batch_size=8, show_progress=False)
    assert marker.exists()  # a worker did die
    assert len(ws.samples()) == 63
    marker.unlink()
    result = audit(ws, engine=_KillOneWorker(marker), report=False)
    assert marker.exists()
    assert _catalog_rows(ws) == {"samples": 63, "properties": 63, "distinct": 63, "records": 63}
    assert result.summary["n_audited"] == 63 and result.summary["computed"] == 63
    ws.close()


def test_ray_augmentation_writes_the_files_and_rows_of_local(ray_cluster, tmp_path):
    """Offline expansion on Ray: byte-identical PNGs, identical catalog rows and lineage."""
    pytest.importorskip("torch")
    import smartset.augment as aug

    source = write_mixed_images(tmp_path / "src")
    states = {}
    for name in ("local", "ray"):
        ws = smartset.init(tmp_path / name)
        ws.ingest(source, engine="serial", show_progress=False)
        result = aug.augment_version(ws, policy="rotation-elastic-centering", factor=3, seed=2,
                                     name="grown", engine=name, workers=2, batch_size=4)
        assert result["n_augmented"] == 28
        states[name] = augmented_state(ws, "grown")
        ws.close()
    (local_rows, local_files), (ray_rows, ray_files) = states["local"], states["ray"]
    assert ray_files == local_files and len(set(local_files.values())) == 28
    pd.testing.assert_frame_equal(ray_rows, local_rows)


def test_ray_batch_inference_gives_the_probabilities_of_local(ray_cluster, tmp_path):
    """Out-of-fold predictions whose held-out inference runs on Ray, on a model trained for
    one epoch on 200 generated images: equal to local within 1e-6."""
    pytest.importorskip("torch")
    from smartset.learn import predict_oof

    root = write_class_folders(*two_class_images(n=200), tmp_path / "src")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)
    options = {"model": "lenet", "folds": 2, "epochs": 1, "batch_size": 32, "progress": False}
    local = ws.predictions(run=predict_oof(ws, engine="local", **options)["run_id"])
    on_ray = ws.predictions(run=predict_oof(ws, engine="ray", **options)["run_id"])
    assert list(on_ray.sample_ids) == list(local.sample_ids) and len(local) == 200
    np.testing.assert_allclose(on_ray.probs, local.probs, atol=1e-6, rtol=0)
    assert (on_ray.folds == local.folds).all()
    ws.close()
