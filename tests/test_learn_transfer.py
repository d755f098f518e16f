"""Transfer learning and fine-tuning: a pretrained backbone (EfficientNet-Lite0) as a model,
its own normalisation kept (and a source checkpoint's), the frozen head trained on features
computed once, discriminative rates and gradual unfreezing, the transfer study, and
one-line errors for a missing package. Real photos, small sizes: seconds each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.backbones import BACKBONES, MissingPackageError  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn import ImageClassifier, LearnError, build_model, load_checkpoint  # noqa: E402
from smartset.learn.pretrained import default_size  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos"
LITE0 = BACKBONES["efficientnet_lite0"]
runner = CliRunner()


def _files(per_class: int | None = None) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for folder in sorted(p for p in PHOTOS.iterdir() if p.is_dir()):
        members = sorted(folder.iterdir())[:per_class]
        files += members
        labels += [folder.name] * len(members)
    return files, np.asarray(labels, dtype=object)


@pytest.fixture(scope="module")
def photos():
    """The 80 shipped photos (pistol, smartphone) at 64x64 RGB, with their labels, and a
    seeded split: 16 for training (8 per class), the other 64 held out."""
    files, labels = _files()
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((64, 64),
                                                                       Image.Resampling.BILINEAR))
                       for f in files])
    rng = np.random.default_rng(0)
    train = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), 8, replace=False)
                                    for c in sorted(set(labels))]))
    test = np.setdiff1d(np.arange(len(labels)), train)
    return images, labels, train, test


def _pretrained_state() -> dict:
    return {k: v.clone() for k, v in build_model("efficientnet_lite0", channels=3, outputs=2,
                                                 size=(64, 64)).backbone.state_dict().items()}


def _block_changed(network, pretrained: dict, block: int, *, stats: bool = False) -> bool:
    """Whether backbone block ``block``'s weights (``stats``: its batch-norm running
    statistics) differ from the pretrained ones."""
    changed = False
    for key, value in network.backbone.state_dict().items():
        if not key.startswith(f"{block}."):
            continue
        is_stat = "running_" in key
        if is_stat == stats and "num_batches" not in key:
            changed |= not torch.equal(value.float(), pretrained[key].float())
    return changed


def test_a_frozen_backbone_and_new_head_learns_from_16_photos(photos, tmp_path, monkeypatch):
    images, labels, train, test = photos
    checkpoint = tmp_path / "model.pt"
    model = ImageClassifier("efficientnet_lite0", trainable_blocks=0, epochs=30, batch_size=8,
                            lr=1e-2, seed=0, progress=False, checkpoint=checkpoint)
    model.fit(images[train], labels[train])
    accuracy = model.score(images[test], labels[test])
    assert accuracy >= 0.8  # chance is 0.5; 16 photos, 64 px
    # The backbone's own normalisation, not the photos' statistics.
    assert model.mean_ == list(LITE0.mean) and model.std_ == list(LITE0.std)
    assert model.preprocessing_["backbone"] == "efficientnet_lite0"
    assert model.preprocessing_["normalisation"] == "backbone"
    # The frozen path: features computed once, the backbone untouched (batch norms too).
    assert hasattr(model, "features_seconds_")
    assert [h["trainable_blocks"] for h in model.history_] == [0] * 30
    pretrained = _pretrained_state()
    assert not any(_block_changed(model.network_, pretrained, b) or
                   _block_changed(model.network_, pretrained, b, stats=True) for b in range(9))

    # The checkpoint rebuilds the architecture without the ImageNet weights and keeps the
    # preprocessing.
    import smartset.backbones as backbones

    def no_weights(spec):
        raise AssertionError("a checkpoint must not load the ImageNet weights")

    monkeypatch.setattr(backbones, "_lite_weights", no_weights)
    again = load_checkpoint(checkpoint)
    assert again.model_name_ == "efficientnet_lite0"
    assert again.mean_ == list(LITE0.mean) and again.std_ == list(LITE0.std)
    assert again.preprocessing_ == model.preprocessing_
    np.testing.assert_allclose(again.predict_proba(images[test]),
                               model.predict_proba(images[test]), atol=1e-5)


def test_the_feature_cache_trains_the_same_head_as_the_per_epoch_path(photos):
    images, labels, train, _ = photos
    options = dict(trainable_blocks=0, epochs=3, batch_size=8, lr=1e-2, seed=1, progress=False)
    fast = ImageClassifier("efficientnet_lite0", **options).fit(images[train][:, :32, :32],
                                                                labels[train])
    slow = ImageClassifier("efficientnet_lite0", frozen_features=False, **options).fit(
        images[train][:, :32, :32], labels[train])
    assert not hasattr(slow, "features_seconds_")
    for a, b in zip(fast.network_.head.parameters(), slow.network_.head.parameters()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_transfer_from_a_checkpoint_keeps_its_normalisation(photos, tmp_path):
    """The bug of issue 16: normalisation recomputed on the new data made the transferred
    backbone see other inputs than it was trained on (0.28-0.67 held-out accuracy)."""
    images, labels, train, test = photos
    dark = (images * 0.35).astype(np.uint8)  # the source data: dark photos
    source_path = tmp_path / "source.pt"
    source = ImageClassifier("small_cnn", epochs=2, batch_size=16, seed=0, progress=False,
                             checkpoint=source_path).fit(dark[test], labels[test])
    bright = np.clip(images.astype(np.int16) + 90, 0, 255).astype(np.uint8)  # the new data
    target = ImageClassifier(init_from=source_path, trainable_blocks=0, epochs=5, batch_size=8,
                             seed=0, progress=False, checkpoint=tmp_path / "target.pt")
    target.fit(bright[train], labels[train])
    assert target.mean_ == source.mean_ and target.std_ == source.std_
    assert target.preprocessing_["normalisation"].startswith("checkpoint")
    # Frozen backbone + the same normalisation: the very features of the source model.
    np.testing.assert_allclose(target.transform(bright[:8]), source.transform(bright[:8]),
                               atol=1e-5)
    reloaded = load_checkpoint(tmp_path / "target.pt")
    assert reloaded.mean_ == source.mean_ and reloaded.std_ == source.std_


def test_discriminative_rates_gradual_unfreezing_and_frozen_batch_norm(photos):
    images, labels, train, _ = photos
    x, y = images[train][:, ::2, ::2], labels[train]  # 32x32: fast
    pretrained = _pretrained_state()
    options = dict(epochs=4, head_epochs=1, batch_size=8, lr=1e-3, lr_decay=0.5, seed=0,
                   progress=False)

    gradual = ImageClassifier("efficientnet_lite0", unfreeze="gradual", **options).fit(x, y)
    rates = gradual.learning_rates_
    assert rates["head"] == pytest.approx(1e-3)
    assert [rates[f"block{i}"] for i in range(9)] == pytest.approx(
        [1e-3 * 0.5 ** (9 - i) for i in range(9)])
    # head alone, then one more block from the top per epoch
    assert [h["trainable_blocks"] for h in gradual.history_] == [0, 1, 2, 3]
    for block in range(6):  # never unfrozen: weights and batch-norm statistics as pretrained
        assert not _block_changed(gradual.network_, pretrained, block)
        assert not _block_changed(gradual.network_, pretrained, block, stats=True)
    for block in (6, 7, 8):
        assert _block_changed(gradual.network_, pretrained, block)
    assert all(p.requires_grad for p in gradual.network_.parameters())  # restored after fit

    together = ImageClassifier("efficientnet_lite0", freeze_bn=True, **options).fit(x, y)
    assert [h["trainable_blocks"] for h in together.history_] == [0, 9, 9, 9]
    assert all(_block_changed(together.network_, pretrained, b) for b in range(9))
    # freeze_bn: the affine weights learn, the running statistics stay the pretrained ones
    assert not any(_block_changed(together.network_, pretrained, b, stats=True)
                   for b in range(9))

    # defaults: an ImageNet backbone being fine-tuned warms its head up and decays rates
    assert ImageClassifier("efficientnet_lite0", epochs=3)._head_epochs() == 1
    assert ImageClassifier("efficientnet_lite0")._lr_decay() == 0.7
    assert ImageClassifier("efficientnet_lite0", trainable_blocks=0)._head_epochs() == 0
    assert ImageClassifier("small_cnn")._head_epochs() == 0
    assert ImageClassifier("small_cnn")._lr_decay() == 1.0
    with pytest.raises(LearnError, match="unfreeze"):
        ImageClassifier("efficientnet_lite0", unfreeze="sometimes").fit(x, y)


def test_gray_photos_use_a_one_channel_stem_and_the_backbone_normalisation(photos):
    images, labels, train, test = photos
    gray = images.mean(axis=3, keepdims=True).astype(np.uint8)[:, ::2, ::2]
    model = ImageClassifier("efficientnet_lite0", trainable_blocks=0, epochs=10, batch_size=8,
                            lr=1e-2, seed=0, progress=False).fit(gray[train], labels[train])
    assert model.input_shape_ == (1, 32, 32)
    assert model.mean_ == [LITE0.mean[0]] and model.std_ == [LITE0.std[0]]
    assert model.predict_proba(gray[test]).shape == (len(test), 2)


@pytest.fixture(scope="module")
def photo_ws(tmp_path_factory):
    """A workspace of 12 shipped photos (6 per class), at their own differing sizes."""
    root = tmp_path_factory.mktemp("photos")
    files, _ = _files(per_class=6)
    for f in files:
        (root / "src" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "src" / f.parent.name / f.name)
    ws = smartset.init(root / "ws")
    ws.ingest(root / "src", engine="serial", show_progress=False)
    yield ws
    ws.close()


def run(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def test_cli_train_backbone_uses_its_own_size_and_normalisation(photo_ws):
    size, note = default_size("efficientnet_lite0")
    assert size == 224 and "efficientnet_lite0" in note
    assert default_size("small_cnn") == (None, None) and default_size("resnet", 64)[0] == 64
    w = photo_ws.path
    shown = run("train", "-w", w, "--backbone", "efficientnet_lite0", "--trainable-blocks", "0",
                "--epochs", "2", "--batch-size", "8")
    assert "held-out accuracy" in shown.output
    assert "input 224x224: efficientnet_lite0's own size" in shown.output  # no --size given
    record = photo_ws.runs().iloc[-1]
    assert record["config"]["size"] == [224, 224]
    model = load_checkpoint(w / record["metrics"]["checkpoint"])
    assert model.input_shape_ == (3, 224, 224)
    assert model.preprocessing_["backbone"] == "efficientnet_lite0"
    assert model.mean_ == list(LITE0.mean)
    models = json.loads(run("models", "--json").stdout)
    assert "efficientnet_lite0" in models and "pretrained" in models["efficientnet_lite0"]


def test_cli_study_transfer_writes_the_table(photo_ws):
    w = photo_ws.path
    result = json.loads(run(
        "study", "transfer", "-w", w, "--seeds", "2", "--size", "32", "--scratch-size", "32",
        "--scratch-models", "small_cnn", "--scratch-epochs", "2", "--frozen-epochs", "5",
        "--finetune-epochs", "2", "--batch-size", "8", "--json").stdout)
    table = {row["setting"]: row for row in result["table"]}
    assert set(table) == {"scratch", "frozen", "finetuned"}
    assert all(row["seeds"] == 2 for row in table.values())
    assert result["best_scratch"] == "from scratch: small_cnn"
    runs = result["runs"]
    assert len(runs) == 6 and sorted({r["seed"] for r in runs}) == [0, 1]
    for row in table.values():
        seeds = [r["accuracy"] for r in runs if r["setting"] == row["setting"]]
        assert row["mean"] == pytest.approx(np.mean(seeds))
        assert row["best"] == pytest.approx(max(seeds))
    folder = w / "reports" / "study" / f"transfer-run-{result['run_id']}"
    assert {p.name for p in folder.iterdir()} >= {"study.csv", "runs.csv", "study.md",
                                                  "study.png"}
    assert "fine-tuned efficientnet_lite0" in (folder / "study.md").read_text()
    bad = run("study", "transfer", "-w", w, "--scratch-models", "vgg", code=1)
    assert "not a from-scratch model" in bad.output


def test_a_missing_backbone_package_is_one_line(labeled):
    try:
        import timm  # noqa: F401
        pytest.skip("timm is installed")
    except ImportError:
        pass
    ws, _ = labeled
    for args in (["--init-from", "timm:resnet18"], ["--backbone", "timm:resnet18"],
                 ["--model", "timm:resnet18=weights.pth"]):
        result = run("train", "-w", ws.path, *args, code=1)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        assert "pip install timm" in lines[0] and "Traceback" not in result.output
    with pytest.raises(MissingPackageError, match="pip install timm"):
        ImageClassifier(init_from="timm:resnet18").fit(np.zeros((2, 32, 32, 3), np.uint8),
                                                       ["a", "b"])
