"""Bring a database up to the newest schema with Alembic."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from computenet.store.db import Database

_MIGRATE_LOCK = 0x636E6D67  # 'cnmg': any fixed key; only migrations take it


def alembic_config(db: Database) -> Config:
    """An Alembic config pointing at the packaged migrations and this database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("computenet.store") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db.url.render_as_string(hide_password=False))
    return cfg


def upgrade(db: Database) -> None:
    """Apply every migration not yet applied. Safe to call on every start."""
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        if not db.is_sqlite:
            # Replicas starting together on one PostgreSQL migrate one after another; the lock
            # ends with this transaction, and PostgreSQL runs the DDL inside it.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_tables(db: Database) -> set[str]:
    """The tables that exist now (for checks and tests)."""
    return set(inspect(db.engine).get_table_names())
