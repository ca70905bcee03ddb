"""sqaccel: Subset Quantization to a verified shift-add FPGA accelerator."""
