"""Archomata: the multi-tenant backend between a trading firm's people, its strategies and
its MetaTrader 5 terminals."""

__version__ = "0.1.0"
