"""Performance models (they depend only on :mod:`cdmqta.hw` and the program format): the program-level cycle
model validated against the RTL (:mod:`.program`), the analytic per-GEMM models of ours and the baselines
(:mod:`.analytic`), energy (:mod:`.energy`), LoRA-aware fusion (:mod:`.fusion`), the SCALE-Sim reference
(:mod:`.scalesim_ref`), the workloads (:mod:`.workloads`; recorded by :mod:`.extract`)."""
