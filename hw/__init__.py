"""Amaranth generators of the cdm-qta accelerator (installed as ``cdmqta.hw``)."""

from .config import QTAConfig, ConfigError

__all__ = ["QTAConfig", "ConfigError"]
