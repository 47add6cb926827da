"""The golden model of the accelerator's integer work (torch only, plus the ISA's limits from
:mod:`cdmqta.hw.isa`): symmetric max-abs quantizers (:mod:`.quant`), the epilogue's requantization semantics
(:mod:`.requant`), the engine interface with its exact torch engine (:mod:`.engine`) and quantized LoRA training
(:mod:`.lora`)."""
