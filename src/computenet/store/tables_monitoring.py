"""Monitoring tables: pool quality history and network measurements."""

from __future__ import annotations
