"""``sqaccel demo``: the main job on the offline default (the digits CNN), end to end.

A sequence of named steps (``run.STEPS``): data, model, search, accuracy, golden,
calibrate, table, export, verilog, cosim, synth, report. Each takes the run
(``state.DemoRun``: its settings and the typed state the steps hand on), says what it does
and leaves its results on the state or in the run folder (``build/demo``). Every file a step
writes is written atomically, so an interrupted step leaves its previous result or nothing;
long steps are resumed (``run``).
"""
