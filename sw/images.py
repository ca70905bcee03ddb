"""Memory images of an integer network: export, load and verify an images folder.

Per GEMM layer: the weight codes, the step tables (shift-add PE), the biases and the
requantisation words, laid out by the interface (``sqaccel.abi``) and written by the image
codec (``sqaccel.imagecodec``) as ``$readmemh`` text and raw binary, with one
``manifest.json`` that names every file (layer, shape, word width, bits, SHA-256) and carries
the config, the activation scales and the non-GEMM steps: enough to rebuild the
``IntNetwork`` from the images alone (``load``) and re-run the golden model (``verify``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sqaccel import abi, arith, files, imagecodec
from sqaccel.config import AccelConfig, ConfigError
from sqaccel.errors import SqaccelError
from sqaccel.imagecodec import MANIFEST, ImageError
from sqaccel.sw.actquant import ActQuant
from sqaccel.sw.intnet import GemmOperands, IntLayer, IntNetwork, IntStep

__all__ = ["MANIFEST", "ImageError", "LoadedImages", "check_capacity", "export", "gemm_words",
           "layer_words", "load", "verify"]
KIND = "images"  # the output kind of an images folder (sqaccel.files)


def check_capacity(net: IntNetwork) -> None:
    """Every GEMM layer must fit the array on its own: K and N within K_max and n_max, its
    weights and step tables within their buffers, one row tile of its input within the
    activation buffer (``sqaccel.abi.capacity_problems``)."""
    for layer in net.gemm_layers():
        problems = abi.capacity_problems(net.cfg, layer.k, layer.n_group)
        if problems:
            raise ConfigError(f"layer {layer.name!r} does not fit the array "
                              f"{net.cfg.name()}: {'; '.join(problems)}")


def tensor_sha256(t: torch.Tensor) -> str:
    """Hash of an integer tensor's values (int64 little-endian, row-major)."""
    a = arith.as_i64(t).contiguous().numpy().astype("<i8")
    return hashlib.sha256(a.tobytes()).hexdigest()


def layer_words(layer: IntLayer, cfg: AccelConfig) -> dict[str, list[int]]:
    """The image words of one GEMM layer, by kind (its groups one after another)."""
    tables = layer.tables if layer.pe == "shift" else None
    return abi.layer_words(layer.codes, tables, layer.bias, layer.m, layer.s, cfg,
                           layer.groups)


def gemm_words(ops: GemmOperands, cfg: AccelConfig) -> dict[str, list[int]]:
    """Every buffer word of one ungrouped GEMM (``IntNetwork.operands``): what a testbench
    loads and the result words it must read back (``results``)."""
    (x,) = ops.x
    out = {"act": abi.activation_words(x, cfg),
           **abi.layer_words(ops.codes, ops.tables, ops.bias, ops.m, ops.s, cfg)}
    out["results"] = abi.result_words(ops.out, cfg)
    return out


def _image_shape(kind: str, layer: IntLayer, cfg: AccelConfig) -> list[int]:
    """The logical tensor an image holds (weights: [K per group, N])."""
    if kind == "weights":
        return [layer.k, layer.n]
    if kind == "steps":
        return [1 if cfg.step_tables == "layer" else layer.n, cfg.levels]
    return [layer.n]


# -- export --------------------------------------------------------------------------------


def reference_record(net: IntNetwork, x_int: torch.Tensor) -> dict:
    """Inputs, logits and per-step output hashes of ``net`` on ``x_int``, for ``verify``."""
    run = net.run(x_int)
    return {
        "inputs_shape": list(x_int.shape),
        "inputs": arith.as_i64(x_int).flatten().tolist(),
        "logits": run.logits.tolist(),
        "outputs_sha256": {k: tensor_sha256(v) for k, v in run.outputs.items()},
        "outputs_shape": {k: list(v.shape) for k, v in run.outputs.items()},
    }


