"""What `janus demo` prints before and after the run: the setup, and the judgement of the audit."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from importlib.resources.abc import Traversable

from janus.audit import AuditReport, audit
from janus.cli.common import plural
from janus.config import JanusConfig
from janus.demo.world import (
    DEAD_SHOWN,
    DUPLICATES_PER_SECOND,
    HEAVY_TENANT,
    LIGHT_TENANTS,
    Outcome,
    World,
    columns,
)


def print_intro(world: World, config: JanusConfig, policy_file: Traversable) -> None:
    load = world.load
    print(
        f"Janus demo: {load.duration:g}s of traffic from {1 + len(LIGHT_TENANTS)} tenants to "
        f"{len(world.policies)} simulated APIs, then until every job has finished."
    )
    print(f"  policy    {policy_file}")
    print(f"  database  {config.database_url} (recreated)")
    print(f"  broker    {config.amqp_url} (new vhost)\n")
    width = max(len(p.name) for p in world.policies)
    for policy in world.policies:
        api = world.apis[policy.name]
        profile = api.profile
        limits = ", ".join(str(limit) for limit in policy.rate_limits) or "no rate limit"
        low, high = (round(seconds * 1000) for seconds in profile.latency)
        declined = f", {profile.declined_rate:.0%} always declined" if profile.declined_rate else ""
        allows = ", ".join(f"{count} per {window:g}s" for count, window in api.windows) or "any rate"
        print(f"  {policy.name:<{width}}  Janus: {limits}; concurrency {policy.concurrency or 'unlimited'}")
        print(
            f"  {'':<{width}}  API:   calls take {low}-{high} ms, {profile.failure_rate:.0%} fail{declined}; "
            f"allows {allows}"
        )
    burst = sum(load.burst_size(name) for name in load.profiles)
    trickle = sum(p.trickle_per_second for p in load.profiles.values())
    print(
        f"\nTenants: {HEAVY_TENANT} publishes {burst} jobs at once; {', '.join(LIGHT_TENANTS)} publish "
        f"{trickle:g} jobs/s each;\n{DUPLICATES_PER_SECOND:g} job ids a second are published again "
        "(they must not run twice).\n"
        "Each API counts its calls over its rate windows, by call time, and answers 429 past its\n"
        "limits: with Janus in front, never.\n"
        "Columns: admitted in the last window / limit; most calls in flight in the last second /\n"
        "concurrency; waiting jobs (eligible + in retry backoff); jobs done, retries, dead jobs; 429s.\n",
        flush=True,
    )


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def print_summary(world: World, outcome: Outcome) -> int:
    load, dead = world.load, outcome.recorded.dead
    report = audit(
        world.tally.records,
        {p.name: p for p in world.policies},
        expected_jobs=load.submitted.keys(),
        dead_jobs=dead.keys(),
    )
    state = outcome.problem or "every job finished"
    print(f"\n== after {outcome.elapsed:.0f}s: {len(load.submitted)} jobs, {state} ==\n")
    _print_dependencies(world, report, dead)
    _print_tenants(world, dead)
    if dead:
        shown = list(dead)[:DEAD_SHOWN]
        more = f" (the first {len(shown)})" if len(dead) > len(shown) else ""
        print(f"\nDead jobs{more}: each failed its last attempt, and janus.jobs keeps the error:")
        errors = outcome.recorded.last_errors
        print("\n".join(columns([[f"  {job_id}", errors[job_id]] for job_id in shown], left=(0, 1))))
    ran_once = not report.duplicate_starts and not report.repeated_successes
    print(
        f"\n{load.republished} job ids were published a second time: "
        + ("Janus ignored the copies, no job ran twice." if ran_once else "some jobs ran twice.")
    )
    print("\nThe audit of what the workers saw (janus.audit):")
    print("\n".join(f"  {line}" for line in report.summary().splitlines()))

    problems = _problems(world, report)
    if outcome.problem is not None:
        problems.insert(0, outcome.problem)
    if problems:
        print("\nFAIL: " + "; ".join(problems))
        return 1
    print(
        "\nPASS: no rate or concurrency limit exceeded, no 429, every job finished exactly once "
        "(succeeded, or dead after its last attempt)."
    )
    return 0


def _print_dependencies(world: World, report: AuditReport, dead: dict[str, str]) -> None:
    jobs = Counter(s.dependency for s in world.load.submitted.values())
    dead_jobs = Counter(dead.values())
    rows = [
        ["dependency", "jobs", "done", "dead", "calls", "retries", "429s", "busiest window", "most in flight"]
    ]
    for policy in world.policies:
        name, api, seen = policy.name, world.apis[policy.name], report.dependencies[policy.name]
        rows.append(
            [
                name,
                str(jobs[name]),
                str(len(world.tally.succeeded[name])),
                str(dead_jobs[name]),
                str(api.calls + api.refused),
                str(world.tally.failures[name] - dead_jobs[name]),
                str(api.refused),
                ", ".join(f"{worst} of {limit}" for limit, worst in seen.worst_rate.items()) or "-",
                f"{seen.worst_concurrency} of {policy.concurrency or '-'}",
            ]
        )
    print("\n".join(columns(rows, left=(0, 7))))


def _print_tenants(world: World, dead: dict[str, str]) -> None:
    """Fair share, seen as how long each tenant's jobs waited for their first admission."""
    submitted = world.load.submitted
    first_admitted: dict[str, float] = {}
    for record in world.tally.records:
        earliest = first_admitted.get(record.job_id, record.admitted_at)
        first_admitted[record.job_id] = min(record.admitted_at, earliest)
    waits: defaultdict[str, list[float]] = defaultdict(list)
    for job_id, submission in submitted.items():
        if job_id in first_admitted:
            waits[submission.scope].append(max(first_admitted[job_id] - submission.at, 0.0))
    jobs = Counter(s.scope for s in submitted.values())
    done = Counter(submitted[j].scope for j in world.tally.all_succeeded() if j in submitted)
    dead_jobs = Counter(submitted[j].scope for j in dead if j in submitted)
    rows = [["tenant", "jobs", "done", "dead", "median wait", "p95 wait", "max wait"]]
    for scope in (HEAVY_TENANT, *LIGHT_TENANTS):
        spread = waits[scope] or [0.0]
        rows.append(
            [
                scope,
                str(jobs[scope]),
                str(done[scope]),
                str(dead_jobs[scope]),
                f"{_percentile(spread, 0.5):.2f}s",
                f"{_percentile(spread, 0.95):.2f}s",
                f"{max(spread):.2f}s",
            ]
        )
    print(
        "\nWait from publication to first admission. Tenants take turns, so the light ones skip "
        f"{HEAVY_TENANT}'s\nbacklog; their longer waits are the seconds when a limit had no room "
        "left for anyone."
    )
    print("\n".join(columns(rows)))


def _problems(world: World, report: AuditReport) -> list[str]:
    problems = []
    if report.lost:
        problems.append(f"{plural(len(report.lost), 'job')} never finished (e.g. {report.lost[0]})")
    if report.worst_rate_excess > 0:
        problems.append(f"a rate limit was exceeded by {report.worst_rate_excess}")
    if report.worst_concurrency_excess > 0:
        problems.append(f"a concurrency limit was exceeded by {report.worst_concurrency_excess}")
    if report.duplicate_starts:
        problems.append(f"{plural(len(report.duplicate_starts), 'admission')} started more than once")
    # No lease can time out in the demo, so a second success can only be a duplicate run.
    if report.repeated_successes:
        problems.append(f"{plural(len(report.repeated_successes), 'job')} succeeded more than once")
    refused = sum(api.refused for api in world.apis.values())
    if refused:
        problems.append(f"the APIs answered 429 to {plural(refused, 'call')}")
    return problems
