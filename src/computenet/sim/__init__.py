"""Trace-driven simulator: the live scheduling core, run in virtual time against a topology."""
