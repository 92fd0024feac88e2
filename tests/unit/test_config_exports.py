"""janus.config is split into parts (config_bounds, config_policy, config_settings,
config_loading); every name it exported before the split is still importable from it."""

from __future__ import annotations

import janus.config

# What janus.config exported before the split, less the libraries it happened to import
# (pydantic, typing, os, re, ...).
EXPORTED = [
    "AdaptiveConfig",
    "Attempts",
    "BatchSizing",
    "CircuitConfig",
    "CircuitPolicy",
    "Concurrency",
    "ConfigError",
    "Count",
    "DAY",
    "DEFAULT_AMQP_URL",
    "DEFAULT_DATABASE_URL",
    "DEPENDENCY_NAME",
    "DependencyConfig",
    "DependencyPolicy",
    "DependencyRetentionConfig",
    "Duration",
    "FairnessConfig",
    "FairnessPolicy",
    "JanusConfig",
    "JobLimitEntry",
    "LARGEST_RESULT_BYTES",
    "LeaseDuration",
    "LimitEntry",
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY",
    "MAX_COUNT",
    "MAX_DELAY",
    "MAX_DEPENDENCIES",
    "MAX_MESSAGE_SIZE_CEILING",
    "MAX_PROBES",
    "MAX_RATE_COUNT",
    "MAX_RETENTION",
    "MAX_TTL",
    "MAX_UNIT_COUNT",
    "MAX_WINDOW",
    "MESSAGE_ENVELOPE_BYTES",
    "MIN_DURATION",
    "OUTCOMES",
    "Outcome",
    "Probes",
    "RampDuration",
    "RateCounting",
    "RateLimit",
    "RateLimitSpec",
    "RecoveryConfig",
    "RecoveryPolicy",
    "Retention",
    "RetentionConfig",
    "RetentionDuration",
    "RetentionPolicy",
    "RetryConfig",
    "RetryPolicy",
    "SECOND",
    "ScaleOutConfig",
    "Settings",
    "ShadowConfig",
    "ShadowLimits",
    "TtlDuration",
    "Weight",
    "WindowDuration",
    "check_port",
    "default_admission_ttl",
    "describe_rate_limits",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_limit_entry",
    "parse_rate_limit",
    "read_secret_file",
    "secret_from_env",
    "split_urls",
    "_limit_bounds",  # janus.adaptive_config imports it from here
]


def test_every_name_janus_config_exported_is_still_there() -> None:
    missing = [name for name in EXPORTED if not hasattr(janus.config, name)]
    assert missing == []


def test_the_models_are_the_parts_own() -> None:
    # A re-export, not a copy: validating through either name is the same model.
    from janus.config_policy import JanusConfig
    from janus.config_settings import Settings

    assert janus.config.JanusConfig is JanusConfig
    assert janus.config.Settings is Settings