def build_manifest_and_files(
    net: IntNetwork, reference: dict | None = None, info: dict | None = None
) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the bytes of every file, for ``net``."""
    cfg = net.cfg
    data: dict[str, bytes] = {}
    entries: dict[str, dict] = {}
    steps = []
    ordinal = 0
    for step in net.steps:
        if isinstance(step, IntStep):
            steps.append({**step.meta(), "runs_on": "host"})
            continue
        meta = step.meta()
        meta["runs_on"] = "array"
        meta["images"] = {}
        stem = imagecodec.file_stem(ordinal, step.name)
        ordinal += 1
        for kind, words in layer_words(step, cfg).items():
            n_words, lanes, lane_bits = abi.image_format(kind, step.k, step.n_group, cfg,
                                                         step.groups)
            meta["images"][kind] = {}
            for fmt in imagecodec.FILE_FORMATS:
                fname = imagecodec.file_name(stem, kind, fmt)
                blob = imagecodec.encode(words, lanes * lane_bits, fmt)
                data[fname] = blob
                meta["images"][kind][fmt] = fname
                entries[fname] = imagecodec.file_entry(
                    blob, layer=step.name, image=kind, fmt=fmt, words=n_words, lanes=lanes,
                    lane_bits=lane_bits, shape=_image_shape(kind, step, cfg), bits=step.bits,
                    array_bits=cfg.weight_bits, method=step.method, pe=step.pe)
        steps.append(meta)
    manifest = {
        "format": imagecodec.FORMAT,
        "version": imagecodec.VERSION,
        "config": cfg.to_dict(),
        "input": {
            "quant": net.input.to_dict(),
            "shape": list(net.input_shape) if net.input_shape is not None else None,
        },
        "steps": steps,
        "files": entries,
        "reports": list(net.reports),
    }
    if reference is not None:
        manifest["reference"] = reference
    if info is not None:
        manifest["info"] = info
    return manifest, data


def export(
    net: IntNetwork,
    out_dir: str | Path,
    reference_inputs: torch.Tensor | None = None,
    info: dict | None = None,
    force: bool = False,
) -> Path:
    """Write the images of ``net`` to ``out_dir``, replacing an earlier images folder
    (only one this toolchain wrote, unless ``force``: ``sqaccel.files``).

    Everything goes to a temporary sibling folder first, renamed when complete, so a failed
    export leaves nothing behind. ``reference_inputs`` (integer network inputs) are run now
    and stored with their logits and per-step output hashes; ``verify`` re-runs them. The
    network must fit the array's buffers layer by layer (``check_capacity``).
    """
    out = Path(out_dir)
    files.check_replaceable(out, KIND, force)
    check_capacity(net)
    reference = reference_record(net, reference_inputs) if reference_inputs is not None else None
    manifest, blobs = build_manifest_and_files(net, reference, info)
    with files.staged_folder(out, KIND, force) as tmp:
        for fname, blob in blobs.items():
            (tmp / fname).write_bytes(blob)
        (tmp / MANIFEST).write_bytes(imagecodec.manifest_bytes(manifest))
    return out


# -- load and verify -----------------------------------------------------------------------


@dataclass
class LoadedImages:
    network: IntNetwork
    manifest: dict
    directory: Path
    words: dict[str, list[int]] = field(default_factory=dict)  # file name -> verified words
    checks: list[str] = field(default_factory=list)

    def layer_words(self, name: str) -> dict[str, list[int]]:
        """The buffer words of GEMM layer ``name``, by kind, as its image files hold them."""
        for meta in self.manifest["steps"]:
            if meta.get("op") == "gemm" and meta["name"] == name:
                return {kind: self.words[f["hex"]] for kind, f in meta["images"].items()}
        raise SqaccelError(f"{self.directory}: no GEMM layer {name!r} in the manifest")


def config_of(manifest: dict, where: Path, cfg: AccelConfig | None = None) -> AccelConfig:
    """The config the images were built for, checked against this toolchain's derivations
    and, when given, against ``cfg``."""
    try:
        built = AccelConfig.from_dict(manifest["config"])
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"{where}: config is not valid ({e})") from None
    if built.to_dict() != manifest["config"]:
        diff = _dict_diff(built.to_dict(), manifest["config"])
        raise ImageError(f"{where}: config's derived values disagree with this toolchain: {diff}")
    if cfg is not None and cfg.to_dict() != built.to_dict():
        diff = _dict_diff(cfg.to_dict(), built.to_dict())
        raise ImageError(
            f"{where}: images built for config {built.name()}, not {cfg.name()}: {diff}")
    return built


def _dict_diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = _dict_diff(va, vb, f"{prefix}{k}.")
            if sub:
                out.append(sub)
        elif va != vb:
            out.append(f"{prefix}{k} {vb!r} (expected {va!r})")
    return ", ".join(out)


def _expect(cond: bool, p: Path, what: str) -> None:
    if not cond:
        raise ImageError(f"{p}: {what}")


def _groups(words: list[int], groups: int) -> list[list[int]]:
    per = len(words) // groups
    return [words[g * per : (g + 1) * per] for g in range(groups)]


def _decode_layer(d: Path, meta: dict, manifest: dict, words: dict[str, list[int]],
                  cfg: AccelConfig) -> IntLayer:
    name = meta["name"]
    g = int(meta.get("groups", 1))
    k, n = int(meta["K"]), int(meta["N"])
    if g < 1 or n % g:
        raise ImageError(f"{d / MANIFEST}: layer {name!r}: {g} groups for N = {n}")
    ng = n // g
    kinds = ["weights", "bias", "requant"] + (["steps"] if meta["pe"] == "shift" else [])
    fnames = imagecodec.layer_images(manifest, meta, kinds, d / MANIFEST)

    def get(kind: str) -> tuple[list[list[int]], Path]:
        """The image's words, one list per group (a per-layer table: one for all)."""
        fname = fnames[kind]
        entry = manifest["files"][fname]
        expected = abi.image_format(kind, k, ng, cfg, g)
        got = (int(entry["words"]), int(entry["lanes"]), int(entry["lane_bits"]))
        _expect(got == expected, d / fname, f"{kind} image of {got[0]} words x {got[1]} "
                f"lanes x {got[2]} bits, layer {name!r} on this config needs {expected}")
        once = kind == "steps" and cfg.step_tables == "layer"
        return [words[fname]] * g if once else _groups(words[fname], g), d / fname

    ww, p = get("weights")
    full = [abi.weights_from_words(w, k, ng, cfg) for w in ww]
    _expect(not any(f[:, ng:].any() for f in full), p, "padding lanes hold non-zero codes")
    codes = torch.from_numpy(np.concatenate([f[:, :ng] for f in full], axis=1))
    tables = None
    if meta["pe"] == "shift":
        sw, p = get("steps")
        full = [abi.tables_from_words(w, ng, cfg) for w in sw]
        _expect(all(bool((f[ng:] == arith.off_entry(cfg.universal)).all()) for f in full), p,
                "padding lanes hold step words other than all-off")
        t = np.concatenate([f[:ng] for f in full])
        for idx, word in enumerate(t.reshape(-1).tolist()):
            try:
                cfg.universal.decode_step_entry(word)
            except ConfigError as e:
                raise ImageError(
                    f"{p}: column {idx // cfg.levels} entry {idx % cfg.levels}: {e}") from None
        tables = torch.from_numpy(np.ascontiguousarray(t))
    bw, p = get("bias")
    full = [abi.bias_from_words(w, ng, cfg) for w in bw]
    _expect(not any(f[ng:].any() for f in full), p, "padding lanes hold non-zero biases")
    bias = np.concatenate([f[:ng] for f in full])
    _expect(bool((np.abs(bias) <= cfg.bias_max).all()), p, f"a bias is outside +-{cfg.bias_max}")
    rw, p = get("requant")
    parts = [abi.requant_from_words(w, ng, cfg) for w in rw]
    pm, ps = abi.requant_pad(cfg)
    _expect(all(bool((mm[ng:] == pm).all() and (ss[ng:] == ps).all()) for mm, ss in parts), p,
            "padding lanes are not M = 2^15, S = 1")
    m_all = np.concatenate([mm[:ng] for mm, _ in parts])
    s_all = np.concatenate([ss[:ng] for _, ss in parts])
    _expect(bool(((m_all >= pm) & (s_all >= 1)).all()), p,
            "a requant word has M below 2^15 or S = 0")
    try:
        return IntLayer(
            name=name, kind=meta["kind"], in_channels=int(meta["in_channels"]),
            out_channels=n, kernel=tuple(meta["kernel"]), stride=tuple(meta["stride"]),
            padding=tuple(meta["padding"]), dilation=tuple(meta["dilation"]),
            bits=int(meta["bits"]), method=meta["method"], pe=meta["pe"], codes=codes,
            tables=tables, bias=torch.from_numpy(bias), m=torch.from_numpy(m_all),
            s=torch.from_numpy(s_all), relu=bool(meta["relu"]),
            in_scale=float(meta["in_scale"]), in_zero_point=int(meta["in_zero_point"]),
            out_scale=None if meta["out_scale"] is None else float(meta["out_scale"]),
            weight_scale=torch.tensor(meta["weight_scale"], dtype=torch.float64),
            bias_saturated=tuple(meta.get("bias_saturated", ())),
            zeroed=tuple(meta.get("zeroed", ())), groups=g,
            activation=meta.get("activation"),
            inputs=tuple(str(i) for i in meta.get("inputs", ())),
        )
    except (KeyError, TypeError, ValueError, SqaccelError) as e:
        raise ImageError(f"{d / MANIFEST}: layer {name!r} is not valid ({e})") from None


