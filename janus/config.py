"""Configuration: process settings from the environment, domain policy from a TOML file.

The file is validated strictly (unknown keys are errors, so typos cannot pass
silently) and turned into the core's plain `DependencyPolicy` values. Every
error names the key and the problem. The parts live in config_bounds (value bounds and
validated types), config_policy (the models), config_settings (JANUS_* process settings)
and config_loading (TOML and the environment); every name is importable from here.
"""

from __future__ import annotations

from janus.adaptive_config import AdaptiveConfig as AdaptiveConfig
from janus.config_bounds import DAY as DAY
from janus.config_bounds import DEPENDENCY_NAME as DEPENDENCY_NAME
from janus.config_bounds import LARGEST_RESULT_BYTES as LARGEST_RESULT_BYTES
from janus.config_bounds import MAX_ATTEMPTS as MAX_ATTEMPTS
from janus.config_bounds import MAX_CONCURRENCY as MAX_CONCURRENCY
from janus.config_bounds import MAX_COUNT as MAX_COUNT
from janus.config_bounds import MAX_DELAY as MAX_DELAY
from janus.config_bounds import MAX_DEPENDENCIES as MAX_DEPENDENCIES
from janus.config_bounds import MAX_MESSAGE_SIZE_CEILING as MAX_MESSAGE_SIZE_CEILING
from janus.config_bounds import MAX_PROBES as MAX_PROBES
from janus.config_bounds import MAX_RATE_COUNT as MAX_RATE_COUNT
from janus.config_bounds import MAX_RETENTION as MAX_RETENTION
from janus.config_bounds import MAX_TTL as MAX_TTL
from janus.config_bounds import MAX_UNIT_COUNT as MAX_UNIT_COUNT
from janus.config_bounds import MAX_WINDOW as MAX_WINDOW
from janus.config_bounds import MESSAGE_ENVELOPE_BYTES as MESSAGE_ENVELOPE_BYTES
from janus.config_bounds import MIN_DURATION as MIN_DURATION
from janus.config_bounds import SECOND as SECOND
from janus.config_bounds import Attempts as Attempts
from janus.config_bounds import Concurrency as Concurrency
from janus.config_bounds import Count as Count
from janus.config_bounds import Duration as Duration
from janus.config_bounds import JobLimitEntry as JobLimitEntry
from janus.config_bounds import LeaseDuration as LeaseDuration
from janus.config_bounds import LimitEntry as LimitEntry
from janus.config_bounds import Probes as Probes
from janus.config_bounds import RampDuration as RampDuration
from janus.config_bounds import RateLimitSpec as RateLimitSpec
from janus.config_bounds import RetentionDuration as RetentionDuration
from janus.config_bounds import TtlDuration as TtlDuration
from janus.config_bounds import WindowDuration as WindowDuration
from janus.config_bounds import _limit_bounds as _limit_bounds
from janus.config_bounds import format_duration as format_duration
from janus.config_limits import parse_duration as parse_duration
from janus.config_limits import parse_limit_entry as parse_limit_entry
from janus.config_limits import parse_rate_limit as parse_rate_limit
from janus.config_loading import load_config as load_config
from janus.config_loading import parse_config as parse_config
from janus.config_policy import DEFAULT_AMQP_URL as DEFAULT_AMQP_URL
from janus.config_policy import DEFAULT_DATABASE_URL as DEFAULT_DATABASE_URL
from janus.config_policy import OUTCOMES as OUTCOMES
from janus.config_policy import CircuitConfig as CircuitConfig
from janus.config_policy import DependencyConfig as DependencyConfig
from janus.config_policy import DependencyRetentionConfig as DependencyRetentionConfig
from janus.config_policy import FairnessConfig as FairnessConfig
from janus.config_policy import JanusConfig as JanusConfig
from janus.config_policy import Outcome as Outcome
from janus.config_policy import RecoveryConfig as RecoveryConfig
from janus.config_policy import RetentionConfig as RetentionConfig
from janus.config_policy import RetryConfig as RetryConfig
from janus.config_policy import ShadowConfig as ShadowConfig
from janus.config_policy import Weight as Weight
from janus.config_policy import describe_rate_limits as describe_rate_limits
from janus.config_settings import Settings as Settings
from janus.config_settings import read_secret_file as read_secret_file
from janus.config_settings import secret_from_env as secret_from_env
from janus.core.policy import CircuitPolicy as CircuitPolicy
from janus.core.policy import DependencyPolicy as DependencyPolicy
from janus.core.policy import FairnessPolicy as FairnessPolicy
from janus.core.policy import RateCounting as RateCounting
from janus.core.policy import RateLimit as RateLimit
from janus.core.policy import RecoveryPolicy as RecoveryPolicy
from janus.core.policy import RetryPolicy as RetryPolicy
from janus.core.policy import ShadowLimits as ShadowLimits
from janus.core.policy import default_admission_ttl as default_admission_ttl
from janus.core.retention import BatchSizing as BatchSizing
from janus.core.retention import Retention as Retention
from janus.core.retention import RetentionPolicy as RetentionPolicy
from janus.errors import ConfigError as ConfigError
from janus.scale_out_config import ScaleOutConfig as ScaleOutConfig
from janus.urls import check_port as check_port
from janus.urls import split_urls as split_urls
