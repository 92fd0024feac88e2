"""The policy of record: a policy file as PostgreSQL keeps it (one version each), compared and diffed.

A version is the file's content as JSON, without the connection settings (`amqp_url`,
`database_url`: they stay per process, and a URL may carry a password). `janus apply` stores
one; the leader runs the newest (`janus run`'s file only seeds version 1 on an empty database).
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

from janus.config import JanusConfig, load_config, parse_config
from janus.errors import ConfigError

# Per process, never in a version: the connections and whether the process is a member.
CONNECTION_KEYS = frozenset({"amqp_url", "database_url", "scale_out"})


def record_of_file(path: str | os.PathLike[str]) -> tuple[JanusConfig, str]:
    """The file validated (the errors `janus check-config` gives) and the version it makes."""
    config = load_config(path)  # raises ConfigError for a bad file, as check-config does
    return config, record_of(config)


def record_of(config: JanusConfig) -> str:
    """A configuration as a version stores it: every key, defaults included (so that a diff says
    what changed whatever a file left out), in a form the file's parser reads back."""
    return json.dumps(_writable(config.model_dump(mode="json", exclude=set(CONNECTION_KEYS))), sort_keys=True)


def _writable(value: Any) -> Any:
    if isinstance(value, dict):
        if value.keys() == {"count", "window", "counts", "units"}:  # a RateLimit
            units = " units" if value["units"] else ""
            limit = f"{value['count']}{units}/{format(Decimal(repr(value['window'])).normalize(), 'f')}s"
            return limit if value["counts"] == "starts" else {"limit": limit, "counts": value["counts"]}
        return {key: _writable(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_writable(inner) for inner in value]
    return value


def config_of_record(record: str, version: int, process: JanusConfig) -> JanusConfig:
    """A stored version as the configuration this process runs: its policy, the process's connections."""
    data = json.loads(record)
    data.update(amqp_url=process.amqp_url, database_url=process.database_url)
    data["scale_out"] = process.scale_out.model_dump()
    try:
        return parse_config(data, f"policy version {version}", env={})
    except ConfigError as exc:  # stored by a Janus whose checks differed: say which version
        raise ConfigError(f"the stored {exc}") from None


def same_policy(a: JanusConfig, b: JanusConfig) -> bool:
    """Do two configurations set the same policy (whatever their connection settings)?"""
    return a.model_dump(exclude=set(CONNECTION_KEYS)) == b.model_dump(exclude=set(CONNECTION_KEYS))


def _flatten(value: object, prefix: str, into: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), into)
    else:
        into[prefix] = json.dumps(value, sort_keys=True)


def diff(before: str | None, after: str) -> str:
    """What a version changes, one line per key as written in the files: `+ key: value` (added),
    `- key: value` (removed), `~ key: old -> new`; "no change" if none."""
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    if before is not None:
        _flatten(json.loads(before), "", old)
    _flatten(json.loads(after), "", new)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            lines.append(f"+ {key}: {new[key]}")
        elif key not in new:
            lines.append(f"- {key}: {old[key]}")
        elif old[key] != new[key]:
            lines.append(f"~ {key}: {old[key]} -> {new[key]}")
    return "\n".join(lines) if lines else "no change"
