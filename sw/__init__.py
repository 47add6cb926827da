"""Software of cdm-qta (installed as ``cdmqta.sw``): quantized LoRA golden model, tiler, runtime, models."""
