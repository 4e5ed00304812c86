"""Advance reservations in the pure core: cover the reserving tenant, hold the cards back
from everyone else whenever their work could overlap the window."""

from __future__ import annotations

from sched_helpers import gpu_pool, gpu_task

from computenet.model.pool import Capacity
from computenet.sched.core import Context, schedule
from computenet.sched.types import Reservation, RunningTask

POOL = "cn.51/p/gpu"
OTHER = "cn.51/p/other"


def _rsv(start_in_s: float, end_in_s: float, free: int = 2, tenant: str = "acme") -> Reservation:
    return Reservation("rsv-1", POOL, tenant, free, start_in_s, end_in_s)


def _ctx(*reservations: Reservation, **kw: object) -> Context:
    return Context(reservations=reservations, **kw)  # type: ignore[arg-type]


def test_inside_the_window_the_owner_runs_on_the_cards_and_others_wait() -> None:
    pools = [gpu_pool(POOL, cards=2)]
    tasks = [
        gpu_task("other", 2, tenant="globex", seq=1, resources={"time_limit_s": 60}),
        gpu_task("mine", 2, tenant="acme", seq=2, resources={"time_limit_s": 60}),
    ]
    out = {d.task_id: d for d in schedule(tasks, pools, _ctx(_rsv(-10, 3600)))}
    assert out["mine"].pool == POOL and out["mine"].reservation == "rsv-1"
    assert out["other"].pool is None
    assert "2 cards on 1 of them are reserved" in out["other"].reason


def test_outside_the_window_the_cards_are_free() -> None:
    pools = [gpu_pool(POOL, cards=2)]
    task = gpu_task("other", 2, tenant="globex", resources={"time_limit_s": 600})
    # The window ended, or it starts after the task's time limit is up.
    for rsv in (_rsv(-3600, 0), _rsv(601, 1200)):
        [d] = schedule([task], pools, _ctx(rsv))
        assert d.pool == POOL and d.reservation == ""


def test_work_that_would_run_into_the_window_waits() -> None:
    pools = [gpu_pool(POOL, cards=2)]
    long = gpu_task("long", 2, tenant="globex", resources={"time_limit_s": 900})
    unlimited = gpu_task("unlimited", 2, tenant="globex", seq=1)
    out = {d.task_id: d for d in schedule([long, unlimited], pools, _ctx(_rsv(600, 1200)))}
    assert out["long"].pool is None
    assert out["unlimited"].pool is None
    assert "without a time limit" in out["unlimited"].reason


def test_only_the_free_part_of_a_reservation_is_held() -> None:
    # 4 cards, 2 reserved: the other 2 stay open to everyone.
    pools = [gpu_pool(POOL, cards=4)]
    tasks = [gpu_task(f"o{k}", 1, tenant="globex", seq=k) for k in range(3)]
    out = schedule(tasks, pools, _ctx(_rsv(-1, 3600)))
    assert [d.pool for d in out] == [POOL, POOL, None]


def test_owner_tasks_that_do_not_fit_the_window_use_open_capacity() -> None:
    pools = [gpu_pool(POOL, cards=2), gpu_pool(OTHER, cards=2, price="50")]
    beyond = gpu_task("beyond", 2, tenant="acme", resources={"time_limit_s": 7200})
    [d] = schedule([beyond], pools, _ctx(_rsv(-1, 3600)))
    assert d.pool == OTHER and d.reservation == ""


def test_reserved_cards_come_first_even_when_open_pools_score_better() -> None:
    pools = [gpu_pool(POOL, cards=2, price="50"), gpu_pool(OTHER, cards=8, price="1")]
    tasks = [
        gpu_task(f"m{k}", 1, tenant="acme", seq=k, resources={"time_limit_s": 60}) for k in range(3)
    ]
    out = schedule(tasks, pools, _ctx(_rsv(-1, 3600)))
    assert [(d.pool, d.reservation) for d in out] == [
        (POOL, "rsv-1"),
        (POOL, "rsv-1"),
        (OTHER, ""),
    ]


def test_cards_busy_with_earlier_work_are_not_handed_out_twice() -> None:
    # The pool's cards are taken by work placed before the reservation: nothing fits.
    pools = [gpu_pool(POOL, cards=2, free_cards=0)]
    mine = gpu_task("mine", 2, tenant="acme", resources={"time_limit_s": 60})
    [d] = schedule([mine], pools, _ctx(_rsv(-1, 3600)))
    assert d.pool is None


def test_the_owner_preempts_spot_work_only_outside_its_reserved_cards() -> None:
    pools = [gpu_pool(POOL, cards=4, free_cards=0)]
    spot = RunningTask("spot", POOL, Capacity(accelerators=4), preemptible=True, tenant="globex")
    other = gpu_task("other", 2, tenant="globex", resources={"time_limit_s": 60})
    [d] = schedule([other], pools, _ctx(_rsv(-1, 3600), running=[spot]))
    # Evicting the spot work frees 4 cards, 2 of them reserved: enough for 2 more.
    assert d.pool == POOL and d.preempt == ("spot",)


def test_cpu_work_ignores_card_reservations() -> None:
    pools = [gpu_pool(POOL, cards=2)]
    cpu = gpu_task("cpu", 0, tenant="globex", resources={"accelerator": None, "cpu_cores": 4})
    [d] = schedule([cpu], pools, _ctx(_rsv(-1, 3600)))
    assert d.pool == POOL
