"""The library version, stamped into every saved adapter."""

__version__ = "0.1.0"
