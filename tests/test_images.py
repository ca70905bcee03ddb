"""Memory images: the section 7 layouts, export / load round trips, byte-identical rebuilds,
and a clear error for every kind of damage."""

import dataclasses
import hashlib
import json
import shutil

import pytest
import torch

from sqaccel import abi, arith, cli, imagecodec
from sqaccel.config import AccelConfig, UniversalSet
from sqaccel.errors import SqaccelError
from sqaccel.sw import images
from sqaccel.sw.actquant import one_thread
from sqaccel.sw.data import eval_data
from sqaccel.sw.intnet import network_differences
from sqaccel.sw.lowering import array_cfg, build_int_network, build_pipeline


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The machine's cores are shared: small tensors run far faster on one thread.
    with one_thread():
        yield


# -- layouts on a small example ------------------------------------------------------------


def test_word_layouts_follow_section_7():
    cfg = AccelConfig(rows=2, cols=2)
    w, a, acc = cfg.weight_bits, cfg.act_bits, cfg.acc_bits
    codes = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])  # [K=3, N=3]
    # column tile j outer, k inner; lane c = column j*C + c; column 3 padded with code 0
    assert abi.weight_words(codes, cfg) == [
        1 | 2 << w, 4 | 5 << w, 7 | 8 << w, 3, 6, 9,
    ]
    x = torch.tensor([[1, 2], [3, 4], [5, 6]])  # [M=3, K=2]
    assert abi.activation_words(x, cfg) == [1 | 3 << a, 2 | 4 << a, 5, 6]
    bias = torch.tensor([-1, 5, -7])
    mask = (1 << acc) - 1
    assert abi.bias_words(bias, cfg) == [(-1 & mask) | 5 << acc, -7 & mask]
    m, s = torch.tensor([40000, 50000, 60000]), torch.tensor([3, 20, 63])
    rq = 16 + 6
    assert abi.requant_words(m, s, cfg) == [
        (3 << 16 | 40000) | (20 << 16 | 50000) << rq,
        (63 << 16 | 60000) | (1 << 16 | 1 << 15) << rq,
    ]
    off = arith.off_entry(cfg.universal)
    tables = torch.tensor([[1, 2], [3, 4], [5, 6]])  # [N=3, L=2]
    e = cfg.universal.step_entry_bits
    assert abi.step_words(tables, cfg) == [1 | 3 << e, 2 | 4 << e, 5 | off << e, 6 | off << e]
    per_layer = dataclasses.replace(cfg, step_tables="layer")
    assert abi.step_words(torch.tensor([[1, 2]] * 3), per_layer) == [1, 2]
    y = torch.tensor([[1, -2, 3], [4, 5, 6], [7, 8, 9]])  # results [M=3, N=3]
    assert abi.result_words(y, cfg) == [
        1 | (-2 & mask) << acc, 4 | 5 << acc, 7 | 8 << acc, 3, 6, 9,
    ]
    assert imagecodec.to_hex([0xAB, 1], 12) == b"0ab\n001\n"
    assert imagecodec.to_bin([0x1234, 1], 12) == b"\x34\x12\x01\x00"


# -- the digits network's images -------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from sqaccel.sw.train import load_or_train_digits

    return load_or_train_digits(seed=0)


def pipeline(model, method="sq", bits=2, cfg=None, per_channel=False):
    x_cal = eval_data("digits")[0]
    return build_pipeline(model, method, bits, x_cal, array_cfg(cfg or AccelConfig(), method),
                          per_channel)


@pytest.fixture(scope="module")
def test_inputs():
    return eval_data("digits")[1][0][:24]


@pytest.fixture(scope="module")
def exported(model, test_inputs, tmp_path_factory):
    p = pipeline(model, "sq", 2, per_channel=True)
    d = tmp_path_factory.mktemp("exported") / "images"
    images.export(p.network, d, reference_inputs=p.network.quantize_input(test_inputs))
    return p, d


def image_files(d):
    return sorted(f for f in json.loads((d / "manifest.json").read_text())["files"])


