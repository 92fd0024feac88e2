"""`janus simulate`: the workload file's errors, determinism, and the limits audited over the timeline.

The simulation drives the production `Scheduler`, so the limits it shows are the core's; what is
checked here is that the driver feeds it faithfully: every admission, start and finish in the
timeline, measured as the workers would, keeps the rate and concurrency limits, and a seed
gives one run.
"""

from __future__ import annotations

import csv
import io
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.audit import max_in_window, max_overlap
from janus.cli import main
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit, RetryPolicy
from janus.simulate import engine
from janus.simulate.engine import simulate
from janus.simulate.logs import Outcome
from janus.simulate.report import promised_windows, render, write_timeline
from janus.simulate.workload import ServiceModel, Workload, WorkloadError, parse_workload

POLICY = """
[dependencies.api]
rate_limits = ["20/1s"]
concurrency = 5
admission_ttl = "100ms"
lease_timeout = "5s"
[dependencies.api.retry]
base_delay = "200ms"
max_delay = "1s"
[dependencies.mail]
concurrency = 2
"""

GOOD = """
[[arrivals]]
dependency = "api"
scope = "a"
count = 30
[[arrivals]]
dependency = "api"
scope = "b"
rate = "10/1s"
start = "500ms"
stop = "2s"
[services.api]
duration = { uniform = ["50ms", "300ms"] }
failure_probability = 0.2
"""


def workload(text: str, base: Path | None = None) -> Workload:
    return parse_workload(tomllib.loads(text), ["api", "mail"], source="w.toml", base=base)


def timeline(outcome: Outcome) -> list[tuple[float, str, str, str, str, int, str]]:
    assert outcome.timeline is not None
    return outcome.timeline


# -- the workload file's errors: one line each, naming the key --------------------------------

ERRORS = [
    # nothing arrives
    ("", "arrivals: required key is missing"),
    # a typo in a key is an error, not a silent default
    (GOOD + "[workers.api]\nslot = 3\n", "workers.api.slot: unknown key"),
    # a stream is exactly one of the three kinds
    (
        '[[arrivals]]\ndependency = "api"\ncount = 3\nrate = 2\nstop = "1s"\n[services.api]\nduration = "1s"\n',
        "arrivals.0: give exactly one of count (at once), rate (steady) or trace (a CSV file)",
    ),
    # a steady rate needs its end
    (
        '[[arrivals]]\ndependency = "api"\nrate = 2\n[services.api]\nduration = "1s"\n',
        "arrivals.0: stop: required with rate (when the steady arrivals end)",
    ),
    # the dependency must be in the policy
    (
        '[[arrivals]]\ndependency = "apl"\ncount = 1\n',
        "arrivals.0.dependency: no dependency 'apl' in the policy",
    ),
    # counts are whole numbers
    (
        '[[arrivals]]\ndependency = "api"\ncount = 2.5\n[services.api]\nduration = "1s"\n',
        "arrivals.0.count: Input should be a valid integer",
    ),
    # a rate is jobs per second or COUNT/DURATION
    (
        '[[arrivals]]\ndependency = "api"\nrate = "ten"\nstop = "1s"\n[services.api]\nduration = "1s"\n',
        "arrivals.0.rate: invalid rate limit 'ten': expected 'COUNT/DURATION', e.g. '100/1s'",
    ),
    # durations take a unit, not a word
    (
        '[[arrivals]]\ndependency = "api"\ncount = 1\n[services.api]\nduration = "1 second"\n',
        "services.api.duration: invalid duration '1 second': use a number of seconds or e.g. '250ms', '2s', '5m', '1h'",
    ),
    # a distribution is one of the four shapes
    (
        '[[arrivals]]\ndependency = "api"\ncount = 1\n[services.api]\nduration = { normal = "1s" }\n',
        "services.api.duration: a duration is '100ms', or a table: { uniform = ['50ms', '150ms'] }, "
        "{ exponential = '100ms' } (mean) or { lognormal = '100ms', sigma = 0.5 } (median)",
    ),
    # a probability is at most 1
    (
        '[[arrivals]]\ndependency = "api"\ncount = 1\n[services.api]\nduration = "1s"\nfailure_probability = 1.5\n',
        "services.api.failure_probability: a probability is from 0 to 1, got 1.5",
    ),
    # an outage ends after it starts
    (
        '[[arrivals]]\ndependency = "api"\ncount = 1\n[services.api]\nduration = "1s"\n'
        'outages = [{ start = "10s", end = "5s" }]\n',
        "services.api.outages.0: end must be after start",
    ),
    # a service for a dependency the policy lacks
    (GOOD + '[services.nope]\nduration = "1s"\n', "services.nope: no such dependency in the policy"),
    # jobs arrive for a dependency whose answers are not described
    (
        '[[arrivals]]\ndependency = "mail"\ncount = 1\n',
        "services.mail: required: jobs of mail arrive, so say how it answers",
    ),
    # at least one handler
    (GOOD + "[workers.api]\nslots = 0\n", "workers.api.slots: Input should be greater than or equal to 1"),
    # several problems: the first, and how many more
    (
        '[[arrivals]]\ndependency = "api"\ncount = 0\nscope = 3\n',
        "arrivals.0.scope: Input should be a valid string (and 1 more)",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_a_bad_workload_is_one_exact_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(WorkloadError) as raised:
        workload(text)
    assert str(raised.value) == f"invalid workload in w.toml: {message}"
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "0.5,j1,api\n",
            "arrivals.0.trace: trace.csv line 1: expected t, job_id, dependency, scope (and optionally cost)",
        ),
        (
            "t,job_id,dependency,scope\nsoon,j1,api,a\n",
            "arrivals.0.trace: trace.csv line 2: t 'soon' is not a number",
        ),
        ("-1,j1,api,a\n", "arrivals.0.trace: trace.csv line 1: t must be a non-negative number"),
        ("1,j1,nope,a\n", "arrivals.0.trace: job 'j1' at t=1: no dependency 'nope' in the policy"),
        ("1,j1,api,a\n2,j1,api,a\n", "arrivals.0.trace: job 'j1' appears twice"),
    ],
)
def test_a_bad_trace_names_its_line(tmp_path: Path, rows: str, message: str) -> None:
    (tmp_path / "trace.csv").write_text(rows, encoding="utf-8")
    text = '[[arrivals]]\ntrace = "trace.csv"\n[services.api]\nduration = "1s"\n'
    with pytest.raises(WorkloadError) as raised:
        workload(text, base=tmp_path)
    assert str(raised.value) == f"invalid workload in w.toml: {message}"


