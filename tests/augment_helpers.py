"""Shared by the online-augmentation tests (tests/test_augment_workspace.py,
tests/test_online_augment.py): a minimal map-style dataset over a tensor of images."""

import torch


class Items(torch.utils.data.Dataset):
    """``(image, i % 3)`` for each image of ``images``."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3
