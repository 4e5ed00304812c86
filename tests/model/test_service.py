"""The service file and the binding that marks a replica task."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from computenet.model.pool import Capability
from computenet.model.service import ServiceBinding, ServiceSpec, key_hash
from computenet.model.task import TaskSpec

BASE = {"name": "tinylm", "executor": {"command": ["python3", "-m", "http.server"]}}


def test_defaults_and_replica_task() -> None:
    spec = ServiceSpec.model_validate(BASE)
    assert (spec.version, spec.access, spec.replicas.min, spec.replicas.max) == ("1", "key", 1, 1)
    task = spec.replica_task(2, [key_hash("k")], "11", default_time_limit_s=7 * 86400)
    assert task.service is not None
    assert (task.service.name, task.service.replica, task.service.home_node) == ("tinylm", 2, "11")
    assert task.executors[0].env["PORT"] == str(task.service.port)
    assert task.resources.time_limit_s == 7 * 86400
    assert Capability.SERVICES in task.needs()
    # The binding survives the JSON round trip a forward makes.
    again = TaskSpec.model_validate_json(task.model_dump_json())
    assert again.service == task.service


@pytest.mark.parametrize(
    "name",
    ["", "-a", "a-", "A", "a_b", "a" * 41, "a.b"],
)
def test_name_is_a_dns_label(name: str) -> None:
    with pytest.raises(ValidationError):
        ServiceSpec.model_validate({**BASE, "name": name})


@pytest.mark.parametrize("name", ["a", "tiny-lm", "a" * 40, "0x"])
def test_good_names(name: str) -> None:
    assert ServiceSpec.model_validate({**BASE, "name": name}).name == name


def test_replica_bounds() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        ServiceSpec.model_validate({**BASE, "replicas": {"min": 3, "max": 2}})
    with pytest.raises(ValidationError, match="scale_to_zero"):
        ServiceSpec.model_validate({**BASE, "replicas": {"min": 0, "max": 2}})
    ok = ServiceSpec.model_validate(
        {**BASE, "replicas": {"min": 0, "max": 2, "scale_to_zero": True}}
    )
    assert ok.replicas.min == 0


def test_port_belongs_to_the_controller() -> None:
    bad = {"command": ["x"], "env": {"PORT": "1"}}
    with pytest.raises(ValidationError, match="PORT"):
        ServiceSpec.model_validate({**BASE, "executor": bad})


def test_unknown_fields_refused() -> None:
    with pytest.raises(ValidationError):
        ServiceSpec.model_validate({**BASE, "replica": 1})


def test_binding_key_hashes_are_sha256_hex() -> None:
    with pytest.raises(ValidationError):
        ServiceBinding(name="a", replica=0, key_hashes=["secret"], home_node="11")
    b = ServiceBinding(name="a", replica=0, key_hashes=[key_hash("s")], home_node="11")
    assert b.port == 8080 and b.health_path == "/health"
