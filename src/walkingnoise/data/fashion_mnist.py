"""FashionMNIST (Zalando) from its published IDX files, read exactly like MNIST.

Files are found directly in ``root`` or in torchvision's layout ``root/FashionMNIST/raw/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from walkingnoise.data.augmentation import RandomCropFlip
from walkingnoise.data.dataset import InMemoryDataset
from walkingnoise.data.download import RemoteFile
from walkingnoise.data.idx_pairs import IdxPairLayout, load_idx_pair_dataset
from walkingnoise.data.registry import register_dataset
from walkingnoise.data.status import DatasetStatus

__all__ = ["FASHION_MNIST_CLASS_NAMES", "FASHION_MNIST_LAYOUT", "load_fashion_mnist"]

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_LAYOUT = IdxPairLayout(folder="FashionMNIST", class_names=FASHION_MNIST_CLASS_NAMES)


def _status(root: str | Path | None) -> DatasetStatus:
    """Which FashionMNIST files are on disk."""
    return FASHION_MNIST_LAYOUT.status("fashion_mnist", root, ["train", "t10k"])


@register_dataset("fashion_mnist", locate=_status)
def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    normalize: bool = True,
    download: bool | Sequence[RemoteFile] = False,
) -> InMemoryDataset:
    """Load FashionMNIST: train → train/validation (fixed split), t10k → test, (N, 1, 28, 28).

    With ``normalize`` pixels are mapped by (x/255 - 0.5) / 0.5 as in the paper.
    """
    return load_idx_pair_dataset(
        FASHION_MNIST_LAYOUT,
        "fashion_mnist",
        root,
        val_fraction=val_fraction,
        normalize=normalize,
        download=download,
        metadata={
            "paper_augmentation": "random crop 28 with padding 4, horizontal flip (training only)"
        },
        augmentation=RandomCropFlip(padding=4, fill=(-1.0 if normalize else 0.0,)),
    )
