"""Experiments on the quantised digits network that the demo runs and reports."""
