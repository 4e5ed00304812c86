"""Scheduling tables: fair-share state, quotas, datasets and their replicas."""

from __future__ import annotations
