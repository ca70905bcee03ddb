"""The subcommands of ``sqaccel``, in the order of the flow. Each module holds the options
(``add_arguments``) and one call into the library (``run``); the library never imports
them."""

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("sqaccel.commands.search", "SQ subset search on one weight tensor"),
    "quantize": ("sqaccel.commands.quantize", "quantize a model's weights and report accuracy"),
    "export": ("sqaccel.commands.export", "export the memory images of a quantised network"),
    "verify-images": ("sqaccel.commands.verify_images",
                      "re-read images and re-run the golden model"),
    "verilog": ("sqaccel.commands.verilog", "generate the accelerator's Verilog"),
    "cosim": ("sqaccel.commands.cosim", "run an exported network on the RTL, bit for bit"),
    "perf": ("sqaccel.commands.perf", "cycles, latency and GOPS of a network on the array"),
    "synth": ("sqaccel.commands.synth", "synthesise and place-and-route for an FPGA"),
    "sweep": ("sqaccel.commands.sweep", "synthesise a grid of design points over seeds"),
    "demo": ("sqaccel.commands.demo", "run the main job on the offline default"),
    "report": ("sqaccel.commands.report", "write the report of the last run"),
}