def rehash(d, fname):
    """Make the manifest agree with a file's new bytes (to reach the checks behind the hash)."""
    m = json.loads((d / "manifest.json").read_text())
    m["files"][fname]["sha256"] = hashlib.sha256((d / fname).read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))


def edit_word(d, stem, index, edit):
    """Change word ``index`` of both the hex and the binary image, consistently."""
    e = json.loads((d / "manifest.json").read_text())["files"][stem + ".hex"]
    width = e["word_bits"]
    hex_lines = (d / f"{stem}.hex").read_text().splitlines()
    word = edit(int(hex_lines[index], 16))
    hex_lines[index] = format(word, f"0{-(-width // 4)}x")
    (d / f"{stem}.hex").write_text("\n".join(hex_lines) + "\n")
    nb = -(-width // 8)
    data = bytearray((d / f"{stem}.bin").read_bytes())
    data[index * nb : (index + 1) * nb] = word.to_bytes(nb, "little")
    (d / f"{stem}.bin").write_bytes(bytes(data))
    rehash(d, stem + ".hex")
    rehash(d, stem + ".bin")


def copy_of(d, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(d, dst)
    return dst


def test_export_then_load_rebuilds_the_same_network(exported, test_inputs):
    p, d = exported
    net = p.network
    loaded = images.verify(d, net.cfg)
    assert network_differences(net, loaded.network) == []
    assert len(loaded.checks) == 2 and "24 reference inputs" in loaded.checks[1]
    x = net.quantize_input(test_inputs)
    a, b = net.run(x), loaded.network.run(x)
    assert all(torch.equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
    m = json.loads((d / "manifest.json").read_text())
    assert m["config"] == net.cfg.to_dict()
    files = image_files(d)
    # 5 GEMM layers x (weights, steps, bias, requant) x (hex, bin)
    assert len(files) == 40 and sorted(p.name for p in d.iterdir()) == sorted(
        files + ["manifest.json", ".sqaccel-output.json"])
    for f in files:
        e = m["files"][f]
        data = (d / f).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest()
        if e["format"] == "bin":
            assert len(data) == e["words"] * -(-e["word_bits"] // 8)
        else:
            assert data.count(b"\n") == e["words"]
    first = m["files"]["L00_0.weights.hex"]
    assert (first["layer"], first["shape"], first["bits"], first["array_bits"], first["pe"]) == (
        "0", [9, 16], 4, 4, "shift")
    inner = m["files"]["L01_2.weights.hex"]
    assert (inner["bits"], inner["word_bits"], inner["method"]) == (2, 32, "sq")
    assert [s["op"] for s in m["steps"]] == [
        "gemm", "gemm", "maxpool", "gemm", "maxpool", "flatten", "gemm", "gemm"]


def test_gemm_words_of_a_layer_match_its_images_and_outputs(exported, test_inputs):
    p, d = exported
    net, cfg = p.network, p.network.cfg
    x = net.quantize_input(test_inputs[:2])
    run = net.run(x)
    ops = net.operands("5", x)
    words = images.gemm_words(ops, cfg)
    for kind in ("weights", "steps", "bias", "requant"):
        fname = f"L02_5.{kind}.hex"
        width = json.loads((d / "manifest.json").read_text())["files"][fname]["word_bits"]
        assert imagecodec.to_hex(words[kind], width) == (d / fname).read_bytes()
    # results: column tile j outer, rows inner; lanes back to the recorded conv output
    m, n, c = ops.x.shape[1], ops.out.shape[1], cfg.cols
    got = torch.zeros(m, n, dtype=torch.int64)
    for idx, w in enumerate(words["results"]):
        j, row = divmod(idx, m)
        lanes = abi.unpack([w], c, cfg.acc_bits, signed=True)[0].tolist()
        got[row, j * c : (j + 1) * c] = torch.tensor(lanes[: min(c, n - j * c)])
    b, _, oh, ow = run.outputs["5"].shape
    assert torch.equal(got.reshape(b, oh, ow, n).permute(0, 3, 1, 2), run.outputs["5"])
    assert len(words["act"]) == -(-m // cfg.rows) * ops.x.shape[2]


def test_images_from_the_same_seed_are_byte_identical(model, exported, test_inputs, tmp_path):
    _, first = exported
    p = pipeline(model, "sq", 2, per_channel=True)
    second = images.export(p.network, tmp_path / "again",
                           reference_inputs=p.network.quantize_input(test_inputs))
    names = sorted(x.name for x in first.iterdir())
    assert names == sorted(x.name for x in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_every_changed_byte_is_caught_and_named(exported, tmp_path):
    _, d = exported
    for i, fname in enumerate(image_files(d)):
        c = copy_of(d, tmp_path, f"c{i}")
        data = bytearray((c / fname).read_bytes())
        data[len(data) // 2] ^= 0x01
        (c / fname).write_bytes(bytes(data))
        with pytest.raises(images.ImageError) as e:
            images.verify(c)
        assert fname in str(e.value), str(e.value)
        shutil.rmtree(c)


def test_truncated_files_are_caught(exported, tmp_path):
    _, d = exported
    c = copy_of(d, tmp_path)
    f = "L02_5.bias.bin"
    (c / f).write_bytes((c / f).read_bytes()[:-3])
    rehash(c, f)
    with pytest.raises(images.ImageError, match=f"{f}: .* bytes.*\\(truncated\\)"):
        images.verify(c)
    c = copy_of(d, tmp_path, "hex")
    f = "L03_9.weights.hex"
    lines = (c / f).read_bytes().split(b"\n")
    (c / f).write_bytes(b"\n".join(lines[:-2]) + b"\n")
    rehash(c, f)
    with pytest.raises(images.ImageError, match=f"{f}: .* words, the manifest says"):
        images.verify(c)


def test_words_wider_than_stated_are_caught(model, exported, tmp_path):
    _, d = exported
    c = copy_of(d, tmp_path)
    f = "L01_2.weights.hex"
    lines = (c / f).read_text().splitlines()
    lines[3] = "1" + lines[3]
    (c / f).write_text("\n".join(lines) + "\n")
    rehash(c, f)
    with pytest.raises(images.ImageError, match=f"{f}: line 4 has 9 digits.*wider than stated"):
        images.verify(c)
    p, _ = exported
    cfg3 = dataclasses.replace(p.cfg, cols=3)
    net3 = build_int_network(model, p.qweights, p.scales, cfg3, (1, 8, 8))
    e = images.export(net3, tmp_path / "cols3")
    # 3 lanes x 22-bit requant words: 66 bits in 17 hex digits and 9 bytes; set bit 67 / 70
    for f, edit in (("L00_0.requant.bin", lambda b: b[:8] + bytes([b[8] | 0x40]) + b[9:]),
                    ("L00_0.requant.hex", lambda b: b"f" + b[1:])):
        c = copy_of(e, tmp_path, "w" + f)
        (c / f).write_bytes(edit((c / f).read_bytes()))
        rehash(c, f)
        with pytest.raises(images.ImageError, match=f"{f}: .*wider than 66 bits"):
            images.verify(c)


def test_missing_layers_and_files_are_caught(exported, tmp_path):
    _, d = exported
    c = copy_of(d, tmp_path)
    (c / "L04_11.requant.bin").unlink()
    with pytest.raises(images.ImageError, match="L04_11.requant.bin: image file missing"):
        images.verify(c)
    c = copy_of(d, tmp_path, "manifest")
    m = json.loads((c / "manifest.json").read_text())
    del m["files"]["L01_2.steps.hex"]
    (c / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(images.ImageError, match="layer '2' has no steps hex image"):
        images.verify(c)
    c = copy_of(d, tmp_path, "layer")
    m = json.loads((c / "manifest.json").read_text())
    m["steps"] = [s for s in m["steps"] if s["name"] != "5"]
    (c / "manifest.json").write_text(json.dumps(m))
    # A removed layer leaves the step after it reading a tensor no step makes.
    with pytest.raises(images.ImageError, match="step '7' reads '5', which no earlier step"):
        images.verify(c)
    c = copy_of(d, tmp_path, "no_k")
    m = json.loads((c / "manifest.json").read_text())
    del m["steps"][0]["K"]
    (c / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(images.ImageError, match="manifest.json: step '0' is not valid.*'K'"):
        images.verify(c)
    with pytest.raises(images.ImageError, match="manifest.json: not found"):
        images.verify(tmp_path)


def test_images_for_another_config_are_refused(exported, tmp_path):
    p, d = exported
    for other in (dataclasses.replace(p.cfg, rows=16), dataclasses.replace(p.cfg, k_max=512),
                  dataclasses.replace(p.cfg, act_bits=4)):
        with pytest.raises(images.ImageError, match="built for config"):
            images.verify(d, other)
    c = copy_of(d, tmp_path)
    m = json.loads((c / "manifest.json").read_text())
    m["config"]["k_max"] = 4096  # the derived accumulator width no longer matches
    (c / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(images.ImageError, match="derived values disagree.*acc_bits"):
        images.verify(c)


def test_step_entry_outside_the_shift_sets_is_refused(model, tmp_path):
    # term 1 has two shifts: selector 2 is "off" and 3 is outside the set
    u = UniversalSet(((0, 1), (0, 2, 4)))
    p = pipeline(model, "sq", 2, cfg=AccelConfig(universal=u))
    d = images.export(p.network, tmp_path / "u2")
    f = "L01_2.steps.hex"
    edit_word(d, "L01_2.steps", 0, lambda w: w | 0x3)  # lane 0, term 1's selector
    with pytest.raises(images.ImageError, match=f"{f}: column 0 entry 0: .*selector 3 is outside"):
        images.verify(d)


def test_a_failed_export_leaves_nothing(exported, tmp_path, monkeypatch):
    p, _ = exported
    calls = []

    def failing(words, width):
        calls.append(1)
        if len(calls) > 5:
            raise OSError("disk full")
        return b"\0" * len(words)

    monkeypatch.setattr(imagecodec, "to_bin", failing)
    with pytest.raises(OSError, match="disk full"):
        images.export(p.network, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_images_but_not_other_folders(exported, tmp_path):
    p, d = exported
    out = copy_of(d, tmp_path, "out")
    images.export(p.network, out)  # an earlier export is replaced
    assert (out / "manifest.json").is_file()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]
    (out / "mine.txt").write_text("the user's")  # ... but not with a user's file inside
    with pytest.raises(SqaccelError, match="holds 'mine.txt', which sqaccel did not write"):
        images.export(p.network, out)
    assert (out / "mine.txt").read_text() == "the user's"
    images.export(p.network, out, force=True)  # unless the user says so
    assert not (out / "mine.txt").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("keep")
    with pytest.raises(SqaccelError, match="notes: a folder sqaccel did not write"):
        images.export(p.network, other)
    assert (other / "a.txt").read_text() == "keep"


def test_cli_export_and_verify_images(tmp_path, capsys):
    out = tmp_path / "img"
    args = ["export", "--out", str(out), "--method", "uniform", "--bits", "3", "--act-bits", "4"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "digits on the digits test split: integer" in text
    acc_line = [line for line in text.splitlines() if "test split: integer" in line][0]
    integer = acc_line.split("integer ")[1].split(" %")[0]
    assert cli.main(["verify-images", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"integer accuracy {integer} % (export: {integer} %" in text
    assert cli.main(["verify-images", str(out), "--samples", "40"]) == 0
    assert "40 digits test predictions equal to export" in capsys.readouterr().out
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(AccelConfig(pe="mult", act_bits=8).to_json())
    # Images for another config fail the check (exit 1); a folder that is not there is bad
    # input (exit 2).
    assert cli.main(["verify-images", str(out), "--config", str(cfg_file)]) == 1
    assert "built for config" in capsys.readouterr().err
    assert cli.main(["verify-images", str(tmp_path / "absent")]) == 2
    assert "images folder not found" in capsys.readouterr().err
    assert cli.main(["export", "--out", str(tmp_path / "x"), "--config", str(cfg_file),
                     "--method", "sq"]) == 2
    assert "runs uniform weights, not sq" in capsys.readouterr().err
