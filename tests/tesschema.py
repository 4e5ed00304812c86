"""Validate responses against the GA4GH TES 1.1 OpenAPI schemas (helper, not a test file).

The spec is ``tests/data/ga4gh-tes/task_execution_service.openapi.yaml``, copied under its
Apache-2.0 licence (``LICENSE`` beside it) from ga4gh/task-execution-schemas a8ab026.
Its ``tesServiceInfo`` refers to the GA4GH service-info ``Service`` schema by URL; offline,
that reference resolves to the required fields service-info v1.0.0 defines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "data" / "ga4gh-tes" / "task_execution_service.openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
_SERVICE_INFO = (
    "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
)
_SERVICE = {
    "components": {
        "schemas": {
            "Service": {
                "type": "object",
                "required": ["id", "name", "type", "organization", "version"],
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "type": {
                        "type": "object",
                        "required": ["group", "artifact", "version"],
                        "properties": {
                            k: {"type": "string"} for k in ("group", "artifact", "version")
                        },
                    },
                    "description": {"type": "string"},
                    "organization": {
                        "type": "object",
                        "required": ["name", "url"],
                        "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
                    },
                    "version": {"type": "string"},
                },
            },
            "ServiceType": {
                "type": "object",
                "required": ["group", "artifact", "version"],
                "properties": {k: {"type": "string"} for k in ("group", "artifact", "version")},
            },
        }
    }
}
_REGISTRY: Registry = Registry().with_resources(
    [
        ("urn:tes", Resource(SPEC, specification=DRAFT202012)),
        (_SERVICE_INFO, Resource(_SERVICE, specification=DRAFT202012)),
    ]
)


def _strict(schema: Any) -> Any:
    """The spec's schemas with extra properties refused, so a misspelt field fails too."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


_STRICT_SPEC = _strict(SPEC)
# The MINIMAL view is id and state only (TES 1.1 text), though tesTask requires executors.
_schemas = _STRICT_SPEC["components"]["schemas"]
_schemas["tesTaskMinimal"] = {k: v for k, v in _schemas["tesTask"].items() if k != "required"}
_schemas["tesListTasksResponseMinimal"] = {
    **_schemas["tesListTasksResponse"],
    "properties": {
        **_schemas["tesListTasksResponse"]["properties"],
        "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/tesTaskMinimal"}},
    },
}
_STRICT_REGISTRY: Registry = _REGISTRY.with_resource(
    "urn:tes-strict", Resource(_STRICT_SPEC, specification=DRAFT202012)
)


def validate(schema_name: str, body: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` is a valid TES ``schema_name``.

    Objects without ``allOf`` are checked strictly (no properties the spec does not name).
    ``tesTaskMinimal`` and ``tesListTasksResponseMinimal`` are the MINIMAL-view variants."""
    uri = "urn:tes" if schema_name == "tesServiceInfo" else "urn:tes-strict"
    ref = {"$ref": f"{uri}#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(
        ref, registry=_STRICT_REGISTRY, format_checker=jsonschema.FormatChecker()
    ).validate(body)
