"""Amaranth generators of the cdm-qta accelerator (installed as ``cdmqta.hw``)."""

from .config import ConfigError, QTAConfig

__all__ = ["QTAConfig", "ConfigError"]
