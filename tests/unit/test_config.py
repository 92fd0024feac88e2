"""The policy file: its syntax (durations, rate limits), its defaults, its overrides, its errors.

Every bad case lives in `config_cases/` as one small TOML file, and the table
below says which key path the error must name and what it must say about it
(envoyproxy/ratelimit's `test/config/*.yaml`, one file per failure).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.cli import main
from janus.config import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    load_config,
    parse_config,
    parse_duration,
    parse_rate_limit,
)
from janus.core.policy import (
    CircuitPolicy,
    FairnessPolicy,
    RateCounting,
    RateLimit,
    RecoveryPolicy,
    RetryPolicy,
)
from janus.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "janus.toml"
CASES = Path(__file__).resolve().parent / "config_cases"


def write(tmp_path: Path, text: str, name: str = "janus.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped example ------------------------------------------------------


def test_example_config_validates_with_the_values_it_states() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert config.database_url == "postgresql://postgres@127.0.0.1:5432/janus"
    assert config.max_payload_bytes == 65536
    assert config.max_message_size == 131072
    assert config.bad_results_limit == RateLimit(count=200, window=1.0)
    policies = {policy.name: policy for policy in config.policies()}
    assert list(policies) == ["payments-api", "email"]  # file order is kept

    payments = policies["payments-api"]
    assert payments.rate_limits == (RateLimit(count=100, window=1.0), RateLimit(count=2000, window=60.0))
    assert payments.concurrency == 20
    assert payments.lease_timeout == 30.0
    assert payments.admission_ttl == 0.2
    assert payments.retry == RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0, jitter=0.5)

    assert payments.fairness == FairnessPolicy(
        default_weight=1.0,
        weights={"tenant-gold": 4.0, "tenant-free": 0.5},
        scope_concurrency=5,
        scope_rate_limits=(RateLimit(count=10, window=1.0),),
    )

    email = policies["email"]
    assert email.rate_limits == (RateLimit(count=10, window=1.0),)
    assert email.concurrency == 5
    assert email.lease_timeout == 300.0  # the file's default, not the core's
    assert email.admission_ttl == pytest.approx(0.1)  # a tenth of the 1 s window
    assert email.retry == RetryPolicy()
    assert email.fairness == FairnessPolicy()


def test_a_minimal_file_takes_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[dependencies.api]\n"), env={})
    assert config.amqp_url == DEFAULT_AMQP_URL
    assert config.database_url == DEFAULT_DATABASE_URL
    assert config.max_payload_bytes == 64 * 1024
    assert config.bad_results_limit == RateLimit(count=200, window=1.0)
    [policy] = config.policies()
    assert policy.name == "api"
    assert policy.rate_limits == ()
    assert policy.concurrency is None  # unlimited
    assert policy.lease_timeout == 300.0
    assert policy.admission_ttl == 30.0
    assert policy.retry == RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0, jitter=0.5)
    # The retry control defaults of the config reference.
    assert (policy.retry.budget, policy.retry.budget_window) == (0.2, 10.0)
    assert (policy.retry.min_retries, policy.retry.max_retry_after) == (10, 600.0)
    assert policy.circuit == CircuitPolicy(
        enabled=True,
        failure_threshold=0.5,
        min_outcomes=20,
        window=30.0,
        open_for=10.0,
        max_open_for=300.0,
        half_open_probes=3,
    )


def test_a_rate_limit_counts_starts_unless_it_says_admissions(tmp_path: Path) -> None:
    text = """
[dependencies.api]
rate_limits = ["20/1s", { limit = "1000/1m", counts = "admissions" }, { limit = "5/100ms", counts = "starts" }]
admission_ttl = "50ms"

