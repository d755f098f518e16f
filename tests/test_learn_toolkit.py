"""The training toolkit (issue #22): the learning-rate range test and one-cycle, mixed
precision, test-time augmentation in evaluate and predict, DropConnect, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn import ImageClassifier, build_model  # noqa: E402
from smartset.learn.errors import LearnError  # noqa: E402
from smartset.learn.models import DropConnectLinear  # noqa: E402
from smartset.learn.precision import autocast, grad_scaler, resolve_precision  # noqa: E402
from smartset.learn.schedule import (lr_find, one_cycle_lr, one_cycle_momentum,  # noqa: E402
                                     plot_lr_find, suggest_lr)
from smartset.learn.tta import tta_proba, tta_views, view_images  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"
runner = CliRunner()


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args], terminal_width=200)
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def blobs(n: int, seed: int):
    """Two easy classes: a bright left half or a bright right half, with noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 16, 16), dtype=np.uint8)
    labels = np.array(["left", "right"] * (n // 2), dtype=object)
    images[labels == "left", :, :8] += 150
    images[labels == "right", :, 8:] += 150
    return images, labels


# -- the range test and one-cycle --------------------------------------------------------
def test_lr_finder_suggests_a_rate_where_the_loss_falls(tmp_path):
    images, labels = blobs(128, seed=0)
    estimator = ImageClassifier("small_cnn", batch_size=32, seed=0)
    found = lr_find(estimator, images, labels, num_it=50)
    lrs, losses = np.asarray(found["lrs"]), np.asarray(found["losses"])
    assert found["method"] == "valley" and found["lr"] == found["valley"]
    assert lrs[0] < found["lr"] < lrs[-1]
    i = int(np.argmin(np.abs(np.log(lrs) - np.log(found["lr"]))))
    # where the suggestion lies the loss is falling, and it reaches a lower loss later
    assert losses[min(i + 3, len(losses) - 1)] < losses[max(i - 3, 0)]
    assert losses[i:].min() < losses[: len(losses) // 10 + 1].mean() - 0.05
    assert not hasattr(estimator, "network_")  # the range test leaves the estimator unfitted
    short = [lr_find(ImageClassifier("small_cnn", batch_size=32, seed=0), images, labels,
                     num_it=20)["raw_losses"] for _ in range(2)]
    assert short[0] == short[1]  # seeded
    png = plot_lr_find(found, tmp_path / "lr.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_suggest_lr_on_a_known_curve():
    lrs = np.logspace(-6, 0, 100)
    # flat, then falling between 1e-4 and 1e-2, then exploding
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 4)) + np.where(x > -1, (x + 1) * 20, 0)
    found = suggest_lr(lrs, losses)
    assert 1e-4 < found["valley"] < 1e-2 and 1e-4 < found["steep"] < 1e-2
    with pytest.raises(LearnError, match="too few"):
        suggest_lr(lrs[:2], losses[:2])


def test_one_cycle_has_its_shape():
    lrs, moms = one_cycle_lr(200, 0.01), one_cycle_momentum(200)
    peak = int(np.argmax(lrs))
    assert peak == 50 and lrs[peak] == pytest.approx(0.01)  # pct_start 0.25
    assert lrs[0] == pytest.approx(0.01 / 25) and lrs[-1] == pytest.approx(0.01 / 1e5)
    assert np.all(np.diff(lrs[:peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert moms[0] == pytest.approx(0.95) and moms[peak] == pytest.approx(0.85)
    assert moms[-1] == pytest.approx(0.95) and int(np.argmin(moms)) == peak


def test_one_cycle_training_follows_the_schedule_and_cycles_adams_beta1():
    images, labels = blobs(64, seed=1)
    seen = []
    estimator = ImageClassifier("small_cnn", epochs=2, batch_size=16, lr=0.01,
                                schedule="one-cycle", seed=0, progress=False)
    original = estimator._schedule_step

    def spy(optimizer, base_lrs, step, total):
        original(optimizer, base_lrs, step, total)
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"][0]))

    estimator._schedule_step = spy
    estimator.fit(images, labels)
    lrs, betas = np.array(seen).T
    np.testing.assert_allclose(lrs, one_cycle_lr(8, 0.01))
    np.testing.assert_allclose(betas, one_cycle_momentum(8))
    assert estimator.get_params()["schedule"] == "one-cycle"
    with pytest.raises(LearnError, match="one-cycle"):
        ImageClassifier("small_cnn", schedule="triangle").fit(images, labels)


# -- precision ---------------------------------------------------------------------------
def test_precision_choices_and_refusals():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu", "small_cnn") in ("fp32", "bf16")
    with pytest.raises(LearnError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(LearnError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")
    assert not grad_scaler("bf16", "cpu").is_enabled()
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_training_runs_and_is_recorded():
    from smartset.learn.precision import cpu_bf16_native

    if not cpu_bf16_native():
        pytest.skip("this CPU has no native bfloat16")
    images, labels = blobs(64, seed=2)
    model = ImageClassifier("small_cnn", epochs=2, batch_size=16, precision="bf16", seed=0,
                            progress=False).fit(images, labels)
    assert model.precision_ == "bf16" and model.get_params()["precision"] == "bf16"
    assert model.score(*blobs(32, seed=3)) >= 0.9
    assert model.predict_proba(images[:4]).dtype == np.float32  # inference stays fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_scales_gradients():  # pragma: no cover - no GPU on CI
    images, labels = blobs(64, seed=2)
    model = ImageClassifier("small_cnn", epochs=1, batch_size=16, precision="fp16", seed=0,
                            device="cuda", progress=False).fit(images, labels)
    assert model.precision_ == "fp16" and np.isfinite(model.history_[-1]["loss"])


# -- DropConnect -------------------------------------------------------------------------
def test_dropconnect_masks_weights_only_in_training():
    layer = DropConnectLinear(20, 10, p=0.5)
    x = torch.ones(4, 20)
    layer.eval()
    np.testing.assert_allclose(layer(x).detach(), torch.nn.functional.linear(
        x, layer.weight, layer.bias).detach())  # the mean weights at test time
    assert torch.equal(layer(x), layer(x))
    layer.train()
    generator_state = torch.get_rng_state()
    try:
        torch.manual_seed(0)
        a, b = layer(x), layer(x)
    finally:
        torch.set_rng_state(generator_state)
    assert not torch.equal(a, b)  # a new mask per batch
    # one mask for the whole batch: every row of a batch of equal inputs is the same
    assert torch.allclose(a[0], a[1])
    with pytest.raises(Exception, match="DropConnect probability"):
        DropConnectLinear(4, 2, p=1.0)
    network = build_model("dropconnect", channels=1, outputs=10, size=(28, 28))
    assert any(isinstance(m, DropConnectLinear) for m in network.modules())


def test_dropconnect_trains_on_digits():
    with np.load(DIGITS) as data:
        order = np.random.default_rng(0).permutation(len(data["labels"]))
        images, labels = data["images"][order], data["labels"][order]
    model = ImageClassifier("dropconnect", epochs=3, batch_size=32, seed=0,
                            progress=False).fit(images[:600], labels[:600])
    assert model.score(images[600:900], labels[600:900]) > 0.6
    assert not model.network_.training


# -- test-time augmentation --------------------------------------------------------------
def test_tta_views_are_deterministic_and_average():
    images = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    assert tta_views("flip") == ("original", "hflip")
    assert len(tta_views("shift")) == 5 and tta_views("shift", 3) == tta_views("shift")[:3]
    np.testing.assert_array_equal(view_images(images, "hflip"), images[:, :, ::-1])
    assert view_images(images, "shift++").shape == images.shape
    assert tta_views("rotation", 3) == ("original", "rotation#1", "rotation#2")
    a = view_images(images, "rotation#1", seed=4)
    np.testing.assert_array_equal(a, view_images(images, "rotation#1", seed=4))
    with pytest.raises(LearnError, match="Unknown test-time augmentation"):
        tta_views("no-such-policy")
    with pytest.raises(LearnError, match="n >= 2"):
        tta_views("flip", 1)

    def mean_row(x):  # a "model" whose probability is the image's mean brightness
        p = np.asarray(x, dtype=np.float64).reshape(len(x), -1).mean(1) / 255
        return np.stack([p, 1 - p], 1)

    probs = tta_proba(mean_row, images, "flip")
    np.testing.assert_allclose(probs, mean_row(images), rtol=1e-6)  # a mirror keeps the mean


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("toolkit")
    with np.load(DIGITS) as data:
        order = np.random.default_rng(1).permutation(len(data["labels"]))[:300]
        np.savez(root / "digits.npz", images=data["images"][order],
                 labels=data["labels"][order])
    ws = smartset.init(root / "ws")
    ws.ingest(root / "digits.npz", show_progress=False)
    yield ws
    ws.close()


def test_cli_train_lr_find_one_cycle_then_evaluate_tta_and_saliency(digits_ws):
    ws = digits_ws
    result = run("train", "-w", ws.path, "--model", "lenet", "--epochs", "2", "--lr-find",
                 "--schedule", "one-cycle", "--json")
    trained = json.loads(result.stdout)
    found = trained["config"]["lr_find"]
    assert found["method"] == "valley" and found["default_lr"] == 1e-3
    assert trained["config"]["options"]["lr"] == found["lr"]  # trained at the suggestion
    assert trained["config"]["options"]["schedule"] == "one-cycle"
    assert trained["precision"] == "fp32"
    folder = ws.path / "models" / f"run-{trained['run_id']}"
    assert (folder / found["plot"]).read_bytes()[:4] == b"\x89PNG"
    shown = run("evaluate", trained["run_id"], "-w", ws.path, "--held-out", "--tta", "shift",
                "--tta-n", "3")
    assert "plain vs test-time augmentation" in shown.output and "tta shift" in shown.output
    evaluated = json.loads(run("evaluate", trained["run_id"], "-w", ws.path, "--held-out",
                               "--tta", "shift", "--saliency", "--json").stdout)
    rows = evaluated["tta"]["rows"]
    assert [r["scoring"] for r in rows] == ["plain", "tta shift"] and rows[1]["views"] == 5
    assert rows[0]["accuracy"] == evaluated["accuracy"]  # the plain score, beside
    montage = Path(evaluated["saliency"]["montage_png"])
    assert montage.read_bytes()[:4] == b"\x89PNG"
    assert evaluated["saliency"]["n_maps"] >= 1  # 2 epochs on 240 digits: some are wrong
    index = json.loads(Path(evaluated["saliency"]["index"]).read_text())
    sample_id, first = next(iter(index.items()))
    assert (Path(evaluated["saliency"]["index"]).parent / first["file"]).is_file()
    # the review app's focus view reads the precomputed map
    from review_helpers import TOKEN, Client

    from smartset.review.app import create_app

    client = Client(create_app(ws.path, token=TOKEN, author="ana"))
    try:
        focus = client.get(f"/api/samples/{sample_id}").json()
        assert focus["saliency"]["run_id"] == evaluated["run_id"]
        assert focus["saliency"]["predicted"] == first["predicted"]
        picture = client.get(focus["saliency"]["url"])
        assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
        others = set(ws.samples()["id"]) - set(index)
        assert client.get(f"/api/samples/{sorted(others)[0]}").json()["saliency"] is None
        assert client.get(f"/api/samples/{sorted(others)[0]}/saliency").status_code == 404
    finally:
        client.close()
    bad = run("evaluate", trained["run_id"], "-w", ws.path, "--held-out", "--tta", "nope",
              code=1)
    assert "Unknown test-time augmentation" in bad.output
    predicted = json.loads(run("predict", trained["run_id"], "-w", ws.path, "--tta-policy",
                               "rotation", "--tta-n", "3", "--out", ws.path / "p.csv",
                               "--json").stdout)
    assert predicted["tta"] == ["original", "rotation#1", "rotation#2"]


def test_study_augment_runs_the_three_mnist_architectures(digits_ws):
    ws = digits_ws
    found = json.loads(run("study", "augment", "-w", ws.path, "--model",
                           "lenet,network3,dropconnect", "--combinations", "original",
                           "--runs", "1", "--train-size", "80", "--test-size", "40",
                           "--steps", "3", "--json").stdout)
    assert [s["model"] for s in found["studies"]] == ["lenet", "network3", "dropconnect"]
    bad = run("study", "augment", "-w", ws.path, "--model", "lenet,nope", code=1)
    assert "Unknown model(s) nope" in bad.output
