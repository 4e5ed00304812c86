"""``computenet demo``: a four-node federation on loopback, each node with a local gateway.

National node ``cn`` (Beijing, 11), regional nodes Shanghai ``cn.31`` and Guizhou ``cn.52``,
and an industry node ``cn.31.ai`` under Shanghai. The regional facts (GB/T 2260 codes of the
"East Data, West Computing" hubs at Shanghai Qingpu and Gui'an) come from
``../shared/data/topology/china_hubs.csv`` (public announcements of the national hub plan).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer

from computenet.cli.output import fail
from computenet.cli.preflight import free_port, port_free

_TOKEN = re.compile(r"admin token \(shown once, stored hashed\): (\S+)")


@dataclass(frozen=True)
class DemoNode:
    """One node of the demo: its name, parent, label given by the parent, level and region."""

    name: str
    parent: str | None
    label: str
    level: str
    region: str


NODES = (
    DemoNode("national", None, "", "national", "11"),
    DemoNode("shanghai", "national", "31", "regional", "31"),  # Shanghai Qingpu hub
    DemoNode("guizhou", "national", "52", "regional", "52"),  # Gui'an hub
    DemoNode("industry", "shanghai", "ai", "industry", "31"),
)


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"a demo node exited early; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    fail(f"a demo node did not start in 60 s; see {log}")


def _admin_token(log: Path) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = _TOKEN.search(log.read_text(errors="replace"))
        if m:
            return m.group(1)
        time.sleep(0.1)
    fail(f"no admin token in {log}")


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: its four nodes too


def register(app: typer.Typer) -> None:
    """Add ``computenet demo`` to the CLI."""

    @app.command()
    def demo(
        data_dir: Annotated[Path, typer.Option(help="where the four nodes keep their data")] = Path(
            "federation-demo"
        ),
        base_port: Annotated[
            int | None,
            typer.Option(
                min=1024,
                max=65530,
                help="ports BASE..BASE+3 [default: the ports of the last run in --data-dir, "
                "else free ones]",
            ),
        ] = None,
        cpus: Annotated[int, typer.Option(min=1, help="cores each local gateway offers")] = 1,
    ) -> None:
        """Start a national, two regional and one industry node on loopback (Ctrl-C stops)."""
        signal.signal(signal.SIGTERM, _interrupt)
        data_dir.mkdir(parents=True, exist_ok=True)
        saved = data_dir / "demo.json"
        state = json.loads(saved.read_text()) if saved.exists() else {}
        tokens: dict[str, str] = state.get("tokens", {})
        # Children know their parent's URL from enrolment: a restart keeps the same ports.
        ports: dict[str, int] = state.get("ports", {})
        if base_port is not None:
            ports = {node.name: base_port + i for i, node in enumerate(NODES)}
        for node in NODES:
            ports.setdefault(node.name, free_port())
            port_free("127.0.0.1", ports[node.name], "--base-port")
        procs: list[subprocess.Popen[bytes]] = []
        urls: dict[str, str] = {}
        try:
            for node in NODES:
                url = f"http://127.0.0.1:{ports[node.name]}"
                args = [
                    sys.executable,
                    "-m",
                    "computenet.cli.main",
                    "up",
                    "--port",
                    str(ports[node.name]),
                    "--data-dir",
                    str(data_dir / node.name),
                    "--region",
                    node.region,
                    "--cpus",
                    str(cpus),
                ]
                if node.parent is not None and not (data_dir / node.name).exists():
                    parent = urls[node.parent]
                    r = httpx.post(
                        f"{parent}/federation/v1/tokens",
                        json={"label": node.label, "level": node.level},
                        headers={"Authorization": f"Bearer {tokens[node.parent]}"},
                    )
                    r.raise_for_status()
                    args += [
                        "--level",
                        node.level,
                        "--parent",
                        parent,
                        "--enrol-token",
                        r.json()["enrol_token"],
                    ]
                log = data_dir / f"{node.name}.log"
                env = {
                    **os.environ,
                    "COMPUTENET_CONFIG": str(data_dir / f"{node.name}.client.json"),
                }
                with log.open("ab") as out:
                    procs.append(
                        subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
                    )
                _wait(url, procs[-1], log)
                urls[node.name] = url
                if node.name not in tokens:
                    tokens[node.name] = _admin_token(log)
                    saved.write_text(json.dumps({"tokens": tokens, "ports": ports}))
            codes = {
                n: httpx.get(f"{u}/federation/v1/node").json()["code"] for n, u in urls.items()
            }
            print(
                f"ComputeNet federation demo on loopback (logs and data in {data_dir.resolve()}):"
            )
            for node in NODES:
                print(
                    f"  {node.level:9} {codes[node.name]:9} {urls[node.name]}  region "
                    f"{node.region}  admin token {tokens[node.name]}"
                )
            sh, gz = urls["shanghai"], urls["guizhou"]
            print("\nTry it:")
            print(f"  export COMPUTENET_URL={sh} COMPUTENET_TOKEN={tokens['shanghai']}")
            print("  computenet pools                       # Shanghai's own pool")
            print("  computenet resolve cn.52/local/host  # a Guizhou pool, resolved via cn")
            print("  computenet submit --region 52 --wait -- echo hi  # runs in Guizhou")
            print(
                f"  curl -H 'Authorization: Bearer {tokens['national']}' "
                f"{urls['national']}/federation/v1/index   # the global index"
            )
            print(f"  (Guizhou's own API: {gz})\nCtrl-C stops all four nodes.", flush=True)
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            fail("a demo node stopped; see the logs in " + str(data_dir))
        except KeyboardInterrupt:
            pass
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in reversed(procs):
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