[dependencies.api.fairness]
scope_rate_limits = [{ limit = "2/1s" }, { limit = "30/1m", counts = "admissions" }]
"""
    [policy] = load_config(write(tmp_path, text), env={}).policies()
    starts, admissions = RateCounting.STARTS, RateCounting.ADMISSIONS
    assert policy.rate_limits == (
        RateLimit(count=20, window=1.0, counts=starts),
        RateLimit(count=1000, window=60.0, counts=admissions),
        RateLimit(count=5, window=0.1, counts=starts),
    )
    assert policy.fairness.scope_rate_limits == (
        RateLimit(count=2, window=1.0),
        RateLimit(count=30, window=60.0, counts=admissions),
    )
    # The span admissions are counted over: the window, plus the TTL for a limit that counts starts.
    spans = [limit.admission_window(policy.admission_ttl) for limit in policy.rate_limits]
    assert spans == pytest.approx([1.05, 60.0, 0.15])
    assert policy.longest_window == 60.0


def test_retry_control_keys_are_read(tmp_path: Path) -> None:
    text = """
[dependencies.payments-api.retry]
budget = 0.1
budget_window = "30s"
min_retries = 5
max_retry_after = "2m"

[dependencies.payments-api.circuit]
enabled = false
failure_threshold = 0.25
min_outcomes = 50
window = "1m"
open_for = "5s"
max_open_for = "1m"
half_open_probes = 1
"""
    [policy] = load_config(write(tmp_path, text), env={}).policies()
    assert (policy.retry.budget, policy.retry.budget_window) == (0.1, 30.0)
    assert (policy.retry.min_retries, policy.retry.max_retry_after) == (5, 120.0)
    assert policy.circuit == CircuitPolicy(
        enabled=False,
        failure_threshold=0.25,
        min_outcomes=50,
        window=60.0,
        open_for=5.0,
        max_open_for=60.0,
        half_open_probes=1,
    )


# -- durations ----------------------------------------------------------------

DURATIONS = [
    ("250ms", 0.25),  # milliseconds
    ("2s", 2.0),  # seconds
    ("5m", 300.0),  # minutes
    ("1h", 3600.0),  # hours
    ("1d", 86400.0),  # days
    ("1.5h", 5400.0),  # a decimal number of a unit
    (".5s", 0.5),  # a decimal without its leading zero
    (" 2 s ", 2.0),  # spaces around and between are tolerated
    ("s", 1.0),  # a bare unit is one of it (this is what makes "100/s" work)
    (30, 30.0),  # an integer is seconds
    (0.25, 0.25),  # a float is seconds
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds, rel=1e-12)


BAD_DURATIONS = [
    ("30 seconds", "invalid duration"),  # a word, not a unit
    ("2S", "invalid duration"),  # units are lower case
    ("1w", "invalid duration"),  # no weeks
    ("1e3s", "invalid duration"),  # no exponents
    ("-1s", "invalid duration"),  # no sign in the string form
    ("", "invalid duration"),  # nothing at all
    ("10", "invalid duration"),  # a string needs its unit
    ("0s", "must be positive"),  # zero
    (0, "must be positive"),  # zero as a number
    (-5, "must be positive"),  # negative
    (math.inf, "must be positive"),  # not finite
    (math.nan, "must be positive"),  # not a number
    (True, "a duration is a number"),  # bool is an int in Python, but not a duration
    ([1], "a duration is a number"),  # wrong type altogether
    (None, "a duration is a number"),  # absent value
]


@pytest.mark.parametrize(("value", "problem"), BAD_DURATIONS)
def test_parse_duration_rejects(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_duration(value)


@settings(max_examples=200, deadline=None)
@given(
    number=st.integers(min_value=1, max_value=10**6),
    unit=st.sampled_from([("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)]),
)
def test_parse_duration_scales_any_integer_by_its_unit(number: int, unit: tuple[str, float]) -> None:
    suffix, factor = unit
    assert parse_duration(f"{number}{suffix}") == pytest.approx(number * factor, rel=1e-12)


# -- rate limits --------------------------------------------------------------

RATE_LIMITS = [
    ("100/1s", 100, 1.0),  # the common form
    ("100/s", 100, 1.0),  # a bare unit means one of it
    ("2000/1m", 2000, 60.0),  # a minute window
    ("5/250ms", 5, 0.25),  # a sub-second window
    (" 7 / 2h ", 7, 7200.0),  # spaces are tolerated
    ("1/1d", 1, 86400.0),  # a day window
]


@pytest.mark.parametrize(("text", "count", "window"), RATE_LIMITS)
def test_parse_rate_limit(text: str, count: int, window: float) -> None:
    assert parse_rate_limit(text) == RateLimit(count=count, window=window)


def test_parse_rate_limit_passes_a_rate_limit_through() -> None:
    limit = RateLimit(count=3, window=2.0)
    assert parse_rate_limit(limit) is limit


BAD_RATE_LIMITS = [
    ("100", "expected 'COUNT/DURATION'"),  # no window
    ("/1s", "expected 'COUNT/DURATION'"),  # no count
    ("100/", "expected 'COUNT/DURATION'"),  # empty window
    ("-1/1s", "expected 'COUNT/DURATION'"),  # negative count
    ("1.5/1s", "expected 'COUNT/DURATION'"),  # fractional count
    ("0/1s", "COUNT must be at least 1"),  # zero count
    ("100/0s", "must be positive"),  # zero window
    ("100/1w", "invalid duration '1w'"),  # unknown unit
    ("100/1s/1s", "invalid duration"),  # two windows
    ("100 per second", "expected 'COUNT/DURATION'"),  # prose
    (100, "a rate limit is a string"),  # a bare number
    (None, "a rate limit is a string"),  # nothing
]


@pytest.mark.parametrize(("value", "problem"), BAD_RATE_LIMITS)
def test_parse_rate_limit_rejects(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rate_limit(value)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 10**9), number=st.integers(1, 10**4), unit=st.sampled_from(["ms", "s", "m", "h"]))
def test_rate_limit_text_round_trips(count: int, number: int, unit: str) -> None:
    limit = parse_rate_limit(f"{count}/{number}{unit}")
    assert limit.count == count
    assert limit.window == parse_duration(f"{number}{unit}")


# -- defaults -----------------------------------------------------------------

ADMISSION_TTL_DEFAULTS = [
    # (rate_limits, lease_timeout or None for the default, expected admission_ttl)
    ([], None, 30.0),  # no limit: 30 s; lease 300 s / 2 = 150 s does not bind
    (["100/1s", {"limit": "10/1m", "counts": "admissions"}], None, 0.1),  # whatever the limits count
    ([], "40s", 20.0),  # no limit, short lease: half the lease binds
    (["100/1s", "2000/1m"], None, 0.1),  # a tenth of the *shortest* window
    (["2000/1m", "100/1s"], None, 0.1),  # ... whatever the order
    (["10/10m"], None, 60.0),  # a tenth of 10 minutes
    (["10/10m"], "100s", 50.0),  # ... unless half the lease is shorter
    (["1/1h"], "61s", 30.5),  # half the lease, even though the window would allow 6 minutes
    (["5/20s"], "4s", 2.0),  # both equal: 2 s either way (a lease is at least 1 s)
]


def test_a_scope_rate_limit_shortens_the_default_admission_ttl() -> None:
    dependency = {"rate_limits": ["100/10s"], "fairness": {"scope_rate_limits": ["2/500ms"]}}
    [policy] = parse_config({"dependencies": {"api": dependency}}, env={}).policies()
    assert policy.admission_ttl == pytest.approx(0.05)  # a tenth of the scope's window: it pays the TTL too


@pytest.mark.parametrize(("limits", "lease", "ttl"), ADMISSION_TTL_DEFAULTS)
def test_default_admission_ttl(limits: list[object], lease: str | None, ttl: float) -> None:
    dependency: dict[str, object] = {"rate_limits": limits}
    if lease is not None:
        dependency["lease_timeout"] = lease
    [policy] = parse_config({"dependencies": {"api": dependency}}, env={}).policies()
    assert policy.admission_ttl == pytest.approx(ttl)
    assert policy.lease_timeout > policy.admission_ttl


LEASE_VERSUS_TTL = [
    ("2.001s", "2s", True),  # just longer: fine
    ("2s", "2s", False),  # equal: a worker could start a job whose lease already ended
    ("2s", "2000ms", False),  # equal in other units
    ("1s", "5s", False),  # shorter
    (10, 9.5, True),  # plain seconds
]


@pytest.mark.parametrize(("lease", "ttl", "valid"), LEASE_VERSUS_TTL)
def test_lease_timeout_must_exceed_an_explicit_admission_ttl(lease: object, ttl: object, valid: bool) -> None:
    data = {"dependencies": {"api": {"lease_timeout": lease, "admission_ttl": ttl}}}
    if valid:
        [policy] = parse_config(data, env={}).policies()
        assert policy.admission_ttl == parse_duration(ttl)
    else:
        with pytest.raises(
            ConfigError, match=r"dependencies\.api: lease_timeout .* must be longer than admission_ttl"
        ):
            parse_config(data, env={})


# -- environment overrides ----------------------------------------------------

FILE_URLS = 'amqp_url = "amqp://file/"\ndatabase_url = "postgresql://file/db"\n[dependencies.api]\n'

ENV_OVERRIDES = [
    # (env, expected amqp_url, expected database_url)
    ({}, "amqp://file/", "postgresql://file/db"),  # no variables: the file wins
    ({"JANUS_AMQP_URL": "amqp://env/"}, "amqp://env/", "postgresql://file/db"),  # AMQP only
    ({"JANUS_DATABASE_URL": "postgresql://env/db"}, "amqp://file/", "postgresql://env/db"),  # DB only
    (
        {"JANUS_AMQP_URL": "amqp://env/", "JANUS_DATABASE_URL": "postgresql://env/db"},
        "amqp://env/",
        "postgresql://env/db",
    ),  # both
    ({"JANUS_AMQP_URL": ""}, "amqp://file/", "postgresql://file/db"),  # empty means unset
    ({"AMQP_URL": "amqp://env/", "janus_amqp_url": "amqp://env/"}, "amqp://file/", "postgresql://file/db"),
    # ^ only the exact JANUS_ names count
]


@pytest.mark.parametrize(("env", "amqp", "database"), ENV_OVERRIDES)
def test_environment_overrides_the_file_urls(
    tmp_path: Path, env: dict[str, str], amqp: str, database: str
) -> None:
    config = load_config(write(tmp_path, FILE_URLS), env=env)
    assert (config.amqp_url, config.database_url) == (amqp, database)


def test_environment_fills_urls_the_file_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[dependencies.api]\n"), env={"JANUS_AMQP_URL": "amqp://env/"})
    assert config.amqp_url == "amqp://env/"
    assert config.database_url == DEFAULT_DATABASE_URL


def test_explicit_env_ignores_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JANUS_AMQP_URL", "amqp://process/")
    path = write(tmp_path, FILE_URLS)
    assert load_config(path, env={}).amqp_url == "amqp://file/"
    # and without `env=`, the process environment is the source
    assert load_config(path).amqp_url == "amqp://process/"


# -- every invalid file, with the exact complaint -----------------------------

ERROR_CASES = [
    # (file in config_cases/, key path the message names or None, the problem it states)
    ("unknown_top_level_key.toml", "max_payload", "unknown key"),  # typo at the top
    ("unknown_dependency_key.toml", "dependencies.api.concurency", "unknown key"),  # typo in a dependency
    ("unknown_retry_key.toml", "dependencies.api.retry.max_attempt", "unknown key"),  # typo in retry
    ("missing_dependencies.toml", "dependencies", "required key is missing"),  # no dependencies table
    ("empty_dependencies.toml", "dependencies", "at least 1 item"),  # an empty one
    ("dependency_not_a_table.toml", "dependencies.api", "valid dictionary"),  # api = 5
    ("bad_duration.toml", "dependencies.api.lease_timeout", "invalid duration '30 seconds'"),  # prose
    ("zero_duration.toml", "dependencies.api.admission_ttl", "duration must be positive"),  # "0s"
    ("negative_duration.toml", "dependencies.api.retry.base_delay", "duration must be positive"),  # -1
    ("duration_wrong_type.toml", "dependencies.api.lease_timeout", "a duration is a number"),  # true
    ("bad_rate_limit.toml", "dependencies.api.rate_limits.0", "invalid rate limit '100 per second'"),  # prose
    ("adaptive_nothing_to_adapt.toml", "dependencies.api.adaptive", "need max_rate, max_concurrency"),
    ("adaptive_min_above_max.toml", "dependencies.api.adaptive", "min_rate (20/1s) must be at most max_rate"),
    ("adaptive_rate_not_a_rate.toml", "dependencies.api.adaptive.max_rate", "a rate limit is a string"),
    ("adaptive_decrease_one.toml", "dependencies.api.adaptive.decrease", "less than 1"),
    ("rate_limit_zero_count.toml", "dependencies.api.rate_limits.1", "COUNT must be at least 1"),  # 2nd entry
    ("rate_limit_bad_window.toml", "dependencies.api.rate_limits.0", "invalid duration '1w'"),  # weeks
    ("rate_limits_not_a_list.toml", "dependencies.api.rate_limits", "valid list"),  # a bare string
    ("bad_results_limit_zero.toml", "bad_results_limit", "COUNT must be at least 1"),  # holds for ever
    ("max_message_size_below_payload.toml", "max_message_size", "must be at least 139264 bytes"),  # no room
    ("huge_max_message_size.toml", "max_message_size", "less than or equal to 536870912"),  # 1 GiB
    ("zero_concurrency.toml", "dependencies.api.concurrency", "greater than or equal to 1"),  # 0
    ("fractional_concurrency.toml", "dependencies.api.concurrency", "valid integer"),  # 2.5
    ("jitter_above_one.toml", "dependencies.api.retry.jitter", "less than or equal to 1"),  # 1.5
    ("negative_jitter.toml", "dependencies.api.retry.jitter", "greater than or equal to 0"),  # -0.1
    ("zero_max_attempts.toml", "dependencies.api.retry.max_attempts", "greater than or equal to 1"),  # 0
    ("max_delay_below_base_delay.toml", "dependencies.api.retry", "max_delay must be at least base_delay"),
    (
        "lease_equal_to_ttl.toml",
        "dependencies.api",
        "lease_timeout (2s) must be longer than admission_ttl (2s)",
    ),
    (
        "lease_shorter_than_ttl.toml",
        "dependencies.api",
        "lease_timeout (1s) must be longer than admission_ttl (5s)",
    ),
    ("invalid_dependency_name.toml", "dependencies", "invalid dependency name 'pay ments'"),  # a space
    (
        "dependency_name_starts_with_dash.toml",
        "dependencies",
        "invalid dependency name '-api'",
    ),  # leading '-'
    ("zero_max_payload_bytes.toml", "max_payload_bytes", "greater than or equal to 1"),  # 0
    ("amqp_url_not_a_string.toml", "amqp_url", "valid string"),  # a port number
    ("not_toml.toml", None, "invalid TOML"),  # not TOML at all
    ("dependency_name_trailing_newline.toml", "dependencies", "invalid dependency name 'api\\n'"),  # "api\n"
    ("boolean_concurrency.toml", "dependencies.api.concurrency", "valid integer"),  # true
    ("zero_retry_budget.toml", "dependencies.api.retry.budget", "greater than 0"),  # no retry could ever run
    ("retry_budget_above_one.toml", "dependencies.api.retry.budget", "less than or equal to 1"),  # 1.5
    ("zero_min_retries.toml", "dependencies.api.retry.min_retries", "greater than or equal to 1"),  # 0
    ("bad_max_retry_after.toml", "dependencies.api.retry.max_retry_after", "invalid duration 'forever'"),
    ("unknown_circuit_key.toml", "dependencies.api.circuit.failure_treshold", "unknown key"),  # typo
    ("zero_failure_threshold.toml", "dependencies.api.circuit.failure_threshold", "greater than 0"),  # 0
    ("fractional_min_outcomes.toml", "dependencies.api.circuit.min_outcomes", "valid integer"),  # 2.5
    (
        "max_open_for_below_open_for.toml",
        "dependencies.api.circuit",
        "max_open_for must be at least open_for",
    ),  # 10m > 5m
    ("zero_half_open_probes.toml", "dependencies.api.circuit.half_open_probes", "greater than or equal to 1"),
    ("circuit_enabled_not_a_boolean.toml", "dependencies.api.circuit.enabled", "valid boolean"),  # "no"
    ("unknown_outcome.toml", "dependencies.api.outcomes.1", "'succeeded' or 'dead'"),  # "failed"
    ("zero_circuit_window.toml", "dependencies.api.circuit.window", "duration must be positive"),  # 0
    ("zero_weight.toml", "dependencies.api.fairness.weights.gold", "must be positive"),  # 0
    ("weight_not_a_number.toml", "dependencies.api.fairness.default_weight", "positive number"),  # "heavy"
    ("huge_weight.toml", "dependencies.api.fairness.weights.gold", "between 0.001 and 1000000"),  # 1e9
    (
        "zero_scope_concurrency.toml",
        "dependencies.api.fairness.scope_concurrency",
        "greater than or equal to 1",
    ),
    ("bad_scope_rate_limit.toml", "dependencies.api.fairness.scope_rate_limits.0", "invalid duration '1w'"),
    ("unknown_fairness_key.toml", "dependencies.api.fairness.weight", "unknown key"),  # typo of weights
    ("not_utf8.toml", None, "not UTF-8 (byte 23)"),  # Latin-1 é: was a UnicodeDecodeError traceback
    ("nested_too_deep.toml", None, "nested too deeply"),  # 5,000 nested arrays: was a RecursionError
    ("amqp_url_bad_port.toml", "amqp_url", "invalid port 'abc'"),  # was a ValueError when connecting
    ("database_url_bad_port.toml", "database_url", "invalid port '99999'"),  # out of range
    ("rate_limit_unknown_counts.toml", "dependencies.api.rate_limits.0", "invalid counts 'calls'"),
    ("rate_limit_table_unknown_key.toml", "dependencies.api.rate_limits.1", "unknown key 'count'"),
    (
        "rate_limit_table_without_limit.toml",
        "dependencies.api.fairness.scope_rate_limits.0",
        "a rate limit table needs 'limit'",
    ),
    ("bad_results_limit_table.toml", "bad_results_limit", "a rate limit is a string"),  # no meaning to pick
    # The window cannot promise duplicates that pruning has already forgotten (1d default > 1h).
    ("dedup_window_beyond_retention.toml", "retention", "dedup_window (1d) must not exceed"),
    (
        "dependency_dedup_window_beyond_retention.toml",
        "dependencies.api.retention",
        "dead (12h) jobs",
    ),  # the override meets the global window
    ("unknown_retention_key.toml", "retention.succeded", "unknown key"),  # typo
    ("retention_below_a_second.toml", "retention.succeeded", "must be between 1s and 366d, got 500ms"),
    # Bounds (issue 20): each value beyond them passed check-config and could not work.
    ("too_many_dependencies.toml", "dependencies", "2,001 dependencies: at most 2,000 (each takes a channel"),
    ("huge_concurrency.toml", "dependencies.api.concurrency", "less than or equal to 1000000"),  # 1e38
    (
        "huge_scope_concurrency.toml",
        "dependencies.api.fairness.scope_concurrency",
        "less than or equal to 1000000",
    ),
    ("tiny_lease.toml", "dependencies.api.lease_timeout", "must be between 1s and 7d"),  # 1e-9 s
    ("huge_max_attempts.toml", "dependencies.api.retry.max_attempts", "less than or equal to 1000"),
    (
        "duration_below_a_millisecond.toml",
        "dependencies.api.retry.base_delay",
        "must be between 1ms and 7d, got 0.1ms",
    ),
    ("duration_too_long.toml", "dependencies.api.retry.max_delay", "must be between 1ms and 7d, got 1000d"),
    ("admission_ttl_too_long.toml", "dependencies.api.admission_ttl", "must be between 1ms and 1d, got 2d"),
    (
        "huge_half_open_probes.toml",
        "dependencies.api.circuit.half_open_probes",
        "less than or equal to 10000",
    ),
    (
        "rate_limit_count_too_large.toml",
        "dependencies.api.rate_limits.0",
        "invalid rate limit '100000000/1s': COUNT must be at most 10,000,000",
    ),
    (
        "rate_limit_window_too_long.toml",
        "dependencies.api.fairness.scope_rate_limits.0",
        "invalid rate limit '1/365d': the window must be between 1ms and 31d",
    ),
]


# Cases that janus/ gets wrong today: strict xfails, so a fix turns them into plain passes.
KNOWN_BUGS: dict[str, str] = {}


def test_every_case_file_has_an_expectation() -> None:
    on_disk = {path.name for path in CASES.glob("*.toml")}
    assert on_disk == {name for name, _, _ in ERROR_CASES}
    assert set(KNOWN_BUGS) <= on_disk


@pytest.mark.parametrize(
    ("name", "key_path", "problem"),
    [
        pytest.param(*case, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case[0]]))
        if case[0] in KNOWN_BUGS
        else case
        for case in ERROR_CASES
    ],
)
def test_invalid_config_names_the_key_and_the_problem(name: str, key_path: str | None, problem: str) -> None:
    path = CASES / name
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert str(path) in message  # which file
    if key_path is not None:
        # One line per error, "  <key path>: <problem>"
        assert f"\n  {key_path}: " in message, message
        line = next(line for line in message.splitlines() if line.startswith(f"  {key_path}: "))
        assert problem in line, message
    else:
        assert problem in message, message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=r"cannot read configuration .*nowhere\.toml"):
        load_config(missing, env={})


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, "[dependencies.api]\nconcurrency = 0\n[dependencies.api.retry]\njitter = 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "dependencies.api.concurrency:" in str(caught.value)
    assert "dependencies.api.retry.jitter:" in str(caught.value)


# -- the command line ---------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads JANUS_* settings; none from the developer's shell may leak in."""
    for name in list(os.environ):
        if name.upper().startswith("JANUS_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert (
        "payments-api: 100/1s, 2000/60s; concurrency 20; lease 30s; admission ttl 0.2s; up to 5 attempts"
        in out
    )
    assert "email: 10/1s; concurrency 5; lease 300s; admission ttl 0.1s; up to 5 attempts" in out
    # What each limit means, and the span Janus counts its admissions over.
    assert (
        "  rate 10/1s counts starts: at most 10 calls start in any 1s; admissions counted over 1.1s\n" in out
    )
    assert (
        "  retries <= 20% of admissions per 10s (at least 10); retry_after up to 600s; "
        "circuit opens at 50% failed of >= 20 outcomes in 30s, for 10s..300s, 3 probes"
    ) in out
    # Retention, on by default: what is kept, and so how long a repeated job_id is a duplicate.
    assert (
        "  keeps succeeded jobs 1d, dead jobs 14d; a job_id repeated within 1d of its job finishing is a duplicate"
    ) in out
    assert "  after an outage: ramp from 10% of capacity over 30s\n" in out
    assert out.rstrip().endswith("configuration is valid")
    assert "janus:" not in err


