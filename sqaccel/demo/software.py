"""The demo's software steps: data, model, search, accuracy, golden, calibrate, table,
export. Each takes the run, says what it does and leaves its results on the run's state or
in the run folder."""

from __future__ import annotations

import time

from sqaccel.demo.state import DemoRun, digest, file_digest

DEMO_BITS = (4, 3, 2)


def step_data(run: DemoRun) -> None:
    from sqaccel.sw.data import load_split, make_loader

    split = load_split("digits", run.seed)
    sizes = split.sizes()
    run.say(f"scikit-learn digits, 8x8 grey images in [0, 1], stratified split seed {run.seed}: "
            + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    run.state.split = split
    run.state.test_loader = make_loader(split.test)


def step_model(run: DemoRun) -> None:
    from sqaccel.sw.zoo import load_builtin, weights_path

    # Seed 0: the committed weights (hash-checked), so the figures are the same on any
    # machine; another seed trains once into the cache.
    run.state.model = load_builtin("digits", seed=run.seed, cache_dir=run.cache_dir,
                                   log=run.say)
    run.state.model_digest = file_digest(weights_path("digits", run.seed, run.cache_dir))


def step_search(run: DemoRun) -> None:
    from sqaccel.sw.calibrate import search_weights
    from sqaccel.sw.lowering import array_layer_bits

    cfg = run.cfg
    model = run.state.need("model")
    bits = array_layer_bits(model, cfg.weight_bits, cfg)
    run.say(f"array {cfg.name()}: SQ subsets of {2 ** (cfg.weight_bits - 1)} magnitudes out "
            f"of the {cfg.universal.size}-value universal set, one per layer")
    t0 = time.perf_counter()
    qweights = search_weights(model, "sq", bits, cfg)
    scale = cfg.universal.scale
    for name, qw in qweights.items():
        mags = [cfg.universal.int_magnitudes[i] for i in qw.subsets[0]]
        run.say(f"layer {name:>3}: W{qw.bits} {qw.w_int.numel():>6} weights, levels "
                f"+-{{{', '.join(f'{m}/{scale}' for m in mags)}}} x alpha "
                f"{float(qw.scale[0]) * scale:.4f}")
    run.say(f"searched in {time.perf_counter() - t0:.1f} s")
    run.state.layer_bits, run.state.qweights = bits, qweights


def step_accuracy(run: DemoRun) -> None:
    from sqaccel.sw.quantizers import METHODS
    from sqaccel.sw.weight_sweep import accuracy_table, layer_legend, sweep

    run.say(f"methods {', '.join(METHODS)} at W{', W'.join(map(str, DEMO_BITS))}, "
            "per tensor, weights only, first and last layer 8-bit uniform")
    result = sweep(run.state.need("model"), run.state.need("test_loader"), METHODS, DEMO_BITS,
                   per_channel=False, first_last_8bit=True, progress=run.progress,
                   log=run.say)
    result = {"model": "digits_cnn", "data": f"digits test split (seed {run.seed})",
              "split": run.state.need("split").sizes(), "seed": run.seed, **result}
    print("\nLayers (the MSE columns are named by layer):")
    print(layer_legend(result))
    print()
    print(accuracy_table(result, with_mse=True))
    print()
    run.write_json("accuracy.json", result)


def accuracy_key(run: DemoRun) -> str:
    return digest(["accuracy", run.seed, run.state.model_digest, DEMO_BITS])


def step_golden(run: DemoRun) -> None:
    from sqaccel.experiments.golden_check import format_accuracy_table, integer_accuracy_table

    run.say("SQ and uniform at W4, W3, W2 with A8 activations (search only, activation "
            "ranges by MSE): the fake-quantised float model against the integer golden model")
    rows = integer_accuracy_table(run.state.need("model"), run.cfg, seed=run.seed)
    print(format_accuracy_table(rows))
    run.write_json("golden.json", {"seed": run.seed, "rows": rows})


def golden_key(run: DemoRun) -> str:
    return digest(["golden", run.seed, run.state.model_digest, run.cfg.to_dict()])


def step_calibrate(run: DemoRun) -> None:
    from sqaccel.sw.actquant import one_thread
    from sqaccel.sw.calibrate import CalibSettings, calibrated_network
    from sqaccel.sw.metrics import accuracy

    cfg = run.cfg
    split = run.state.need("split")
    x_cal, y_cal = split.calib.tensors
    x_test, y_test = split.test.tensors
    run.say(f"block reconstruction of the searched weights on {len(y_cal)} calibration "
            f"images, activations at A{cfg.act_bits}")
    with one_thread():
        cal, net = calibrated_network(run.state.need("model"), run.state.need("qweights"),
                                      x_cal, cfg, CalibSettings(seed=run.seed), run.progress)
        acc = accuracy(net, (x_test, y_test))
    run.say(f"integer golden model (SQ W{cfg.weight_bits}A{cfg.act_bits}, calibrated): "
            f"{acc:.2f} % on {len(y_test)} test images (calibration {cal.seconds:.1f} s)")
    run.state.net, run.state.int_accuracy = net, acc


def step_table(run: DemoRun) -> None:
    from sqaccel.experiments.calibration_table import accuracy_table, format_markdown
    from sqaccel.sw.calibrate import CalibSettings

    run.say("integer golden model, uniform and SQ (search only, calibrated, per-channel, "
            "mixed bits) at W4A8, W3A8, W2A8, W4A4")
    result = accuracy_table(run.state.need("model"), run.seed, cfg=run.cfg,
                            settings=CalibSettings(seed=run.seed), progress=run.progress,
                            cache_dir=run.cache_dir, log=run.say)
    print(format_markdown(result))
    run.write_json("calibration.json", result)


def table_key(run: DemoRun) -> str:
    from sqaccel.sw.calibrate import CalibSettings

    return digest(["table", run.seed, run.state.model_digest,
                   CalibSettings(seed=run.seed).to_dict(), run.cfg.to_dict()])


def step_export(run: DemoRun) -> None:
    from sqaccel.imagecodec import MANIFEST
    from sqaccel.sw import images

    net = run.state.need("net")
    x_test = run.state.need("split").test.tensors[0]
    out = images.export(net, run.out / "images", reference_inputs=net.quantize_input(x_test[:16]),
                        info={"model": "digits_cnn", "dataset": "digits", "seed": run.seed,
                              "method": "sq", "bits": run.cfg.weight_bits,
                              "calibrated": True})
    loaded = images.verify(out)
    names = sorted(p.name for p in out.iterdir())
    run.say(f"{len(names)} files in {out}: every GEMM layer's weights, step tables, biases "
            f"and requantiser words as $readmemh text and raw binary, and manifest.json; "
            f"re-read and re-run: {len(loaded.network.gemm_layers())} layers agree with the "
            "golden model")
    run.state.images_dir = out
    run.state.manifest_digest = file_digest(out / MANIFEST)
