"""Software of cdm-qta (installed as ``cdmqta.sw``), in layers that depend one way (checked by the import
contracts in ``pyproject.toml``):

- :mod:`cdmqta.sw.model`   -- the golden model: quantizers, requantization, the engine interface, quantized LoRA
  (torch and the ISA's limits only);
- :mod:`cdmqta.sw.perf`    -- cycle, traffic and energy models and the workloads (the hardware and the program
  format only);
- :mod:`cdmqta.sw.runtime` -- the host-memory codec, tiler, ISA emulator, tiled engines and jobs (model, perf);
- :mod:`cdmqta.sw.rtl`     -- the only part that imports cocotb / Verilator: build cache, driver, RTL backend and
  the one cocotb job module (runtime);
- :mod:`cdmqta.sw.apps`    -- demo, bench, finetune and the diffusion study: the command line's jobs; nothing
  imports them.
"""
