"""Batch inference on the executor seam: a checkpoint applied by every engine gives the
probabilities of the model in memory; each worker process loads it once. (Ray against
local: tests/test_engine_ray.py.)"""

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn import ImageClassifier, LearnError, predict_oof  # noqa: E402
from smartset.learn import inference  # noqa: E402
from smartset.learn.inference import predict_batch, predict_on_engine  # noqa: E402

from engine_helpers import two_class_images, write_class_folders  # noqa: E402


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    images, labels = two_class_images()
    model = ImageClassifier("lenet", epochs=1, batch_size=32, seed=0).fit(images, labels)
    checkpoint = model.save(tmp_path_factory.mktemp("model") / "model.pt")
    return model, checkpoint, images


def test_every_engine_gives_the_probabilities_of_the_model_in_memory(fitted):
    model, checkpoint, images = fitted
    expected = model.predict_proba(images)
    features = model.transform(images)
    for engine in ("serial", "local"):
        # batches of 16: the local engine runs a pool of two processes
        got = predict_on_engine(checkpoint, images, engine=engine, workers=2, batch_size=16,
                                features=True)
        np.testing.assert_allclose(got["probs"], expected, atol=1e-6, err_msg=engine)
        np.testing.assert_allclose(got["features"], features, atol=1e-5, err_msg=engine)


def test_paths_are_decoded_like_arrays(fitted, tmp_path):
    model, checkpoint, images = fitted
    paths = []
    for i, image in enumerate(images[:6]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    out = predict_batch({"path": paths, "id": list("abcdef")}, checkpoint=checkpoint)
    assert out["id"] == list("abcdef") and out["path"] == paths
    np.testing.assert_allclose(out["probs"], model.predict_proba(images[:6]), atol=1e-6)
    with pytest.raises(LearnError, match="needs a column 'image'"):
        predict_batch({"id": ["a"]}, checkpoint=checkpoint)


def test_a_worker_loads_the_checkpoint_once_and_again_when_it_changes(fitted, tmp_path,
                                                                      monkeypatch):
    model, _, images = fitted
    checkpoint = model.save(tmp_path / "model.pt")
    loads = []
    inference._LOADED.clear()
    from smartset.learn import estimator

    original = estimator.load_checkpoint

    def counting(path):
        loads.append(path)
        return original(path)
    monkeypatch.setattr(estimator, "load_checkpoint", counting)
    for start in range(0, 64, 16):
        predict_batch({"image": list(images[start:start + 16])}, checkpoint=checkpoint)
    assert len(loads) == 1  # four batches, one load
    model.save(checkpoint)  # rewritten (a new fold model): read again
    stat = os.stat(checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    predict_batch({"image": list(images[:4])}, checkpoint=checkpoint)
    assert len(loads) == 2


def test_out_of_fold_predictions_on_an_engine_match_in_process(tmp_path):
    root = write_class_folders(*two_class_images(n=60), tmp_path / "src")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)
    here = predict_oof(ws, model="lenet", folds=2, epochs=1, batch_size=16, progress=False)
    # the same through the CLI, the held-out samples predicted by the serial engine
    result = CliRunner().invoke(app, ["predict", "-w", str(ws.path), "--oof", "--folds", "2",
                                      "--model", "lenet", "--epochs", "1", "--batch-size",
                                      "16", "--engine", "serial", "--json"])
    assert result.exit_code == 0, result.output
    served = json.loads(result.output)
    a, b = ws.predictions(run=here["run_id"]), ws.predictions(run=served["run_id"])
    assert list(a.sample_ids) == list(b.sample_ids)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    run_folder = ws.path / "models" / f"run-{served['run_id']}"
    assert sorted(p.name for p in run_folder.glob("fold-*.pt")) == ["fold-0.pt", "fold-1.pt"]
    ws.close()
