"""The ComputeNet Python SDK."""

from computenet.sdk.client import Client

__all__ = ["Client"]
