"""What ties a replica task to its service (kept apart from :mod:`computenet.model.service`
so :mod:`computenet.model.task` can carry it without an import cycle; import it from
:mod:`computenet.model.service`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from computenet.model.pool import Strict

# A DNS label: lower-case letters, digits and '-', not starting or ending with '-'.
SERVICE_NAME = r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"
KEY_HASH = r"^[0-9a-f]{64}$"
DEFAULT_PORT = 8080


class Access(StrEnum):
    """Who may call a service through the router."""

    KEY = "key"  # ``Authorization: Bearer <service key>``
    PUBLIC = "public"  # anyone who reaches a node


ServiceName = Annotated[str, StringConstraints(pattern=SERVICE_NAME)]
ServiceVersion = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ServiceBinding(Strict):
    """Marks a task as one replica of a service. Only a node's service controller sets it;
    the binding travels with the task when it is forwarded, so any node that routes to the
    replica can check a caller's key (``key_hashes``) without a shared database."""

    name: ServiceName
    version: ServiceVersion = "1"
    replica: int = Field(ge=0, le=100_000)
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="in the sandbox")
    health_path: str = Field(default="/health", pattern=r"^/[^\x00-\x20]{0,255}$")
    # The service file's health policy, so that the gateway that runs the replica applies it.
    health_interval_s: float = Field(default=1.0, gt=0, le=3600)
    health_timeout_s: float = Field(default=1.0, gt=0, le=600)
    health_failures: int = Field(default=3, ge=1, le=100)
    key_hashes: list[Annotated[str, StringConstraints(pattern=KEY_HASH)]] = Field(
        default_factory=list, max_length=64, description="sha256 hex of each service key"
    )
    access: Access = Access.KEY
    home_node: str = Field(min_length=1, max_length=128, description="where it was deployed")
