"""Schema-driven fuzzing of a node's HTTP APIs with schemathesis: any 5xx is a failure.

Starts its own node (``bench/submit.py``'s ``own_node``, fresh data dir), then runs
``st run`` against the node's own OpenAPI document (``/openapi.json``: native ``/api/v1``,
TES ``/ga4gh/tes/v1``, the gateway protocol ``/gateway/v1`` and the federation protocol
``/federation/v1``) with the only check being ``not_a_server_error``: the user APIs with the
admin token (token revocation with a throwaway token of its own), the gateway protocol with a
gateway credential (enrolled here), so requests get past authentication; the long-poll
``/gateway/v1/lease`` is left out (each call may rightly wait up to 60 s), and so is the
console's event stream ``/api/v1/console/events`` (open for minutes by design). Examples per
operation are bounded (``--max-examples``); every schemathesis phase runs (examples,
coverage, fuzzing, stateful). Prints the number of test cases run and the 5xx found, and
exits non-zero if there was one. Needs the dev extra (schemathesis).

    .venv/bin/python bench/fuzz.py [--max-examples 50] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submit import own_node

ST = Path(sys.executable).with_name("st")
CASES_RE = re.compile(r"(\d+) generated, (\d+) passed(?:, (\d+) failed)?")


def gateway_credential(url: str, admin: str) -> str:
    """Enrol a provider and a gateway; return the gateway's bearer credential."""
    with httpx.Client(base_url=url, timeout=10) as http:
        r = http.post(
            "/api/v1/providers",
            json={"label": "fuzz"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        r.raise_for_status()
        r = http.post(
            "/gateway/v1/enrol", json={"token": r.json()["enrolment_token"], "name": "fuzz"}
        )
        r.raise_for_status()
        return str(r.json()["credential"])


def user_token(url: str, admin: str) -> str:
    """Mint a consumer token for the runs that may use it up."""
    r = httpx.post(
        f"{url}/api/v1/tokens",
        json={"role": "user", "subject": "fuzz"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    r.raise_for_status()
    return str(r.json()["token"])


def run_st(url: str, token: str, paths: str, args: argparse.Namespace) -> dict[str, object]:
    """One schemathesis run over the operations whose path matches ``paths``."""
    cmd = [str(ST), "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}"]
    cmd += ["--checks", "not_a_server_error", "--include-path-regex", paths]
    # One worker: with more, hypothesis (under schemathesis 4.32) fails inside itself at times.
    cmd += ["-n", str(args.max_examples), "--seed", str(args.seed), "--workers", "1"]
    cmd += ["--request-timeout", "90"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    found = CASES_RE.search(proc.stdout)
    generated, passed, failed = (int(g or 0) for g in found.groups()) if found else (0, 0, 0)
    return {
        "paths": paths,
        "cases": generated,
        "passed": passed,
        "failed": failed,
        "exit_code": proc.returncode,
        "wall_s": round(time.monotonic() - started, 1),
        "output_tail": proc.stdout[-4000:] if proc.returncode else "",
    }


def main() -> int:
    """Fuzz a fresh node; print what ran and whether any 5xx came back."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not ST.exists():
        sys.exit(f"schemathesis not installed ({ST} missing): pip install -e '.[dev]'")
    with own_node() as node:
        gateway = gateway_credential(node.url, node.token)
        throwaway = user_token(node.url, node.token)
        runs = [
            # Revoking the token a run calls with ends that run: revoke is fuzzed on its own,
            # with a throwaway token. The console's event stream stays open for minutes by
            # design (its ticket endpoint is fuzzed).
            run_st(
                node.url,
                node.token,
                r"^/(api/v1|ga4gh/tes/v1)/(?!tokens/[^/]+/revoke$)(?!console/events$)",
                args,
            ),
            run_st(node.url, throwaway, r"^/api/v1/tokens/[^/]+/revoke$", args),
            # /gateway/v1/lease long-polls up to 60 s by design; fuzzing it only measures waits.
            run_st(node.url, gateway, r"^/gateway/v1/(?!lease)", args),
            # Node-to-node messages: unsigned or badly signed bodies must be refused, not crash.
            run_st(node.url, node.token, r"^/federation/v1/", args),
        ]
    ok = all(r["exit_code"] == 0 and r["cases"] for r in runs)
    if args.json:
        print(json.dumps({"ok": ok, "runs": runs}))
    else:
        for r in runs:
            print(
                f"{r['paths']:<28} {r['cases']:>6} cases  {r['failed']} failed  "
                f"exit {r['exit_code']}  {r['wall_s']} s"
            )
            if r["output_tail"]:
                print(r["output_tail"])
        total = sum(int(str(r["cases"])) for r in runs)
        print(f"total {total} cases; {'no 5xx' if ok else 'FAILURES (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
