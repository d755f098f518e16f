"""``ws.dataset(size=, transform=)`` on real photos of mixed sizes: a plain ``DataLoader``
with PyTorch's default collate batches them (fastai's ``Resize`` and Hugging Face's
``set_transform`` are the models), the pixels are the ones learn trains on, and any callable
(a smartset augmentation policy included) is a transform."""

import shutil

import numpy as np
import pytest

import smartset

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    """Six photos per class, sizes all different (the small 160x120 ones left out)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    for cls in ("pistol", "smartphone"):
        (root / cls).mkdir()
        seen = set()
        for path in sorted((shared_data / "guns-smartphones" / "train" / cls).iterdir()):
            with Image.open(path) as image:
                size = image.size
            if size == (160, 120) or size in seen:
                continue
            seen.add(size)
            shutil.copy(path, root / cls / path.name)
            if len(seen) == 6:
                break
    ws = smartset.init(root.parent / "ws")
    ws.ingest(root, show_progress=False)
    yield ws
    ws.close()


def test_a_plain_dataloader_batches_photos_of_mixed_sizes_with_size(photos):
    frame = photos.samples()
    assert len(frame) == 12 and frame[["width", "height"]].drop_duplicates().shape[0] >= 10
    with pytest.raises(RuntimeError):  # what a user met before: the default collate fails
        next(iter(DataLoader(photos.dataset(), batch_size=4)))
    loader = DataLoader(photos.dataset(size=64), batch_size=4, shuffle=False)
    batches = list(loader)
    assert len(batches) == 3
    images, labels = batches[0]
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1}
    tall = photos.dataset(size=(48, 80))
    assert tall[0][0].shape == (3, 48, 80)


def test_dataset_pixels_match_what_learn_trains_on(photos):
    from smartset.learn import load_version

    loaded = load_version(photos, size=64, mode="RGB", cache=False, progress=False)
    dataset = photos.dataset(size=64)
    position = {sid: i for i, sid in enumerate(dataset.ids)}
    for row in (0, 5, 11):
        image, _ = dataset[position[loaded.ids[row]]]
        assert np.array_equal(image.permute(1, 2, 0).numpy(), loaded.images[row])
    padded = photos.dataset(size=64, fit="pad")[0][0]
    assert padded.shape == (3, 64, 64)
    assert (padded == 0).all(dim=0).any()  # a black band where the aspect ratio was kept


def test_transform_takes_any_callable_including_an_augmentation_policy(photos):
    from smartset.augment import Compose, HorizontalFlip

    scaled = photos.dataset(size=32, transform=lambda t: t.float() / 255)
    image, _ = scaled[0]
    assert image.dtype == torch.float32 and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0

    flip = Compose([HorizontalFlip(p=1.0)])
    plain, flipped = photos.dataset(size=32), photos.dataset(size=32, transform=flip)
    assert torch.equal(flipped[3][0], plain[3][0].flip(-1))
    images, _ = next(iter(DataLoader(flipped, batch_size=6)))
    assert images.shape == (6, 3, 32, 32)


@pytest.mark.parametrize("size, message", [(0, "positive"), ("big", "int or"),
                                           ((1, 2, 3), "int or")])
def test_bad_size_or_transform_is_one_clear_error(photos, size, message):
    with pytest.raises(ValueError, match=message):
        photos.dataset(size=size)
    with pytest.raises(ValueError, match="fit must be"):
        photos.dataset(size=8, fit="crop")
    with pytest.raises(TypeError, match="transform must be a callable"):
        photos.dataset(transform="flip")
