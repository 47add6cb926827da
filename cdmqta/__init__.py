"""cdm-qta: flexible-dataflow INT8/INT4 systolic accelerator for quantized LoRA training.

Sub-packages: ``cdmqta.hw`` (Amaranth generators, from ``hw/``), ``cdmqta.sw`` (quantized LoRA golden model,
tiler, runtime, performance model, from ``sw/``), ``cdmqta.synth`` (FPGA flows, from ``synth/``).
"""

__version__ = "0.1.0"
