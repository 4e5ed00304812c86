"""Trace CSV parsing, the Gavel importer and the synthetic generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from computenet.errors import InvalidInput
from computenet.sched.pooltable import workload_throughputs
from computenet.sim.trace import Job, read_csv, read_gavel, scale_arrivals, synthetic, write_csv

DATA = Path(__file__).with_name("data")
K80, P100, V100 = "nvidia-k80", "nvidia-p100-pcie-16g", "nvidia-v100-sxm2-16g"

HEADER = "job_id,tenant,arrival_s,cards,min_memory_gib,priority,origin,input_gb"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_csv_reads_documented_format(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"{HEADER},runtime_s.m1,runtime_s.m2\n"
        "b,team-x,20,4,24,3,51,1.5,100,\n"
        "a,team-y,10,1,,,,,200,50\n",
    )
    jobs = read_csv(path)
    assert [j.job_id for j in jobs] == ["a", "b"]  # sorted by arrival
    assert jobs[0] == Job("a", "team-y", 10.0, 1, {"m1": 200.0, "m2": 50.0})
    assert jobs[1] == Job("b", "team-x", 20.0, 4, {"m1": 100.0}, 24, 3, "51", 1.5)


def test_csv_round_trip(tmp_path: Path) -> None:
    jobs = synthetic(30, seed=3, origins=["31", "51"])
    path = tmp_path / "rt.csv"
    write_csv(jobs, path)
    assert read_csv(path) == jobs


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("job_id,tenant,arrival_s\n", "missing column(s) cards"),
        ("job_id,tenant,arrival_s,cards\n", "no runtime_s.* column"),
        ("job_id,tenant,arrival_s,cards,colour,runtime_s.m\n", "unknown column(s) colour"),
        (f"{HEADER},runtime_s.m\nx,t,-1,1,,,,,5\n", "line 2: arrival_s"),
        (f"{HEADER},runtime_s.m\nx,t,0,1,,,,,abc\n", "line 2"),
        (f"{HEADER},runtime_s.m\nx,t,0,1,,,,,0\n", "line 2: run times must be positive"),
        (f"{HEADER},runtime_s.m\nx,t,0,1,,,,,\n", "line 2: run times must be positive"),
        (f"{HEADER},runtime_s.m\nx,t,0,1,,,99x,,5\n", "line 2: origin"),
        (f"{HEADER},runtime_s.m\nx,t,0,1,,,,,5\nx,t,1,1,,,,,5\n", "line 3: duplicate job_id"),
    ],
)
def test_csv_refuses_bad_input(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_csv(write(tmp_path, body))


def test_csv_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read trace"):
        read_csv(tmp_path / "absent.csv")


def gavel(seed: int = 0) -> list[Job]:
    return read_gavel(
        DATA / "gavel_sample.trace",
        DATA / "gavel_throughputs_sample.json",
        tenants=3,
        origins=["31", "51"],
        seed=seed,
    )


def test_gavel_importer_runtime_is_steps_over_throughput() -> None:
    speeds = json.loads((DATA / "gavel_throughputs_sample.json").read_text())
    jobs = {j.job_id: j for j in gavel()}
    assert len(jobs) == 7
    first = jobs["gavel-00000"]  # Transformer (batch size 128), 1 card, 15486530 steps, t=0
    assert (first.arrival_s, first.cards, first.min_memory_gib) == (0.0, 1, 0)
    for kind, model in (("k80", K80), ("p100", P100), ("v100", V100)):
        rate = speeds[kind]["('Transformer (batch size 128)', 1)"]["null"]
        assert first.runtime_s[model] == pytest.approx(15486530 / rate)
    assert first.runtime_s[K80] > first.runtime_s[P100] > first.runtime_s[V100]


def test_gavel_out_of_memory_type_is_excluded_by_card_memory() -> None:
    resnet = {j.job_id: j for j in gavel()}["gavel-00004"]  # ResNet-50 bs 128 on 8 cards
    assert resnet.cards == 8
    assert K80 not in resnet.runtime_s  # Gavel measured 0 steps/s on K80
    assert resnet.min_memory_gib == 13  # above the K80's 12 GiB, within P100/V100's 16


def test_gavel_unmeasured_scale_extrapolates_linearly() -> None:
    speeds = json.loads((DATA / "gavel_throughputs_sample.json").read_text())
    big = next(j for j in gavel() if j.cards == 16)  # LM (batch size 20); Gavel measured up to 8
    line = (DATA / "gavel_sample.trace").read_text().splitlines()[-1].split("\t")
    rate8 = speeds["v100"]["('LM (batch size 20)', 8)"]["null"]
    assert big.runtime_s[V100] == pytest.approx(int(line[4]) / (rate8 * 2))


def test_gavel_tenants_and_origins_are_seeded() -> None:
    assert gavel(seed=1) == gavel(seed=1)
    one, two = gavel(seed=1), gavel(seed=2)
    assert [(j.tenant, j.origin) for j in one] != [(j.tenant, j.origin) for j in two]
    assert {j.origin for j in one} <= {"31", "51"}


def test_gavel_bad_line_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_text("only\ttwo\n")
    with pytest.raises(InvalidInput, match="line 1: expected 7 tab-separated fields"):
        read_gavel(bad, DATA / "gavel_throughputs_sample.json")


def test_synthetic_is_deterministic_per_seed() -> None:
    assert synthetic(200, seed=7) == synthetic(200, seed=7)
    assert synthetic(200, seed=7) != synthetic(200, seed=8)
    jobs = synthetic(200, seed=7, tenants=3)
    arrivals = [j.arrival_s for j in jobs]
    assert arrivals == sorted(arrivals)
    assert {j.cards for j in jobs} <= {1, 2, 4, 8}
    assert {j.tenant for j in jobs} == {"tenant-0", "tenant-1", "tenant-2"}
    # each job's speeds follow its workload's row of the core's throughput table, +-10 %
    table = workload_throughputs()
    for j in jobs:
        measured = table[j.workload]["v100"] / table[j.workload]["k80"]
        assert j.runtime_s[K80] / j.runtime_s[V100] == pytest.approx(measured, rel=0.23)


def test_arrival_scale_compresses_time_only() -> None:
    jobs = synthetic(10, seed=1)
    fast = scale_arrivals(jobs, 0.5)
    assert [j.arrival_s for j in fast] == [j.arrival_s * 0.5 for j in jobs]
    assert [j.runtime_s for j in fast] == [j.runtime_s for j in jobs]
    with pytest.raises(InvalidInput, match="must be positive"):
        scale_arrivals(jobs, 0)
