"""The learning stage over arrays: models, training, checkpoints and resume, out-of-fold
predictions, baselines, metrics, robustness shifts, DaCoLT and the augmentation study."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from smartset.learn import (CheckpointError, ImageClassifier, ImageRegressor, LearnError,  # noqa: E402
                            NotFittedError, available_models, build_model,
                            classification_baselines, classification_report, condition_table,
                            cross_val_predict, dacolt_preprocess, load_checkpoint,
                            shift_images, study_augment)
from smartset.learn.models import UnknownModelError  # noqa: E402
from smartset.learn.robustness import brightness  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"


@pytest.fixture(scope="module")
def digits():
    """The 1,000 shipped MNIST digits, shuffled: 800 to train, 200 to test."""
    with np.load(DIGITS) as data:
        images, labels = data["images"], data["labels"]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    return images[:800], labels[:800], images[800:], labels[800:]


@pytest.mark.parametrize("name", sorted(available_models()))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 40, 56)])
def test_every_model_builds_for_the_data_shape(name, shape):
    network = build_model(name, channels=shape[0], outputs=7, size=shape[1:])
    x = torch.zeros(2, *shape)
    assert network(x).shape == (2, 7)
    assert network.features(x).shape == (2, network.feature_dim)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match="lenet.*network3.*small_cnn.*resnet"):
        build_model("vgg99", channels=1, outputs=2, size=(28, 28))


def test_training_learns_digits_and_is_reproducible(digits):
    train_x, train_y, test_x, test_y = digits
    train_x, train_y = train_x[:500], train_y[:500]
    a = ImageClassifier("small_cnn", epochs=3, seed=3, progress=False).fit(train_x, train_y)
    b = ImageClassifier("small_cnn", epochs=3, seed=3, progress=False).fit(train_x, train_y)
    c = ImageClassifier("small_cnn", epochs=1, seed=4, progress=False).fit(train_x, train_y)
    assert a.score(test_x, test_y) > 0.8
    np.testing.assert_array_equal(a.predict_proba(test_x), b.predict_proba(test_x))
    assert not np.array_equal(a.predict_proba(test_x), c.predict_proba(test_x))
    assert [h["epoch"] for h in a.history_] == [1, 2, 3]
    assert a.history_[-1]["loss"] < a.history_[0]["loss"]
    assert a.transform(test_x[:5]).shape == (5, 128)
    state = torch.random.get_rng_state()
    ImageClassifier("small_cnn", epochs=1, seed=0, progress=False).fit(train_x[:64], train_y[:64])
    assert torch.equal(state, torch.random.get_rng_state())  # no global seeding


class _Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_model(tmp_path, digits):
    train_x, train_y, test_x, _ = digits
    train_x, train_y = train_x[:400], train_y[:400]
    options = dict(epochs=4, seed=5, progress=False, val_fraction=0.1)
    whole = ImageClassifier("lenet", **options).fit(train_x, train_y)

    class DiesAfterTwoEpochs(ImageClassifier):
        def _save_training_state(self, path, network, optimizer, generator, epoch, best):
            super()._save_training_state(path, network, optimizer, generator, epoch, best)
            if epoch == 1:
                raise _Killed

    checkpoint = tmp_path / "run" / "model.pt"
    with pytest.raises(_Killed):
        DiesAfterTwoEpochs("lenet", checkpoint=checkpoint, **options).fit(train_x, train_y)
    with pytest.raises(CheckpointError, match="unfinished training run"):
        load_checkpoint(checkpoint)
    resumed = ImageClassifier("lenet", checkpoint=checkpoint, resume=True, **options)
    resumed.fit(train_x, train_y)
    np.testing.assert_allclose(resumed.predict_proba(test_x), whole.predict_proba(test_x),
                               atol=1e-5)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    loaded = load_checkpoint(checkpoint)
    np.testing.assert_allclose(loaded.predict_proba(test_x), whole.predict_proba(test_x),
                               atol=1e-5)
    assert loaded.classes_ == whole.classes_ and loaded.best_epoch_ == whole.best_epoch_


def test_bad_checkpoints_and_unfitted_models_say_what_to_do(tmp_path, digits):
    with pytest.raises(NotFittedError, match="not fitted"):
        ImageClassifier().predict(digits[2])
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged or not a smartset checkpoint"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a smartset checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_bad_training_data_gets_clear_errors(digits):
    train_x, train_y = digits[0], digits[1]
    with pytest.raises(LearnError, match="at least two classes"):
        ImageClassifier(progress=False).fit(train_x[:10], np.zeros(10, dtype=int))
    with pytest.raises(LearnError, match="no label"):
        ImageClassifier(progress=False).fit(train_x[:3], np.array(["a", None, "b"], dtype=object))
    with pytest.raises(LearnError, match="uint8"):
        ImageClassifier(progress=False).fit(train_x[:4].astype(np.float32), train_y[:4])
    with pytest.raises(LearnError, match="different sizes"):
        ImageClassifier(progress=False).fit(np.array([np.zeros((4, 4)), np.zeros((5, 5))],
                                                     dtype=object), [0, 1])
    with pytest.raises(LearnError, match="targets must be numbers"):
        ImageRegressor(progress=False).fit(train_x[:2], ["big", "small"])
    with pytest.raises(LearnError, match="class_weight"):
        ImageClassifier(class_weight="heavy").fit(train_x[:4], train_y[:4])
    model = ImageClassifier("small_cnn", epochs=1, progress=False).fit(train_x[:50], train_y[:50])
    with pytest.raises(LearnError, match="takes 1-channel 28x28 images, got 3-channel 28x28"):
        model.predict(np.zeros((2, 28, 28, 3), dtype=np.uint8))


def test_transfer_replaces_the_head_and_a_frozen_backbone_stays_put(tmp_path, digits):
    train_x, train_y = digits[0], digits[1]
    low = train_y < 5
    source = ImageClassifier("lenet", epochs=2, seed=0, progress=False,
                             checkpoint=tmp_path / "pre.pt").fit(train_x[low], train_y[low])
    frozen = ImageClassifier(epochs=2, init_from=tmp_path / "pre.pt", trainable_blocks=0,
                             progress=False).fit(train_x[~low], train_y[~low])
    assert frozen.classes_ == [5, 6, 7, 8, 9] and frozen.model_name_ == "lenet"
    before, after = source.network_.backbone.state_dict(), frozen.network_.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    tuned = ImageClassifier(epochs=1, init_from=tmp_path / "pre.pt", backbone_lr_scale=0.1,
                            progress=False).fit(train_x[~low], train_y[~low])
    changed = tuned.network_.backbone.state_dict()
    assert any(not torch.equal(before[k], changed[k]) for k in before)
    head_only = ImageClassifier(epochs=1, init_from=tmp_path / "pre.pt", progress=False)
    head_only.head_epochs = 1
    with pytest.raises(LearnError, match="head_epochs"):
        head_only.fit(train_x[~low], train_y[~low])
    warmed = ImageClassifier(epochs=2, init_from=tmp_path / "pre.pt", head_epochs=1,
                             backbone_lr_scale=0.1, progress=False).fit(train_x[~low], train_y[~low])
    after_both = warmed.network_.backbone.state_dict()
    assert any(not torch.equal(before[k], after_both[k]) for k in before)
    with pytest.raises(LearnError, match="same size and mode"):
        ImageClassifier(epochs=1, init_from=tmp_path / "pre.pt", progress=False).fit(
            np.zeros((4, 32, 32), dtype=np.uint8), [0, 1, 0, 1])


def test_out_of_fold_probabilities(digits):
    train_x, train_y = digits[0][:400], digits[1][:400]
    probs, features = cross_val_predict(train_x, train_y, folds=3, epochs=3, seed=0, batch_size=32,
                                        return_features=True, progress=False)
    assert probs.shape == (400, 10) and features.shape == (400, 128)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == train_y).mean() > 0.6
    with pytest.raises(LearnError, match="at least 3 samples per class"):
        cross_val_predict(train_x[:12], np.r_[np.zeros(10, int), [1, 1]], folds=3)


def test_baselines_and_metrics(digits):
    train_x, train_y, test_x, test_y = digits
    results = {r["name"]: r for r in classification_baselines(train_x, train_y, test_x)}
    accuracy = {name: (r["predicted"] == test_y).mean() for name, r in results.items()}
    assert accuracy["most_frequent"] < 0.2
    assert accuracy["knn_pixels (k=3)"] > 0.8
    assert accuracy["linear_probe"] > 0.6
    probs = np.eye(3)[[0, 1, 2, 2, 1]] * 0.9 + 0.1 / 3
    report = classification_report(["a", "b", "c", "b", "b"], probs, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.8)
    assert report["confusion"] == [[1, 0, 0], [0, 2, 1], [0, 0, 1]]
    assert report["most_confused"] == [{"true": "b", "predicted": "c", "count": 1}]
    per_class = {r["class"]: r for r in report["per_class"]}
    assert per_class["c"]["precision"] == pytest.approx(0.5)
    assert per_class["b"]["recall"] == pytest.approx(2 / 3)


def test_shifts_dacolt_and_the_condition_table(digits):
    photos = np.random.default_rng(0).integers(60, 200, size=(6, 32, 32, 3), dtype=np.uint8)
    base = brightness(photos)
    assert (brightness(shift_images(photos, "darker")) < base).all()
    assert (brightness(shift_images(photos, "brighter")) > base).all()
    assert shift_images(photos, "rotated").shape == photos.shape
    with pytest.raises(LearnError, match="darker, brighter"):
        shift_images(photos, "upside-down")
    dark = (photos * 0.15).astype(np.uint8)
    light = (150 + photos * 0.4).astype(np.uint8)  # over-lit, not clipped
    for images in (dark, light):
        fixed = brightness(dacolt_preprocess(images, target=(0.3, 0.55)))
        assert ((fixed > 0.2) & (fixed < 0.7)).all()
    rows = condition_table({"high": (["k", "k", "n", "n"], ["k", "n", "k", "n"]),
                            "low": (["k", "n"], ["k", "n"])}, positive="k")
    assert rows[0] == {"condition": "high", "n": 4, "positives": 2, "TP": 1, "FP": 1, "FN": 1,
                       "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert rows[-1]["condition"] == "average" and rows[-1]["recall"] == pytest.approx(0.75)
    assert rows[-1]["n"] == 6  # disjoint conditions: counts add up


def test_regression_beats_the_mean(digits):
    images = digits[0][:300]
    ink = images.reshape(len(images), -1).mean(1, keepdims=True) / 255.0
    model = ImageRegressor("small_cnn", epochs=8, seed=0, progress=False).fit(images, ink)
    error = np.abs(model.predict(images) - ink).mean()
    assert error < 0.7 * np.abs(ink - ink.mean()).mean()


def test_study_table_has_every_combination_and_ensembles(digits):
    train_x, train_y, test_x, test_y = digits
    result = study_augment(train_x[:200], train_y[:200], test_x[:100], test_y[:100],
                           combinations=["original", "rotation"], runs=2, epochs=1,
                           model="small_cnn", ensembles=(3,), progress=False)
    table = result["table"]
    assert list(table["combination"]) == ["original", "rotation"]
    assert (table["instances"] == 200).all() and table.loc[0, "vs_original"] == 0
    assert len(result["runs"]) == 4
    [ensemble] = result["ensembles"]
    assert ensemble["ensemble"] == "ensemble-3" and len(ensemble["members"]) == 3
    assert "| rotation |" in result["markdown"]
    with pytest.raises(LearnError, match="Unknown combination"):
        study_augment(train_x, train_y, test_x, test_y, combinations=["mirror"])
    expanded = study_augment(train_x[:100], train_y[:100], test_x[:50], test_y[:50],
                             combinations=["rotation"], runs=1, epochs=1, factor=3,
                             model="small_cnn", progress=False)
    assert expanded["table"].loc[0, "instances"] == 300


def test_an_ensemble_of_members_at_different_sizes_and_modes(digits):
    """Members trained at 28x28 gray and 20x20 RGB vote together: each sees the images
    resized and converted to its own input (they were refused before)."""
    import cv2

    from smartset.learn import EnsembleClassifier

    train_x, train_y, test_x, test_y = digits
    big = ImageClassifier("small_cnn", epochs=2, seed=0, progress=False).fit(
        train_x[:400], train_y[:400])
    small_rgb = np.stack([cv2.cvtColor(cv2.resize(im, (20, 20), interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_GRAY2RGB) for im in train_x[:400]])
    small = ImageClassifier("small_cnn", epochs=2, seed=1, progress=False).fit(
        small_rgb, train_y[:400])
    ensemble = EnsembleClassifier([big, small])
    assert ensemble.input_shape_ == (3, 28, 28)  # loaded once at the largest size
    probs = ensemble.predict_proba(test_x[:100])
    assert probs.shape == (100, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
    alone = small.predict_proba(np.stack([cv2.cvtColor(
        cv2.resize(im, (20, 20), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2RGB)
        for im in test_x[:100]]))
    assert np.allclose(probs, (big.predict_proba(test_x[:100]) + alone) / 2, atol=1e-5)
    assert ensemble.score(test_x[:100], test_y[:100]) > 0.5
