"""Data sets the flow runs on: scikit-learn's digits (offline default) and image folders.

The digits images are scaled to [0, 1] with no mean subtraction, so the network input has a
zero point of 0 once quantised. Image folders (a user's own data, e.g. an ImageNet
validation set laid out one folder per class) are read with Pillow and transformed with
torch ops; torchvision is not needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from sqaccel.errors import SqaccelError

DIGITS_MAX = 16.0  # the digits pixels are integers 0..16
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff",
                    ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DigitsSplit:
    """The digits data set split three ways; x is float32 [N, 1, 8, 8] in [0, 1]."""

    train: TensorDataset
    calib: TensorDataset
    test: TensorDataset
    seed: int

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "calib": len(self.calib), "test": len(self.test)}


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / DIGITS_MAX)[:, None, :, :]
    x.setflags(write=False)
    y = digits.target.astype(np.int64)
    y.setflags(write=False)
    return x, y


def load_digits_split(
    seed: int = 0, calib_fraction: float = 0.1, test_fraction: float = 0.3
) -> DigitsSplit:
    """Stratified train / calibration / test split of the digits, the same for a given seed."""
    from sklearn.model_selection import train_test_split

    if not (0 < calib_fraction < 1 and 0 < test_fraction < 1
            and calib_fraction + test_fraction < 1):
        raise SqaccelError(
            f"digits split: fractions calib={calib_fraction}, test={test_fraction} must be in "
            "(0, 1) and leave some training data"
        )
    x, y = _digits_arrays()
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    train, calib = train_test_split(
        rest,
        test_size=calib_fraction / (1 - test_fraction),
        random_state=seed,
        stratify=y[rest],
    )

    def subset(ix: np.ndarray) -> TensorDataset:
        ix = np.sort(ix)  # a stable order independent of how the splitter permutes
        return TensorDataset(torch.from_numpy(x[ix].copy()), torch.from_numpy(y[ix].copy()))

    return DigitsSplit(subset(train), subset(calib), subset(test), seed)


def digits_eval_data(
    calib_samples: int = 512, seed: int = 0
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(calibration inputs, (test inputs, test labels)) of the digits data set."""
    split = load_digits_split(seed)
    x_cal = split.calib.tensors[0][:calib_samples]
    return x_cal, (split.test.tensors[0], split.test.tensors[1])


def make_loader(
    dataset: Dataset, batch_size: int = 256, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """A single-process loader; a shuffled one draws its order from ``seed`` only."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=0)


# -- image folders -------------------------------------------------------------------------


def _to_tensor(path: Path, channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise SqaccelError(f"{path}: cannot read the image ({e})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


def resize_center_crop(img: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Scale the shorter side to ``resize`` (bilinear, antialiased), then crop the centre."""
    _, h, w = img.shape
    if h <= w:
        nh, nw = resize, max(1, round(w * resize / h))
    else:
        nh, nw = max(1, round(h * resize / w)), resize
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    if crop > min(nh, nw):
        raise SqaccelError(f"crop {crop} is larger than the resized image {nh}x{nw}")
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return img[:, top : top + crop, left : left + crop]


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``: classes are the sub-folders in sorted order."""

    def __init__(
        self,
        root: str | Path,
        resize: int = 256,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        channels: int = 3,
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise SqaccelError(f"{self.root}: data folder not found")
        if not self.root.is_dir():
            raise SqaccelError(f"{self.root}: not a folder")
        if channels not in (1, 3):
            raise SqaccelError(f"image folder: channels must be 1 or 3, got {channels}")
        if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
            raise SqaccelError(f"image folder: need {channels} means and {channels} stds > 0")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise SqaccelError(f"{self.root}: no class folders (expected root/<class>/<image>)")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            for p in sorted((self.root / name).rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((p, label))
        if not self.samples:
            raise SqaccelError(
                f"{self.root}: no images in its class folders (extensions {IMAGE_EXTENSIONS})"
            )
        self.resize, self.crop, self.channels = resize, crop, channels
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        img = resize_center_crop(_to_tensor(path, self.channels), self.resize, self.crop)
        return (img - self.mean) / self.std, label


def image_folder_loader(
    root: str | Path, batch_size: int = 32, resize: int = 256, crop: int = 224, **kwargs
) -> DataLoader:
    """An evaluation loader over an image folder (in file order, not shuffled)."""
    return make_loader(ImageFolderDataset(root, resize=resize, crop=crop, **kwargs), batch_size)
