"""Submit several tasks at once with the asynchronous SDK and wait for all of them.

Run against a node: `computenet up` in one shell, then `python examples/sdk_async.py`.
"""

from __future__ import annotations

import asyncio

from computenet.sdk import AsyncClient


async def main() -> None:
    """Three tasks in parallel; print each one's output."""
    async with AsyncClient() as c:
        ids = await asyncio.gather(
            *(c.submit({"executors": [{"command": ["echo", f"task {i}"]}]}) for i in range(3))
        )
        done = await asyncio.gather(*(c.wait(tid, timeout_s=120) for tid in ids))
        for task in done:
            print(f"{task.id} {task.state.value} {(await c.logs(task.id)).strip()}")


if __name__ == "__main__":
    asyncio.run(main())
