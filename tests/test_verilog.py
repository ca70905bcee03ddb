"""Generation: Verilog that verilator -Wall accepts with the waiver file alone, the JSON
beside it, buffers preloaded from images, and configs refused with nothing written."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from sqaccel import abi, imagecodec
from sqaccel.cli import main as cli_main
from sqaccel.config import AccelConfig, ConfigError, UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.hw import verilog as gen
from sqaccel.hw.accel import packet_layout
from sqaccel.hw.array import result_layout
from sqaccel.hw.controller import command_layout
from sqaccel.hw.preload import read_images
from sqaccel.sim import hostmodel as hm
from sqaccel.sw import images


def findings(messages: str) -> list[str]:
    return [line for line in messages.splitlines() if line.startswith("%")]


@pytest.mark.parametrize("cfg", [
    AccelConfig(rows=2, cols=2),
    AccelConfig(rows=2, cols=2, pe="mult"),
    AccelConfig(rows=3, cols=2, weight_bits=2, act_bits=4, step_tables="layer", n_max=10,
                act_depth=100, weight_depth=300, k_max=50),
    AccelConfig(rows=1, cols=1, act_depth=1, weight_depth=1, n_max=1, k_max=1),
    AccelConfig(),
    AccelConfig(pe="mult"),
    AccelConfig(rows=16, cols=16),
    AccelConfig(rows=16, cols=16, pe="mult"),
    AccelConfig(rows=2, cols=3, mult_cols=2),
    AccelConfig(rows=2, cols=2, mult_cols=2, step_tables="layer", weight_bits=2),
], ids=["2x2-shift", "2x2-mult", "3x2-odd-depths", "1x1-smallest", "8x8-shift", "8x8-mult",
        "16x16-shift", "16x16-mult", "2x3-hybrid", "2x2-hybrid-layer"])
def test_generate_and_lint(cfg, tmp_path):
    out = gen.generate(cfg, tmp_path / "v")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [gen.VERILOG_FILE, gen.CONFIG_FILE, gen.FORMAT_FILE, ".sqaccel-output.json"])
    rc, messages = gen.lint(out / gen.VERILOG_FILE)
    assert rc == 0 and findings(messages) == [], messages
    assert AccelConfig.from_dict(json.loads((out / gen.CONFIG_FILE).read_text())) == cfg


def test_lint_without_waivers_does_warn(tmp_path):
    """The waiver file is what silences Amaranth's known warnings (the lint check is live)."""
    out = gen.generate(AccelConfig(rows=2, cols=2), tmp_path / "v")
    rc, messages = gen.lint(out / gen.VERILOG_FILE, waivers=None)
    rules = set(re.findall(r"%Warning-(\w+)", messages))
    assert rc != 0 and rules == {"WIDTHEXPAND", "UNUSEDSIGNAL", "PROCASSINIT", "DECLFILENAME"}


def test_format_json_describes_the_ports(tmp_path):
    cfg = AccelConfig(rows=2, cols=2)
    out = gen.generate(cfg, tmp_path / "v")
    fmt = json.loads((out / gen.FORMAT_FILE).read_text())
    text = (out / gen.VERILOG_FILE).read_text()
    header = re.search(r"^module sqaccel_top\((.*?)\);", text, re.M).group(1)
    ports = {p.strip() for p in header.split(",")}
    for entry in fmt["ports"].values():
        for key in ("payload", "valid", "ready", "port"):
            if key in entry:
                assert entry[key] in ports
    assert fmt["packet"]["width"] == packet_layout(cfg).size
    for name, f in packet_layout(cfg):
        assert fmt["packet"]["fields"][name] == {"offset": f.offset, "width": f.width}
    for name, f in command_layout(cfg):
        assert fmt["command"]["fields"][name]["offset"] == f.offset
    assert fmt["packet"]["targets"] == abi.TARGETS
    assert fmt["result"]["width"] == result_layout(cfg).size
    assert {k: v["depth"] for k, v in fmt["buffers"].items()} == {
        k: b.depth for k, b in abi.buffers(cfg).items()}
    # A packet built from format.json alone equals the one the interface builds.
    pf = fmt["packet"]["fields"]
    word = (fmt["packet"]["targets"]["bias"] << pf["target"]["offset"]) | (
        3 << pf["addr"]["offset"]) | 0x1234
    assert word == abi.packet(cfg, "bias", 3, 0x1234)


