"""The ComputeNet Python SDK: ``Client`` (sync) and ``AsyncClient`` (asyncio)."""

from computenet.sdk.async_client import AsyncClient
from computenet.sdk.client import Client

__all__ = ["AsyncClient", "Client"]
