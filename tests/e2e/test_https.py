"""A node serving HTTPS with a configured certificate; a gateway and a client that trust it.

The node authenticates the gateway by its credential; the gateway authenticates the node by
its certificate (``SSL_CERT_FILE`` names the CA to trust, as for any httpx client).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from pathlib import Path

import certifi
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nodeproc import CLI, admin_token, free_port, spawn, start_gateway, wait_healthy

pytestmark = pytest.mark.slow


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key (it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "computenet test node")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "node.pem", directory / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_task_runs_over_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # this test's clients and its children
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    args = ["node", "--data-dir", str(tmp_path / "node"), "--port", str(port)]
    node = spawn([*CLI, *args, "--tls-cert", str(cert), "--tls-key", str(key)], tmp_path / "n.log")
    gateway = None
    try:
        wait_healthy(url, node)
        token = admin_token(node)
        assert f"listening on {url}" in node.output() or url in node.output()
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting = ssl.create_default_context(cafile=certifi.where())  # public CAs only
            httpx.get(f"{url}/healthz", verify=untrusting, timeout=2)

        gateway = start_gateway(url, token, tmp_path / "gw", "tls", cpus=1)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=auth, timeout=10) as http:
            spec = {"executors": [{"command": ["echo", "over tls"]}]}
            tid = http.post("/api/v1/tasks", json=spec).json()["id"]
            deadline = time.monotonic() + 60
            while (task := http.get(f"/api/v1/tasks/{tid}").json())["state"] != "COMPLETE":
                assert time.monotonic() < deadline, task
                time.sleep(0.2)
            assert task["attempts"][0]["executors"][0]["stdout"] == "over tls\n"
    finally:
        if gateway is not None:
            gateway.stop()
        node.stop()


def test_half_a_tls_configuration_is_refused(tmp_path: Path) -> None:
    cert, _key = _self_signed(tmp_path)
    args = ["node", "--data-dir", str(tmp_path / "n"), "--port", str(free_port())]
    proc = spawn([*CLI, *args, "--tls-cert", str(cert)], tmp_path / "half.log")
    assert proc.popen.wait(timeout=30) != 0
    out = proc.output()
    assert "needs both --tls-cert and --tls-key" in out and "Traceback" not in out