def load(directory: str | Path, cfg: AccelConfig | None = None) -> LoadedImages:
    """Re-read an images folder: every file checked by the image codec, the config (against
    ``cfg`` when given) and every code, step word, bias and requant word; then rebuild the
    IntNetwork from the images alone."""
    d = Path(directory)
    m, words = imagecodec.read_verified(d)
    mp = d / MANIFEST
    built = config_of(m, mp, cfg)
    steps: list[IntLayer | IntStep] = []
    for meta in m["steps"]:
        try:
            if meta.get("op") == "gemm":
                steps.append(_decode_layer(d, meta, m, words, built))
            else:
                steps.append(IntStep.from_meta(meta))
        except (KeyError, TypeError, ValueError, AttributeError, abi.WordError) as e:
            name = meta.get("name") if isinstance(meta, dict) else None
            raise ImageError(f"{mp}: step {name!r} is not valid ({e!r})") from None
    try:
        inq = ActQuant.from_dict(m["input"]["quant"])
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"{mp}: input quantisation is not valid ({e})") from None
    if inq.bits != built.act_bits:
        raise ImageError(f"{mp}: {inq.bits}-bit input on an {built.act_bits}-bit array")
    shape = m["input"].get("shape")
    try:
        net = IntNetwork(built, inq, steps, tuple(shape) if shape else None,
                         list(m.get("reports", [])))
        check_capacity(net)
    except SqaccelError as e:
        raise ImageError(f"{mp}: {e}") from None
    return LoadedImages(net, m, d, words,
                        [f"{len(words)} files: sizes, widths, SHA-256 and hex = bin"])


