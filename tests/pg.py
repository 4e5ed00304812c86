"""A real PostgreSQL server for the test suite (helper module, not a test file).

``postgres_url()`` gives the URL of a server: ``$COMPUTENET_TEST_PG_URL`` when set,
otherwise a throwaway server that ``scripts/pg-up.sh`` starts once per process in a
fresh temporary directory on a free port, and that ``scripts/pg-down.sh`` stops at exit.

``require_postgres()`` is what tests call: without PostgreSQL it skips the test
locally, but fails it when ``CI=true``, so CI can never pass by skipping the store tests.

``fresh_database(url)`` creates an empty, uniquely named database on that server.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_UP = REPO_ROOT / "scripts" / "pg-up.sh"
PG_DOWN = REPO_ROOT / "scripts" / "pg-down.sh"
URL_ENV = "COMPUTENET_TEST_PG_URL"
NOT_AVAILABLE = 3  # pg-up.sh's exit status when PostgreSQL cannot be had here
_UNAVAILABLE = "PostgreSQL not available: "

_lock = threading.Lock()
_started = False
_url: str | None = None
_reason = ""
_external_dbs: list[str] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(directory: str) -> None:
    subprocess.run(["bash", str(PG_DOWN), directory], capture_output=True, timeout=120, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def _start_server() -> tuple[str | None, str]:
    last_error = ""
    for _ in range(3):  # a free port can be taken before the server binds it: retry
        directory = tempfile.mkdtemp(prefix="cn-pg-")
        os.chmod(directory, 0o755)  # the `postgres` user must enter it when we are root
        try:
            proc = subprocess.run(
                ["bash", str(PG_UP), directory, str(_free_port())],
                capture_output=True,
                text=True,
                timeout=900,  # COMPUTENET_INSTALL_PG=1 may run apt-get first
                check=False,
            )
        except BaseException:
            _stop(directory)
            raise
        if proc.returncode == 0:
            atexit.register(_stop, directory)
            return proc.stdout.strip().splitlines()[-1], ""
        _stop(directory)
        if proc.returncode == NOT_AVAILABLE:
            lines = proc.stderr.strip().splitlines() or ["scripts/pg-up.sh exited 3"]
            return None, lines[-1].removeprefix("pg-up.sh: ").removeprefix(_UNAVAILABLE)
        last_error = f"scripts/pg-up.sh exited {proc.returncode}:\n{proc.stderr}"
        if "Address already in use" not in proc.stderr:
            break
    raise RuntimeError(f"could not start a test PostgreSQL server: {last_error}")


def postgres_url() -> str | None:
    """URL of a running PostgreSQL server, or None when none can be had here."""
    global _started, _url, _reason
    with _lock:
        if not _started:
            env_url = os.environ.get(URL_ENV)
            if env_url:
                _url, _reason = env_url, ""
            else:
                _url, _reason = _start_server()
            _started = True
        return _url


def require_postgres() -> str:
    """The server URL; skips the test without PostgreSQL, or fails it under CI=true."""
    url = postgres_url()
    if url is None:
        message = f"{_UNAVAILABLE}{_reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: store tests must run against PostgreSQL)")
        pytest.skip(message)
    return url


def _connect(url: URL) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
        connect_timeout=10,
    )


def _drop_external_dbs(server: str) -> None:
    url = make_url(server)
    try:
        with _connect(url) as conn:
            for name in _external_dbs:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    except psycopg.Error:
        pass  # best effort


def fresh_database(url: str) -> str:
    """Create an empty, uniquely named database on the server at ``url``; return its URL."""
    server = make_url(url)
    name = f"cn_{uuid.uuid4().hex}"
    with _connect(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if os.environ.get(URL_ENV) and url == os.environ[URL_ENV]:
        # Someone else's server outlives us: drop what we created at exit.
        # (Our own throwaway servers are deleted whole.)
        if not _external_dbs:
            atexit.register(_drop_external_dbs, url)
        _external_dbs.append(name)
    return server.set(database=name).render_as_string(hide_password=False)