@pytest.mark.usefixtures("clean_env")
def test_check_config_says_what_each_rate_limit_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """
[dependencies.api]
rate_limits = ["20/1s", { limit = "1000/1m", counts = "admissions" }]
admission_ttl = "100ms"

[dependencies.api.fairness]
scope_rate_limits = ["5/1s"]
"""
    assert main(["check-config", "--config", str(write(tmp_path, text))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:4] == [
        "  rate 20/1s counts starts: at most 20 calls start in any 1s; admissions counted over 1.1s",
        "  rate 1000/60s counts admissions: at most 1000 admissions in any 60s (starts: in any 59.9s); "
        "admissions counted over 60s",
        "  scope rate 5/1s counts starts: at most 5 calls start per scope in any 1s; admissions counted over 1.1s",
    ]


@pytest.mark.usefixtures("clean_env")
def test_check_config_rejects_an_invalid_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = CASES / "jitter_above_one.toml"
    assert main(["check-config", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "configuration is valid" not in out
    assert err.startswith("janus: invalid configuration in")
    assert "dependencies.api.retry.jitter: Input should be less than or equal to 1" in err


@pytest.mark.usefixtures("clean_env")
def test_check_config_rejects_a_file_that_is_not_toml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(CASES / "not_toml.toml")]) == 2
    assert "invalid TOML" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_check_config_without_a_path_says_how_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 2
    assert "no configuration: pass --config PATH or set JANUS_CONFIG" in capsys.readouterr().err


def test_check_config_takes_the_path_from_janus_config(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JANUS_CONFIG", str(EXAMPLE))
    assert main(["check-config"]) == 0
    assert "configuration is valid" in capsys.readouterr().out


# -- the recovery ramp ----------------------------------------------------------

RECOVERY_CASES = [
    ("", RecoveryPolicy(ramp=30.0, start=0.1)),  # on by default: 30 s from 10 %
    ('ramp = "0s"', RecoveryPolicy(ramp=0.0, start=0.1)),  # 0 turns it off
    ("ramp = 0", RecoveryPolicy(ramp=0.0, start=0.1)),  # so does a bare zero
    ('ramp = "2m"\nstart = 0.25', RecoveryPolicy(ramp=120.0, start=0.25)),  # both set
    ("start = 1.0", RecoveryPolicy(ramp=30.0, start=1.0)),  # from full share: no ramp of the rate
]


@pytest.mark.parametrize(("body", "expected"), RECOVERY_CASES)
def test_recovery_keys(tmp_path: Path, body: str, expected: RecoveryPolicy) -> None:
    text = f"[dependencies.api]\n[dependencies.api.recovery]\n{body}\n"
    [policy] = load_config(write(tmp_path, text), env={}).policies()
    assert policy.recovery == expected


BAD_RECOVERY = [
    ("start = 0", "greater than 0"),  # a ramp from nothing would admit nothing
    ("start = 1.5", "less than or equal to 1"),  # more than the capacity
    ('ramp = "-1s"', "invalid duration"),  # no sign in a duration string
    ('ramp = "2d"', "must be between 0s and 1d"),  # a ramp of days is a typo
    ('rampe = "10s"', "unknown key"),  # typo
]


@pytest.mark.parametrize(("body", "message"), BAD_RECOVERY)
def test_bad_recovery_keys_are_named(tmp_path: Path, body: str, message: str) -> None:
    text = f"[dependencies.api]\n[dependencies.api.recovery]\n{body}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert "dependencies.api.recovery" in str(caught.value)
    assert message in str(caught.value)
