"""Federation tables: node certificates, the remote pool index, forwarded tasks, replay guard."""

from __future__ import annotations
