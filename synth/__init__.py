"""FPGA flows of cdm-qta (installed as ``cdmqta.synth``): yosys/nextpnr from YoWASP, resource and Fmax reports."""
