"""`janus simulate` with costed jobs: estimates declared by the workload, charged in the unit limits
by the core at admission, and settled by the actual cost each call reports."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from janus.audit import max_in_window
from janus.config import parse_config
from janus.core.policy import DependencyPolicy
from janus.simulate import parse_workload, simulate
from janus.simulate.report import render
from janus.simulate.workload import Workload, WorkloadError
from tests.unit.test_simulate import assert_skipping_changes_nothing

POLICY = """
[dependencies.llm]
rate_limits = ["10000 units/1s"]
admission_ttl = "100ms"
lease_timeout = "5s"
"""


def policies() -> list[DependencyPolicy]:
    return parse_config(tomllib.loads(POLICY), env={}).policies()


def workload(
    cost: object, factor: object | None = None, count: int = 100, *, steady: bool = False
) -> Workload:
    service: dict[str, object] = {"duration": "50ms"}
    if factor is not None:
        service["cost_factor"] = factor
    arrival: dict[str, object] = {"dependency": "llm", "scope": "a", "cost": cost}
    arrival.update({"rate": 20, "stop": f"{count / 20}s"} if steady else {"count": count})
    return parse_workload({"arrivals": [arrival], "services": {"llm": service}}, ["llm"])


def makespan(cost: object, factor: object | None = None, *, steady: bool = False) -> float:
    outcome = simulate(policies(), workload(cost, factor, steady=steady))
    assert outcome.unfinished == 0
    return max(scope.finished[-1] for scope in outcome.dependencies["llm"].scopes.values())


def test_the_estimates_are_charged_in_the_unit_limit() -> None:
    outcome = simulate(policies(), workload(1000), timeline=True)
    assert outcome.timeline is not None
    # A result's duration ends its admission's place early (docs/protocol.md), so the promise
    # is at the API: calls started in any window of T hold at most the limit, and it is used.
    started = [row[0] for row in outcome.timeline if row[1] == "started"]
    window = outcome.policies["llm"].unit_limits[0].window
    assert max_in_window(started, window) == 10  # 10 x 1000 units: the limit, exactly
    assert makespan(1000) > 8.0  # 100,000 units at 10,000 per second
    assert makespan(100) < 1.0  # the same jobs, a tenth of the units each: one window


def test_the_actual_cost_settles_the_estimate() -> None:
    # Every call costs half its estimate: the units given back admit the next jobs sooner.
    over_estimated = makespan(1000, {"uniform": [0.5, 0.5]})
    assert over_estimated < 0.7 * makespan(1000)
    # Every call costs twice its estimate: the rest is charged in the window of its admission,
    # and the admissions after it in that window wait (20 jobs/s of 1000 units arriving).
    under_estimated = makespan(1000, {"uniform": [2.0, 2.0]}, steady=True)
    assert under_estimated > 1.5 * makespan(1000, steady=True)
    outcome = simulate(policies(), workload(1000, {"uniform": [0.5, 1.5]}))
    log = outcome.dependencies["llm"]
    assert log.units_estimated == 100 * 1000
    assert 0.5 * log.units_estimated < log.units_actual < 1.5 * log.units_estimated
    assert "units of the calls that reported a cost: estimated 100,000, actual" in render(outcome, seed=0)


def test_a_cost_drawn_from_a_distribution_is_one_per_job_and_seed() -> None:
    load = workload({"uniform": [500, 3000]}, {"lognormal": 1.0, "sigma": 0.3})
    first, again = (simulate(policies(), load, seed=4, timeline=True) for _ in range(2))
    assert first.timeline == again.timeline
    assert first.dependencies["llm"].units_estimated == again.dependencies["llm"].units_estimated
    assert 500 * 100 < first.dependencies["llm"].units_estimated < 3000 * 100


def test_a_job_whose_cost_never_fits_is_set_aside_at_intake() -> None:
    outcome = simulate(policies(), workload(20_000, count=3))
    log = outcome.dependencies["llm"]
    assert [job for job, _, _ in log.refused] == ["llm/a/0-0", "llm/a/0-1", "llm/a/0-2"]
    assert log.refused[0][2] == "cost 20000 can never fit the unit limit 10000 units/1s of 'llm'"
    assert outcome.unfinished == 0  # not left waiting forever
    assert "set aside at intake: 3 jobs" in render(outcome, seed=0)


def test_skipping_the_admission_step_changes_nothing_with_costs() -> None:
    load = parse_workload(
        {
            "arrivals": [
                {"dependency": "llm", "scope": "a", "count": 60, "cost": {"uniform": [200, 3000]}},
                {"dependency": "llm", "scope": "b", "rate": 20, "stop": "3s", "cost": 400},
            ],
            "services": {
                "llm": {"duration": {"uniform": ["10ms", "300ms"]}, "cost_factor": {"uniform": [0.5, 1.5]}}
            },
        },
        ["llm"],
    )
    assert_skipping_changes_nothing(policies(), load)


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        (-1, "arrivals.0.cost: a cost is a non-negative number, or a table"),
        ("big", "arrivals.0.cost: a cost is a non-negative number, or a table"),
        ({"uniform": [3, 1]}, "arrivals.0.cost: uniform: the low end comes first"),
    ],
)
def test_a_bad_cost_names_its_key(cost: object, message: str) -> None:
    with pytest.raises(WorkloadError, match=message.replace("(", r"\(")):
        workload(cost)


# -- a trace's cost column ------------------------------------------------------------------


def traced(tmp_path: Path, rows: str, stream_cost: object | None = None) -> Workload:
    (tmp_path / "trace.csv").write_text(rows, encoding="utf-8")
    arrival: dict[str, object] = {"trace": "trace.csv"}
    if stream_cost is not None:
        arrival["cost"] = stream_cost
    return parse_workload(
        {"arrivals": [arrival], "services": {"llm": {"duration": "50ms", "cost_factor": 1.0}}},
        ["llm"],
        base=tmp_path,
    )


def test_a_trace_gives_each_job_its_cost(tmp_path: Path) -> None:
    # 20 jobs at once, of 4000 units each: two fit in a window of 10,000 units.
    heavy = "t,job_id,dependency,scope,cost\n" + "".join(f"0,h{n},llm,a,4000\n" for n in range(20))
    outcome = simulate(policies(), traced(tmp_path, heavy), timeline=True)
    assert outcome.unfinished == 0
    assert outcome.dependencies["llm"].units_estimated == 20 * 4000
    assert outcome.timeline is not None
    started = [row[0] for row in outcome.timeline if row[1] == "started"]
    assert max_in_window(started, 1.0) == 2
    assert max(started) == pytest.approx(9.0)  # ten windows of two
    # The same rows without the column cost 1 each: one window.
    light = "".join(f"0,h{n},llm,a\n" for n in range(20))
    outcome = simulate(policies(), traced(tmp_path, light))
    assert outcome.dependencies["llm"].units_estimated == 20
    assert max(scope.finished[-1] for scope in outcome.dependencies["llm"].scopes.values()) < 1.0


def test_an_empty_cost_cell_takes_the_streams_cost(tmp_path: Path) -> None:
    rows = "0,a,llm,x,300\n0,b,llm,x,\n0.5,c,llm,x\n"  # a cost, an empty cell, no cell
    outcome = simulate(policies(), traced(tmp_path, rows, stream_cost=50), timeline=True)
    assert outcome.dependencies["llm"].units_estimated == 300 + 50 + 50
    outcome = simulate(policies(), traced(tmp_path, rows))
    assert outcome.dependencies["llm"].units_estimated == 300 + 1 + 1
    # A cost that never fits is set aside at intake, as a stream's is.
    outcome = simulate(policies(), traced(tmp_path, "0,big,llm,x,20000\n0,ok,llm,x,10\n"))
    assert [job for job, _, _ in outcome.dependencies["llm"].refused] == ["big"]
    assert outcome.unfinished == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0,a,llm,x,lots\n", "arrivals.0.trace: trace.csv line 1: cost 'lots' is not a number"),
        ("t,job_id,dependency,scope,cost\n0,a,llm,x,-2\n", "trace.csv line 2: cost must be a non-negative"),
        ("0,a,llm,x,1,2\n", "trace.csv line 1: expected t, job_id, dependency, scope (and optionally cost)"),
    ],
)
def test_a_bad_trace_cost_names_its_line(tmp_path: Path, rows: str, message: str) -> None:
    with pytest.raises(WorkloadError) as raised:
        traced(tmp_path, rows)
    assert message in str(raised.value)
    assert str(raised.value).startswith("invalid workload in <workload>: arrivals.0.trace: trace.csv line")