def test_cli_writes_and_refuses(tmp_path, capsys):
    out = tmp_path / "ok"
    assert cli_main(["verilog", "--rows", "2", "--cols", "2", "--pe", "mult", "--k-max", "64",
                     "--out", str(out)]) == 0
    cfg = AccelConfig.from_dict(json.loads((out / gen.CONFIG_FILE).read_text()))
    assert (cfg.rows, cfg.cols, cfg.pe, cfg.k_max) == (2, 2, "mult", 64)
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(AccelConfig(rows=2, cols=3, act_bits=4).to_json())
    assert cli_main(["verilog", "--config", str(cfg_file), "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / gen.CONFIG_FILE).read_text())["cols"] == 3
    for bad in (["--rows", "0"], ["--cols", "-1"], ["--act-bits", "5"], ["--weight-bits", "5"],
                ["--config", str(tmp_path / "missing.json")]):
        dest = tmp_path / "bad"
        assert cli_main(["verilog", *bad, "--out", str(dest)]) == 2
        assert not dest.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sqaccel verilog: error:")
    # A refusal leaves an existing output untouched, and no temporary folder behind.
    before = (out / gen.VERILOG_FILE).read_text()
    assert cli_main(["verilog", "--rows", "0", "--out", str(out)]) == 2
    assert (out / gen.VERILOG_FILE).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c.json", "ok"]


def exported_network(cfg: AccelConfig, tmp_path, gemms):
    """An images folder written by sw.images.export for a chain of Linear layers."""
    from sqaccel.sw.actquant import ActQuant
    from sqaccel.sw.intnet import IntLayer, IntNetwork

    layers = []
    for n, g in enumerate(gemms):
        _, nn, kk = g.shape
        layers.append(IntLayer(
            name=f"fc{n}", kind="linear", in_channels=kk, out_channels=nn, kernel=(1, 1),
            stride=(1, 1), padding=(0, 0), dilation=(1, 1), bits=cfg.weight_bits,
            method="sq" if cfg.pe == "shift" else "uniform", pe=cfg.pe, codes=g.codes,
            tables=g.tables, bias=g.bias, m=g.m, s=g.s, relu=g.relu, in_scale=1.0,
            in_zero_point=0, out_scale=1.0 if g.relu else None,
            weight_scale=torch.ones(nn, dtype=torch.float64)))
    net = IntNetwork(cfg, ActQuant(1.0, 0, cfg.act_bits), layers, (gemms[0].shape[2],))
    return images.export(net, tmp_path / "images")


def test_exported_images_preload_every_layer(tmp_path):
    # n_max = 16: the parameter buffers hold 8 column tiles, enough for both layers.
    cfg = AccelConfig(rows=2, cols=2, k_max=16, act_depth=64, weight_depth=64, n_max=16)
    rng = random.Random(25)
    g1 = hm.random_gemm(cfg, 3, 5, 9, rng)
    g2 = hm.random_gemm(cfg, 3, 3, 5, rng, relu=False)
    folder = exported_network(cfg, tmp_path, [g1, g2])
    pre = read_images(cfg, folder)
    assert [(la.name, la.k, la.n, la.relu) for la in pre.layers] == [
        ("fc0", 9, 5, True), ("fc1", 5, 3, False)]
    acts = {"act": g1.buffers(cfg)["act"] + g2.buffers(cfg)["act"]}
    second_act = len(g1.buffers(cfg)["act"])
    cmds = [hm.command_packet(cfg, m=3, n=la.n, k=la.k, act_base=base, w_base=la.w_base,
                              step_base=la.step_base, param_base=la.param_base, relu=la.relu)
            for la, base in zip(pre.layers, (0, second_act), strict=True)]
    runs = hm.simulate(cfg, cmds, init=pre.words, preload_packets=hm.load_packets(cfg, acts))
    assert [r.words for r in runs] == [g1.expected(cfg), g2.expected(cfg)]
    # The same images on hardware with a smaller K_max are refused, naming the layer.
    small = AccelConfig(rows=2, cols=2, k_max=8, act_depth=64, weight_depth=64, n_max=16)
    with pytest.raises(ConfigError, match="fc0.*K = 9.*K_max = 8"):
        gen.generate(small, tmp_path / "v", images=folder)
    with pytest.raises(ConfigError, match="pe"):
        read_images(AccelConfig(rows=2, cols=2, pe="mult", k_max=16, n_max=16), folder)
    assert not (tmp_path / "v").exists()


def forge(folder, fname: str, words: list[int], width: int) -> None:
    """Rewrite an image file and its twin and enter their new hashes in the manifest: a
    folder every file check passes, holding words the hardware must still refuse."""
    man = json.loads((folder / images.MANIFEST).read_text())
    stem = fname.rsplit(".", 1)[0]
    for fmt in ("hex", "bin"):
        data = imagecodec.encode(words, width, fmt)
        (folder / f"{stem}.{fmt}").write_bytes(data)
        man["files"][f"{stem}.{fmt}"]["sha256"] = imagecodec.sha256(data)
    (folder / images.MANIFEST).write_text(json.dumps(man))


def test_images_refused_before_writing(tmp_path):
    cfg = AccelConfig(rows=2, cols=2, k_max=16, act_depth=64, weight_depth=64, n_max=16,
                      universal=UniversalSet(((0, 2), (0, 1, 3))))
    rng = random.Random(26)
    folder = exported_network(cfg, tmp_path, [hm.random_gemm(cfg, 3, 5, 9, rng)])
    # More weight words than a smaller build's weight buffer holds.
    small = cfg.with_changes(weight_depth=8)
    with pytest.raises(ConfigError, match="weights words, the buffer holds 8"):
        gen.generate(small, tmp_path / "v-small", images=folder)
    # A step entry outside the shift sets: with exponent sets of 2 and 3, term 0's 2-bit
    # selector 3 is past "off" (2); the files are consistent, the word is not.
    man = json.loads((folder / images.MANIFEST).read_text())
    fname = next(f for f, e in man["files"].items() if e["image"] == "steps"
                 and e["format"] == "hex")
    entry = man["files"][fname]
    words = imagecodec.read_file(folder, fname, entry)
    words[1] = (words[1] & ~0b11) | 0b11
    forge(folder, fname, words, entry["word_bits"])
    with pytest.raises(SqaccelError, match="outside its shift set"):
        gen.generate(cfg, tmp_path / "v-step", images=folder)
    with pytest.raises(SqaccelError, match="outside its shift set"):
        images.verify(folder)
    assert not (tmp_path / "v-small").exists() and not (tmp_path / "v-step").exists()
    assert not list(tmp_path.glob(".v-*"))


def damaged_copies(folder, tmp_path) -> dict:
    """Copies of an images folder, each damaged one way."""
    import shutil

    man = json.loads((folder / images.MANIFEST).read_text())
    weights = [f for f, e in man["files"].items() if e["image"] == "weights"]
    hex_w, bin_w = sorted(weights)[1], sorted(weights)[0]
    out = {}
    for case in ("truncated", "tampered", "hash", "swapped"):
        d = tmp_path / case
        shutil.copytree(folder, d)
        out[case] = d
    data = (folder / hex_w).read_bytes()
    (out["truncated"] / hex_w).write_bytes(data[: len(data) // 2])
    (out["tampered"] / bin_w).write_bytes(bytes([data[0] ^ 1]) + (folder / bin_w).read_bytes()[1:])
    m = json.loads((out["hash"] / images.MANIFEST).read_text())
    m["files"][hex_w]["sha256"] = "0" * 64
    (out["hash"] / images.MANIFEST).write_text(json.dumps(m))
    steps = sorted(f for f, e in man["files"].items() if e["image"] == "bias"
                   and e["format"] == "hex")
    a, b = (out["swapped"] / steps[0]), (out["swapped"] / steps[1])
    ta, tb = a.read_bytes(), b.read_bytes()
    a.write_bytes(tb)
    b.write_bytes(ta)
    return out


def test_damaged_images_get_the_verify_images_message(tmp_path, capsys):
    cfg = AccelConfig(rows=2, cols=2, k_max=16, act_depth=64, weight_depth=64, n_max=16)
    rng = random.Random(27)
    folder = exported_network(cfg, tmp_path, [hm.random_gemm(cfg, 3, 5, 9, rng),
                                              hm.random_gemm(cfg, 3, 3, 5, rng, relu=False)])
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.to_json())
    for case, d in damaged_copies(folder, tmp_path).items():
        assert cli_main(["verify-images", str(d)]) == 1, case
        verify = capsys.readouterr().err.strip()
        out = tmp_path / f"v-{case}"
        assert cli_main(["verilog", "--config", str(cfg_file), "--images", str(d),
                         "--out", str(out)]) == 2, case
        verilog = capsys.readouterr().err.strip()
        prefix_v, prefix_g = "sqaccel verify-images: error: ", "sqaccel verilog: error: "
        assert verify.startswith(prefix_v) and verilog.startswith(prefix_g), case
        assert verify[len(prefix_v):] == verilog[len(prefix_g):], case
        assert "\n" not in verilog and not out.exists(), case
        print(f"{case}: {verilog}")
