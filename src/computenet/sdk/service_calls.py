"""The service calls of the API as data: what to send and how to read the answer.

``Client`` and ``AsyncClient`` both run these, so the two cannot drift apart: each only
sends the request its own way (docs/services.md, docs/sdk.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from computenet.model.service import ServiceSpec
from computenet.model.service_api import DeployOut, KeyOut, ReplicaLogsOut, ServiceOut
from computenet.sdk.local_inputs import resolve_local_inputs

T = TypeVar("T")
BASE = "/api/v1/services"


def _nothing(_answer: Any) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and the parser of its JSON answer (``None`` for an empty answer)."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    empty_answer: bool = False


def deploy_body(spec: ServiceSpec | dict[str, Any], base_dir: Path | None = None) -> Any:
    """A service as the API takes it, validated against the server's schema first. Inputs
    naming a ``local`` file are read (relative to ``base_dir``, by default the current
    directory) and sent as content."""
    data = (
        spec.model_dump(mode="json", exclude_unset=True)
        if isinstance(spec, ServiceSpec)
        else resolve_local_inputs(spec, base_dir or Path.cwd())
    )
    ServiceSpec.model_validate(data)  # a clear ValueError here, before any request
    return data


def deploy(spec: ServiceSpec | dict[str, Any], base_dir: Path | None = None) -> Call[DeployOut]:
    """Deploy a service, or roll it to a new version."""
    return Call("POST", BASE, DeployOut.model_validate, json=deploy_body(spec, base_dir))


def list_all() -> Call[list[ServiceOut]]:
    """Your services."""
    return Call("GET", BASE, lambda out: [ServiceOut.model_validate(x) for x in out])


def status(name: str) -> Call[ServiceOut]:
    """A service with its replicas."""
    return Call("GET", f"{BASE}/{name}", ServiceOut.model_validate)


def scale(name: str, min: int | None, max: int | None) -> Call[ServiceOut]:
    """Set the replica bounds."""
    body = {k: v for k, v in (("min", min), ("max", max)) if v is not None}
    return Call("POST", f"{BASE}/{name}/scale", ServiceOut.model_validate, json=body)


def logs(name: str, replica: int | None) -> Call[ReplicaLogsOut]:
    """The logs of one replica task."""
    params = {"replica": replica} if replica is not None else {}
    return Call("GET", f"{BASE}/{name}/logs", ReplicaLogsOut.model_validate, params=params)


def delete(name: str) -> Call[None]:
    """Delete a service."""
    return Call("DELETE", f"{BASE}/{name}", _nothing)


def key_create(name: str) -> Call[KeyOut]:
    """A new API key."""
    return Call("POST", f"{BASE}/{name}/keys", KeyOut.model_validate)


def keys(name: str) -> Call[list[KeyOut]]:
    """The service's keys."""
    return Call("GET", f"{BASE}/{name}/keys", lambda out: [KeyOut.model_validate(x) for x in out])


def key_revoke(name: str, key_id: str) -> Call[None]:
    """Revoke one key (the API answers 204, no body)."""
    return Call("DELETE", f"{BASE}/{name}/keys/{key_id}", _nothing, empty_answer=True)