def test_a_trace_arrives_as_written(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(
        "t,job_id,dependency,scope\n0.25,late,api,b\n0,first,api,a\n0,second,mail,\n", encoding="utf-8"
    )
    text = '[[arrivals]]\ntrace = "trace.csv"\n[services.api]\nduration = "10ms"\n[services.mail]\nduration = "10ms"\n'
    outcome = simulate(_policies(), workload(text, base=tmp_path), timeline=True)
    arrived = [
        (t, job, dep, scope) for t, event, job, dep, scope, _, _ in timeline(outcome) if event == "arrived"
    ]
    assert arrived == [
        (0.0, "first", "api", "a"),
        (0.0, "second", "mail", "default"),
        (0.25, "late", "api", "b"),
    ]
    assert outcome.unfinished == 0


# -- determinism --------------------------------------------------------------------------


def _policies() -> list[DependencyPolicy]:
    from janus.config import parse_config

    return parse_config(tomllib.loads(POLICY), env={}).policies()


def test_a_seed_gives_one_run_and_another_seed_another() -> None:
    first = simulate(_policies(), workload(GOOD), seed=7, timeline=True)
    again = simulate(_policies(), workload(GOOD), seed=7, timeline=True)
    other = simulate(_policies(), workload(GOOD), seed=8, timeline=True)
    assert timeline(first) == timeline(again)
    assert render(first, seed=7) == render(again, seed=7)
    assert timeline(first) != timeline(other)


def test_a_job_gets_the_same_answer_whatever_runs_before_it() -> None:
    """The service's draws are a function of (seed, job, attempt): a paired comparison of two
    policies sees the same luck."""
    service = ServiceModel(
        dependency="api",
        duration=workload(GOOD).services["api"].duration,
        failure_probability=0.5,
    )
    answers = [service.answer(3, f"job-{n}", 1, 0.0) for n in range(200)]
    assert answers == [service.answer(3, f"job-{n}", 1, 99.0) for n in range(200)]
    assert 60 < sum(answer.failed for answer in answers) < 140  # about half fail
    assert answers != [service.answer(4, f"job-{n}", 1, 0.0) for n in range(200)]


# -- the limits, audited over the timeline as the workers would measure them ------------------


class AlwaysTicking(engine.Simulation):
    """Runs the admission step after every result, as the service's tick does."""

    def _skips_admission(self, now: float) -> bool:
        return False


def audit_timeline(outcome: Outcome) -> None:
    rows = timeline(outcome)
    for name, policy in outcome.policies.items():
        admitted = [row[0] for row in rows if row[1] == "admitted" and row[3] == name]
        started = [row[0] for row in rows if row[1] == "started" and row[3] == name]
        for limit in policy.rate_limits:
            _, starts = promised_windows(limit, policy.admission_ttl)
            # Results trim an admission's place to T after its call began, never below T (core/rate.py).
            assert max_in_window(admitted, limit.window) <= limit.count
            assert max_in_window(started, starts) <= limit.count
        if policy.concurrency is not None:
            spans: dict[tuple[str, int], list[float]] = {}
            for t, event, job, dependency, _, attempt, _ in rows:
                if dependency == name and event in ("started", "finished"):
                    spans.setdefault((job, attempt), []).append(t)
            assert max_overlap((s[0], s[1]) for s in spans.values() if len(s) == 2) <= policy.concurrency
        for scope in {row[4] for row in rows if row[3] == name}:
            scope_admitted = [
                row[0] for row in rows if row[1] == "admitted" and row[3] == name and row[4] == scope
            ]
            for limit in policy.fairness.scope_rate_limits:
                assert max_in_window(scope_admitted, limit.window) <= limit.count


def test_the_rate_limit_binds_and_is_never_exceeded() -> None:
    text = '[[arrivals]]\ndependency = "api"\ncount = 200\n[services.api]\nduration = "10ms"\n'
    outcome = simulate(_policies(), workload(text), timeline=True)
    audit_timeline(outcome)
    admitted = [row[0] for row in timeline(outcome) if row[1] == "admitted"]
    assert max_in_window(admitted, outcome.policies["api"].rate_limits[0].window) == 20  # at the limit
    assert len(admitted) == 200
    assert outcome.dependencies["api"].at_limit["rate (rate 20/1s)"] > 8.0


def _dependency(
    draw: st.DrawFn, name: str
) -> tuple[DependencyPolicy, list[dict[str, object]], dict[str, object], dict[str, object]]:
    """A random dependency: its policy, arrivals, service and workers."""
    count = draw(st.integers(1, 30))
    window = draw(st.sampled_from([0.5, 1.0, 2.0]))
    ttl = draw(st.sampled_from([0.05, 0.1, 0.2]))
    policy = DependencyPolicy(
        name=name,
        rate_limits=(RateLimit(count=count, window=window),),
        concurrency=draw(st.none() | st.integers(1, 10)),
        admission_ttl=ttl,
        lease_timeout=draw(st.sampled_from([0.5, 2.0, 5.0])),
        retry=RetryPolicy(max_attempts=draw(st.integers(1, 4)), base_delay=0.1, max_delay=1.0),
        fairness=FairnessPolicy(
            weights={"a": draw(st.sampled_from([1.0, 3.0]))},
            scope_rate_limits=draw(st.sampled_from([(), (RateLimit(count=3, window=1.0),)])),
        ),
    )
    arrivals: list[dict[str, object]] = []
    for scope in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            arrivals.append({"dependency": name, "scope": scope, "count": draw(st.integers(1, 60))})
        else:
            arrivals.append(
                {
                    "dependency": name,
                    "scope": scope,
                    "rate": draw(st.sampled_from([5, 20, 50])),
                    "start": draw(st.sampled_from([0, 0.3])),
                    "stop": 2,
                    "spacing": draw(st.sampled_from(["even", "poisson"])),
                }
            )
    service: dict[str, object] = {
        "duration": draw(st.sampled_from(["20ms", {"uniform": ["10ms", "400ms"]}, {"exponential": "100ms"}])),
        "failure_probability": draw(st.sampled_from([0.0, 0.3])),
    }
    if draw(st.booleans()):
        service["capacity"] = "5/1s"
        service["throttle_retry_after"] = draw(st.sampled_from(["100ms", "1s"]))
    if draw(st.booleans()):
        service["outages"] = [{"start": "500ms", "end": "1s"}]
    workers: dict[str, object] = {
        "slots": draw(st.none() | st.integers(1, 8)),
        "start_delay": draw(st.sampled_from([0, "30ms", "150ms"])),
    }
    return policy, arrivals, service, workers


@st.composite
def scenarios(draw: st.DrawFn, names: tuple[str, ...] = ("api",)) -> tuple[list[DependencyPolicy], Workload]:
    parts = [_dependency(draw, name) for name in names]
    data = {
        "arrivals": [arrival for _, arrivals, _, _ in parts for arrival in arrivals],
        "services": {policy.name: service for policy, _, service, _ in parts},
        "workers": {policy.name: workers for policy, _, _, workers in parts},
        "horizon": "10m",
    }
    return [policy for policy, _, _, _ in parts], parse_workload(data, list(names))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_limit_holds_over_the_timeline_of_random_runs(
    scenario: tuple[list[DependencyPolicy], Workload],
) -> None:
    policies, load = scenario
    outcome = simulate(policies, load, seed=1, timeline=True)
    audit_timeline(outcome)
    finished = sum(scope.succeeded + scope.dead for scope in outcome.dependencies["api"].scopes.values())
    assert finished + outcome.unfinished == outcome.jobs
    if outcome.unfinished == 0:  # the per-scope count of jobs waiting (time at a limit) came back to 0
        assert [scope.waiting for scope in outcome.dependencies["api"].scopes.values()] == [0] * len(
            outcome.dependencies["api"].scopes
        )


def assert_skipping_changes_nothing(policies: list[DependencyPolicy], load: Workload) -> None:
    """The engine's runs with and without skipping admission steps (`_skips_admission`) agree."""
    skipping = engine.Simulation(policies, load, seed=2, timeline=True)
    fast = skipping.run()
    every_time = AlwaysTicking(policies, load, seed=2, timeline=True).run()
    if fast.unfinished == 0:  # the idle rule's count of waiting jobs came back to zero
        rule = skipping._skip
        assert {name: n for name, n in rule.waiting.items() if name not in rule.untracked} == {
            name: 0 for name in rule.waiting if name not in rule.untracked
        }
    assert timeline(fast) == timeline(every_time)
    assert fast.ticks <= every_time.ticks
    for name, log in fast.dependencies.items():
        at_limit = every_time.dependencies[name].at_limit
        assert log.at_limit == pytest.approx(at_limit), name  # the same spans, summed in other pieces
        for scope, scope_log in log.scopes.items():
            scope_at_limit = every_time.dependencies[name].scopes[scope].at_limit
            assert scope_log.at_limit == pytest.approx(scope_at_limit), (name, scope)
        # Logged as drained: each drain lists a lane's notes, then its circuit's changes.
        assert sorted(log.gate_events) == sorted(every_time.dependencies[name].gate_events)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_skipping_the_admission_step_changes_nothing(
    scenario: tuple[list[DependencyPolicy], Workload],
) -> None:
    assert_skipping_changes_nothing(*scenario)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(("api", "mail")))
