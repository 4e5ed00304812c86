"""ComputeNet: an open-source Compute Internet (算力互联网)."""

__version__ = "0.1.0"
