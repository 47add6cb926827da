"""The runtime: what turns the golden model's GEMMs into command programs and runs them -- the host-memory codec
(:mod:`.hostmem`), the tiler (:mod:`.tiler`), the ISA emulator (:mod:`.emulator`), the tiled engines
(:mod:`.engines`: the golden backend) and jobs (:mod:`.jobs`). No simulator: the RTL backend is
:mod:`cdmqta.sw.rtl`."""