def test_skipping_the_admission_step_changes_nothing_with_two_dependencies(
    scenario: tuple[list[DependencyPolicy], Workload],
) -> None:
    """A success of a dependency with no job waiting skips the step while the other one may
    have jobs waiting, held by its limits."""
    assert_skipping_changes_nothing(*scenario)


def test_a_backlog_beyond_the_cores_memory_is_paged_in_from_the_simulated_store() -> None:
    policy = DependencyPolicy(name="api", concurrency=50, admission_ttl=1.0, lease_timeout=10.0)
    load = parse_workload(
        {
            "arrivals": [{"dependency": "api", "scope": s, "count": 3000} for s in ("a", "b")],
            "services": {"api": {"duration": "1ms"}},
        },
        ["api"],
    )
    outcome = simulate([policy], load, timeline=True)
    assert outcome.unfinished == 0
    admitted = [row for row in timeline(outcome) if row[1] == "admitted"]
    assert len(admitted) == 6000
    # Fair share throughout, paging included: the two scopes never differ by more than 2.
    gap = 0
    for row in admitted:
        gap += 1 if row[4] == "a" else -1
        assert abs(gap) <= 2


# -- the service and worker models ---------------------------------------------------------


def test_calls_beyond_the_capacity_are_throttled_and_pause_the_dependency() -> None:
    policy = DependencyPolicy(name="api", admission_ttl=1.0, lease_timeout=10.0)
    load = parse_workload(
        {
            "arrivals": [{"dependency": "api", "count": 30}],
            "services": {"api": {"duration": "10ms", "capacity": "10/1s", "throttle_retry_after": "2s"}},
        },
        ["api"],
    )
    outcome = simulate([policy], load, timeline=True)
    log = outcome.dependencies["api"]
    assert log.throttled == 20  # no Janus limit: all 30 admitted at once, the API takes 10
    assert outcome.unfinished == 0
    paused = [event for event in log.gate_events if event[1] == "paused"]
    assert paused
    admitted_again = [row[0] for row in timeline(outcome) if row[1] == "admitted" and row[5] > 1]
    assert min(admitted_again) >= 2.0  # nothing of the dependency before the pause ends


