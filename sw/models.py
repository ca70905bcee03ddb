"""The models the flow quantises, and loading and saving their weights.

The digits CNN is an ``nn.Sequential`` of Conv2d / ReLU / MaxPool2d / Flatten / Linear only
(no BatchNorm) so that the integer golden model can lower it layer by layer; every GEMM has
K <= 288. Weights files are safetensors; ``.pt`` / ``.pth`` state dicts are read only through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sqaccel import files
from sqaccel.errors import SqaccelError

QUANTIZABLE_TYPES = (nn.Conv2d, nn.Linear)
DIGITS_CLASSES = 10


def digits_cnn() -> nn.Sequential:
    """The 8x8 digits classifier: three 3x3 convolutions, two max-pools, two linear layers."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64),
        nn.ReLU(),
        nn.Linear(64, DIGITS_CLASSES),
    )


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Conv2d and Linear layers, (name, module), in definition order."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE_TYPES)]
    if not layers:
        raise SqaccelError(
            f"{type(model).__name__}: no quantizable layer (Conv2d or Linear) in the model"
        )
    return layers


# -- weights files ---------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a .pt/.pth state dict (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise SqaccelError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SqaccelError(f"{path}: not a readable safetensors file ({e})") from None
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a bad or unsafe file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SqaccelError(f"{path}: not a weights-only torch state dict ({first})") \
                from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise SqaccelError(f"{path}: does not hold a state dict of tensors")
        return dict(obj)
    raise SqaccelError(f"{path}: unknown weights format (use .safetensors, .pt or .pth)")


def read_tensor(path: str | Path, tensor: str | None = None) -> np.ndarray:
    """A float64 array from a .npy file or one tensor of a .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise SqaccelError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise SqaccelError(f"{path}: not a readable .npy array ({e})") from None
        if tensor is not None:
            raise SqaccelError(f"{path}: --tensor applies to .safetensors files only")
    elif suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                if tensor is None:
                    if len(names) != 1:
                        raise SqaccelError(
                            f"{path}: holds {len(names)} tensors; name one with --tensor "
                            f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
                        )
                    tensor = names[0]
                if tensor not in names:
                    raise SqaccelError(f"{path}: no tensor named {tensor!r}")
                a = f.get_tensor(tensor)
        except (SafetensorError, OSError) as e:
            raise SqaccelError(f"{path}: not a readable .safetensors file ({e})") from None
    else:
        raise SqaccelError(f"{path}: expected a .npy or .safetensors file")
    from sqaccel.sw.sq_search import as_float64

    return as_float64(a, what=str(path) + (f" [{tensor}]" if tensor else ""))



def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a weights file into ``model`` (in place); a key or shape mismatch is an error."""
    state = read_state_dict(path)
    # Checkpoints saved from DataParallel prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise SqaccelError(
                f"{path}: keys do not match {type(model).__name__} "
                f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
            )
    for k in own:  # in the model's order, so the first mismatch named is the first layer's
        v = state.get(k)
        if v is not None and own[k].shape != v.shape:
            raise SqaccelError(
                f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
            )
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise SqaccelError(f"{path}: {k} holds NaN or Inf")
    model.load_state_dict(state, strict=strict)
    return model


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write the model's state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return files.write_with(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
