"""``sqaccel search``: the SQ subset search on one weight tensor from a file.

    sqaccel search --weights W.npy --bits 4 [--per-channel] [--json]
    sqaccel search --weights model.safetensors --tensor layer1.0.conv1.weight --bits 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sqaccel.commands.options import add_config_arguments, config_from_args
from sqaccel.config import SUPPORTED_WEIGHT_BITS
from sqaccel.errors import SqaccelError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, type=Path, help="a .npy or .safetensors file")
    p.add_argument("--tensor", help="tensor name inside a .safetensors file")
    p.add_argument("--bits", required=True, type=int, choices=SUPPORTED_WEIGHT_BITS)
    p.add_argument(
        "--per-channel", action="store_true", help="one subset per output channel (dim 0)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_arguments(p, fields=())  # --config: its universal set is searched


def _fmt_levels(levels) -> str:
    return " ".join(f"{v:.6g}" for v in levels)


def _print_text(path: Path, w, results: list, per_channel: bool, seconds: float) -> None:
    r0 = results[0]
    u = r0.universal
    print(f"weights   {path}  shape {tuple(w.shape)}  {w.size} values")
    print(
        f"search    {r0.bits}-bit, {r0.candidates} candidates from {u.size} magnitudes "
        f"(scale {u.scale}), {'per output channel' if per_channel else 'per tensor'}"
    )
    if not per_channel:
        print(f"levels    {_fmt_levels(r0.levels)}   (normalised, max 1)")
        print(f"members   {' '.join(str(m) for m in r0.members)}   (universal-set positions)")
        print(f"integers  {' '.join(str(m) for m in r0.int_magnitudes)}")
        print(f"alpha     {r0.alpha:.9g}")
        print(f"max|W|    {r0.max_abs:.9g}")
        print(f"L2 error  {r0.l2:.9g}   (of W / max|W|; {r0.l2 * r0.max_abs:.6g} in W units)")
        print(f"rounds    {r0.rounds}")
        print(f"seconds   {seconds:.3f}")
        return
    print(f"{'ch':>5} {'members':<24} {'integers':<26} {'alpha':>10} {'L2':>10} {'max|W|':>10}")
    for c, r in enumerate(results):
        print(
            f"{c:>5} {','.join(map(str, r.members)):<24} "
            f"{','.join(map(str, r.int_magnitudes)):<26} {r.alpha:>10.6g} {r.l2:>10.6g} "
            f"{r.max_abs:>10.4g}"
        )
    print(f"total L2 error {sum(r.l2 ** 2 for r in results) ** 0.5:.6g} "
          f"(each channel normalised by its max|W|), seconds {seconds:.3f}")


def run(args: argparse.Namespace) -> int:
    from sqaccel.sw.models import read_tensor
    from sqaccel.sw.sq_search import search_channels, search_tensor

    universal = config_from_args(args).universal if args.config else None
    w = read_tensor(args.weights, args.tensor)
    t0 = time.perf_counter()
    if args.per_channel:
        if w.ndim == 0:
            raise SqaccelError(f"{args.weights}: a scalar has no output channels")
        results = search_channels(w, args.bits, universal, progress=True)
    else:
        results = [search_tensor(w, args.bits, universal)]
    seconds = time.perf_counter() - t0
    if args.json:
        doc = {
            "weights": str(args.weights),
            "tensor": args.tensor,
            "shape": list(w.shape),
            "bits": args.bits,
            "per_channel": bool(args.per_channel),
            "universal": results[0].universal.to_dict(),
            "seconds": seconds,
        }
        if args.per_channel:
            doc["channels"] = [r.to_dict() for r in results]
        else:
            doc.update(results[0].to_dict())
            doc["seconds"] = seconds
        print(json.dumps(doc, indent=2))
    else:
        _print_text(args.weights, w, results, args.per_channel, seconds)
    return 0