def test_an_outage_fails_every_call_in_it() -> None:
    policy = DependencyPolicy(
        name="api", admission_ttl=1.0, lease_timeout=10.0, retry=RetryPolicy(max_attempts=1)
    )
    load = parse_workload(
        {
            "arrivals": [{"dependency": "api", "rate": 10, "stop": "3s"}],
            "services": {"api": {"duration": "10ms", "outages": [{"start": "1s", "end": "2s"}]}},
        },
        ["api"],
    )
    outcome = simulate([policy], load, timeline=True)
    dead = [row[0] for row in timeline(outcome) if row[1] == "dead"]
    assert len(dead) == 10
    assert all(1.0 <= t < 2.1 for t in dead)


def test_a_handler_longer_than_its_lease_is_cut_before_the_lease_ends() -> None:
    policy = DependencyPolicy(
        name="api", admission_ttl=0.5, lease_timeout=2.0, retry=RetryPolicy(max_attempts=2)
    )
    load = parse_workload(
        {"arrivals": [{"dependency": "api", "count": 1}], "services": {"api": {"duration": "10s"}}}, ["api"]
    )
    outcome = simulate([policy], load, timeline=True)
    finished = [row for row in timeline(outcome) if row[1] == "finished"]
    assert round(finished[0][0], 6) == 1.9  # lease 2s less the SDK's safety margin
    assert finished[0][6] == "failure: handler did not finish within the lease"
    assert outcome.dependencies["api"].lease_cut == 2
    assert outcome.dependencies["api"].scopes["default"].dead == 1


