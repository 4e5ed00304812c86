"""Submit a task with the synchronous SDK, follow it, print its output and usage.

Run against a node: `computenet up` in one shell, then `python examples/sdk_sync.py`
(URL and token from the config file `up` wrote, or COMPUTENET_URL / COMPUTENET_TOKEN).
"""

from __future__ import annotations

from computenet.sdk import Client


def main() -> None:
    """Submit, wait with progress, then show logs, usage and the pools."""
    with Client() as c:
        tid = c.submit(
            {
                "name": "sdk-example",
                "inputs": [{"path": "/data/greeting.txt", "content": "hello from the SDK\n"}],
                "executors": [{"command": ["cat", "greeting.txt"], "workdir": "/data"}],
            }
        )
        task = c.wait(tid, timeout_s=120, progress=True)
        print(f"{tid} {task.state.value}")
        print(c.logs(tid), end="")
        for u in c.usage(tid):
            print(f"attempt {u.attempt} on {u.pool}: {u.wall_s} s, {u.cpu_core_hours} core-hours")
        for pool in c.pools():
            print(f"pool {pool.cpi}")


if __name__ == "__main__":
    main()
