"""Compute power identifiers (CPI): ``<node-code>/<provider>/<pool>``.

Node codes are dot-separated labels allocated by the parent node (``cn`` -> ``cn.31``);
provider labels are allocated by the node that enrols the provider; pool labels are declared
by the provider's gateway. A CPI names a resource, never its live state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from computenet.errors import InvalidInput

_NODE_LABEL = re.compile(r"[a-z0-9]{1,16}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_NODE_DEPTH = 8


def validate_node_code(code: str) -> str:
    """Return ``code`` if it is a valid node code such as ``cn`` or ``cn.31.ai``, else raise."""
    parts = code.split(".")
    if len(parts) > MAX_NODE_DEPTH:
        raise InvalidInput(f"node code {code!r} is deeper than {MAX_NODE_DEPTH} levels")
    for part in parts:
        if not _NODE_LABEL.fullmatch(part):
            raise InvalidInput(
                f"node code {code!r}: label {part!r} must be 1-16 lowercase letters or digits"
            )
    return code


def validate_label(label: str, what: str = "label") -> str:
    """Return ``label`` if it is a valid provider or pool label (DNS-style), else raise."""
    if not _LABEL.fullmatch(label):
        raise InvalidInput(
            f"{what} {label!r} must be 1-63 lowercase letters, digits or '-', "
            "not starting or ending with '-'"
        )
    return label


def node_code_within(code: str, prefix: str) -> bool:
    """True when node code ``code`` equals ``prefix`` or lies below it (``cn.31`` under ``cn``)."""
    return code == prefix or code.startswith(prefix + ".")


@dataclass(frozen=True, order=True)
class CPI:
    """A parsed compute power identifier."""

    node: str
    provider: str
    pool: str

    def __post_init__(self) -> None:
        validate_node_code(self.node)
        validate_label(self.provider, "provider label")
        validate_label(self.pool, "pool label")

    def __str__(self) -> str:
        return f"{self.node}/{self.provider}/{self.pool}"

    @property
    def provider_prefix(self) -> str:
        """The provider part, ``<node>/<provider>``, inside which its gateway registers."""
        return f"{self.node}/{self.provider}"

    @classmethod
    def parse(cls, text: str) -> CPI:
        """Parse ``node/provider/pool``; raise :class:`InvalidInput` saying why if malformed."""
        if not isinstance(text, str) or not text:
            raise InvalidInput("a CPI must be a non-empty string like 'cn.31/acme-sh1/a100-80g'")
        parts = text.strip().split("/")
        if len(parts) != 3:
            raise InvalidInput(
                f"CPI {text!r} must have three parts, <node-code>/<provider>/<pool>, "
                f"got {len(parts)}"
            )
        return cls(*parts)


def allocate_child_code(parent: str, label: str) -> str:
    """Allocate node code ``parent.label`` for a child node (only inside the parent's prefix)."""
    validate_node_code(parent)
    if not _NODE_LABEL.fullmatch(label):
        raise InvalidInput(f"child label {label!r} must be 1-16 lowercase letters or digits")
    return validate_node_code(f"{parent}.{label}")


def allocate_provider(node_code: str, label: str) -> str:
    """Allocate provider prefix ``node/label`` on node ``node_code``."""
    validate_node_code(node_code)
    validate_label(label, "provider label")
    return f"{node_code}/{label}"


def allocate_pool(provider_prefix: str, label: str) -> CPI:
    """Allocate a pool CPI inside ``provider_prefix`` (``node/provider``)."""
    parts = provider_prefix.split("/")
    if len(parts) != 2:
        raise InvalidInput(f"provider prefix {provider_prefix!r} must be <node-code>/<provider>")
    return CPI(parts[0], parts[1], label)


def check_within_node(cpi: CPI, node_code: str) -> None:
    """Refuse a CPI that lies outside the node's own prefix."""
    if not node_code_within(cpi.node, node_code):
        raise InvalidInput(f"CPI {cpi} lies outside this node's prefix {node_code!r}")


def check_within_provider(cpi: CPI, provider_prefix: str) -> None:
    """Refuse a CPI that lies outside the provider's prefix (a gateway registers only there)."""
    if cpi.provider_prefix != provider_prefix:
        raise InvalidInput(f"CPI {cpi} lies outside provider prefix {provider_prefix!r}")