def test_admissions_no_worker_takes_in_time_come_back_unused() -> None:
    policy = DependencyPolicy(name="api", admission_ttl=0.1, lease_timeout=10.0)
    load = parse_workload(
        {
            "arrivals": [{"dependency": "api", "count": 5}],
            "services": {"api": {"duration": "1s"}},
            "workers": {"api": {"slots": 1}},
        },
        ["api"],
    )
    outcome = simulate([policy], load, timeline=True)
    log = outcome.dependencies["api"].scopes["default"]
    assert log.returned > 0  # four wait for the one handler and expire in the queue
    assert log.succeeded == 5
    assert outcome.unfinished == 0


# -- the command ----------------------------------------------------------------------------


def test_the_command_prints_the_figures_and_writes_the_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "workload.toml").write_text(GOOD, encoding="utf-8")
    code = main(
        [
            "simulate",
            "--config",
            str(tmp_path / "policy.toml"),
            "--workload",
            str(tmp_path / "workload.toml"),
            "--seed",
            "3",
            "--timeline",
            str(tmp_path / "timeline.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "== api: 20/1s; concurrency 5" in out
    assert "admissions/s" in out
    assert "wait p50" in out
    assert "time at a limit: rate (rate 20/1s)" in out
    with (tmp_path / "timeline.csv").open(encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["t", "event", "job_id", "dependency", "scope", "attempt", "detail"]
    assert {row[1] for row in rows[1:]} >= {"arrived", "admitted", "started", "finished"}


def test_a_bad_workload_fails_the_command_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "workload.toml").write_text('[[arrivals]]\ndependency = "apl"\ncount = 1\n', encoding="utf-8")
    code = main(
        ["simulate", "--config", str(tmp_path / "policy.toml"), "--workload", str(tmp_path / "workload.toml")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"janus: invalid workload in {tmp_path / 'workload.toml'}: arrivals.0.dependency: no dependency 'apl' in the policy\n"
    )


def test_plot_without_matplotlib_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from janus.simulate.plot import require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it now fails
    with pytest.raises(Exception, match=r"--plot needs matplotlib.*pip install 'janus-admission\[bench\]'"):
        require_matplotlib()


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from janus.simulate.plot import plot

    outcome = simulate(_policies(), workload(GOOD))
    plot(outcome, tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_timeline_needs_to_be_kept() -> None:
    outcome = simulate(_policies(), workload(GOOD))
    with pytest.raises(ValueError, match="kept no timeline"):
        write_timeline(outcome, io.StringIO())
