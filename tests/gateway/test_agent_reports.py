"""What the gateway agent reports, and when: a task that ends within ``RUNNING_HOLD_S`` of
its lease is reported once, finished; a longer one is reported RUNNING first."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from computenet.gateway.agent import RUNNING_HOLD_S, GatewayAgent, _Tracked
from computenet.gateway.backends.base import Job, JobStatus
from computenet.gateway.backends.local import LocalBackend
from computenet.model.pool import PoolSpec
from computenet.model.protocol import ReportReply, TaskReport
from computenet.model.task import TaskSpec, TaskState

POOL = PoolSpec(label="host", cpu_cores=2, memory_mib=2048)


class Recorder:
    """Stands in for the node's report endpoint: records what the agent sends."""

    def __init__(self) -> None:
        self.sent: list[TaskState] = []

    async def report(self, _task_id: str, msg: TaskReport) -> ReportReply:
        self.sent.append(msg.state)
        return ReportReply(cancel=False)


def _agent(tmp_path: Path) -> tuple[GatewayAgent, Recorder, _Tracked]:
    agent = GatewayAgent("http://127.0.0.1:9", tmp_path, LocalBackend(tmp_path / "gw", [POOL]))
    recorder = Recorder()
    agent.client = recorder  # type: ignore[assignment]
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    tracked = _Tracked(Job("cn-T1", 1, "lease1", "cn/p/host", spec))
    agent.tracked["cn-T1.1"] = tracked
    return agent, recorder, tracked


def test_a_task_that_ends_within_the_hold_is_reported_once_finished(tmp_path: Path) -> None:
    agent, recorder, tracked = _agent(tmp_path)
    tracked.since = time.monotonic()  # just leased
    asyncio.run(agent._report(tracked, JobStatus(TaskState.RUNNING)))
    assert recorder.sent == []  # held: its end is likely to come first
    asyncio.run(agent._report(tracked, JobStatus(TaskState.COMPLETE)))
    assert recorder.sent == [TaskState.COMPLETE]


def test_a_task_still_running_after_the_hold_is_reported_running(tmp_path: Path) -> None:
    agent, recorder, tracked = _agent(tmp_path)
    tracked.since = time.monotonic() - RUNNING_HOLD_S - 0.01
    asyncio.run(agent._report(tracked, JobStatus(TaskState.RUNNING)))
    assert recorder.sent == [TaskState.RUNNING]
    asyncio.run(agent._report(tracked, JobStatus(TaskState.RUNNING)))  # nothing new
    asyncio.run(agent._report(tracked, JobStatus(TaskState.COMPLETE)))
    assert recorder.sent == [TaskState.RUNNING, TaskState.COMPLETE]