def reference_inputs(loaded: LoadedImages) -> torch.Tensor:
    """The integer network inputs that export stored in the manifest."""
    ref = loaded.manifest.get("reference")
    if not ref:
        raise ImageError(f"{loaded.directory}: the manifest stores no reference inputs")
    try:
        return torch.tensor(ref["inputs"], dtype=torch.int64).reshape(ref["inputs_shape"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ImageError(f"{loaded.directory / MANIFEST}: reference entry is not valid "
                         f"({e})") from None


def verify(directory: str | Path, cfg: AccelConfig | None = None,
           structural: bool = False) -> LoadedImages:
    """``load``, then re-run the stored reference inputs from the images alone and compare
    logits and every step's output with what export recorded. A manifest without reference
    inputs fails, unless ``structural`` asks for the file and word checks only."""
    loaded = load(directory, cfg)
    ref = loaded.manifest.get("reference")
    mp = loaded.directory / MANIFEST
    if structural:
        loaded.checks.append("structural check only: the reference inputs were not re-run")
        return loaded
    if ref is None:
        raise ImageError(f"{mp}: no reference record (inputs, logits, step outputs) to re-run; "
                         "--structural checks the files and words only")
    x = reference_inputs(loaded)
    try:
        want_logits = torch.tensor(ref["logits"], dtype=torch.int64)
        recorded = dict(ref["outputs_sha256"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ImageError(f"{mp}: reference entry is not valid ({e})") from None
    missing = [k for k in recorded if k not in {s.name for s in loaded.network.steps}]
    if missing:
        raise ImageError(f"{mp}: steps {missing} recorded at export are not in the network")
    run = loaded.network.run(x)
    for name, got in run.outputs.items():  # network order: the first difference is named
        if recorded.get(name) != tensor_sha256(got):
            raise ImageError(
                f"{loaded.directory}: step {name!r} output on the reference inputs differs "
                "from the one recorded at export"
            )
    if not torch.equal(run.logits, want_logits):
        raise ImageError(f"{loaded.directory}: logits on the reference inputs differ from export")
    loaded.checks.append(
        f"{x.shape[0]} reference inputs: logits and {len(recorded)} step outputs "
        "equal to export"
    )
    return loaded
