"""Data staging and TES tables."""

from __future__ import annotations
