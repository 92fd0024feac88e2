"""Least-privilege RabbitMQ definitions: the vhost, the users, their permissions, the shared topology.

`rabbitmqctl import_definitions` (RabbitMQ 3.10, no management plugin needed) loads
what `render` returns. Built from `janus.broker.topology`, so the names cannot drift;
`deploy/rabbitmq/definitions.json` is its output for the dependencies of
config/janus.toml (no passwords), and a test keeps the two equal. docs/security.md
explains every permission.

    python -m janus.broker.definitions --vhost janus --dependency payments-api \\
        --password-file janus=/run/secrets/amqp-janus --password-file producer=... \\
        --password-file worker-payments-api=... > /tmp/definitions.json

docker-compose.yml uses the other way: the dependencies from Janus's config, and each role's
password from a file named after it in one directory, created (random) where missing
together with Janus's own AMQP URL (`make compose-secrets`):

    python -m janus.broker.definitions --config config/janus.toml \\
        --password-dir deploy/secrets --create-passwords --output definitions.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aio_pika import ExchangeType

from janus.broker import intake_upgrade, topology

ROLES = ("janus", "producer", "worker", "monitoring", "subscriber")
RENDERED_FOR = "3.10.8"  # `rabbit_version` of the document unless --rabbitmq-version says otherwise
# RabbitMQ checks the CC and BCC routing keys of a publish against the user's topic permissions
# only from 4.0.3 on (rabbitmq-server #12553, in the 4.0.x series; no open-source 3.13.x release
# has it). Before, a worker-<dependency> user can route a result into another dependency's
# results queue with a CC header: Janus sets it aside (`wrong_routing_key`), but a flood of them
# still holds that queue back. So worker users are rendered for older brokers only on request.
CC_CHECKED_SINCE = (4, 0, 3)
NOTHING = "^$"  # a permission regex that matches no resource name
WORKER_ROLE_PREFIX = "worker-"  # + dependency: a worker of that dependency only


def _names(*names: str) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


_READY_QUEUES = re.escape(topology.ready_queue("")) + ".+"
_RESULTS_QUEUES = re.escape(topology.results_queue("")) + ".+"
_SUBSCRIBER_QUEUES = re.escape(topology.SUBSCRIBER_QUEUE_PREFIX) + ".+"
# Member mode's queue per dependency (janus.q.intake.<dependency>); not janus.q.intake, nor
# janus.q.intake-unrouted, which the definitions declare.
_INTAKE_QUEUES = re.escape(topology.intake_queue("")) + ".+"

# (configure, write, read) per role. RabbitMQ checks: declare/delete -> configure on the
# entity; publish -> write on the exchange ("amq.default" for the default exchange);
# consume/get/purge -> read on the queue; bind -> write on the queue and read on the
# exchange; a queue declared with a dead-letter exchange -> read on the queue and write on
# that exchange. Passive declares need no permission.
PERMISSIONS: Mapping[str, tuple[str, str, str]] = {
    "janus": (
        # declares the ready, results and (member mode) intake queue of each configured dependency
        f"^({_READY_QUEUES}|{_RESULTS_QUEUES}|{_INTAKE_QUEUES})$",
        # publishes admissions and outcomes; binds ready, results and intake queues; names
        # janus.returned as the ready queues' dead-letter exchange; sets bad input aside through
        # the default exchange
        f"^({re.escape(topology.READY_EXCHANGE)}|{_READY_QUEUES}|{_RESULTS_QUEUES}|{_INTAKE_QUEUES}"
        f"|{re.escape(topology.RETURNED_EXCHANGE)}|{re.escape(topology.OUTCOMES_EXCHANGE)}|amq\\.default)$",
        # consumes its own queues; binds ready queues to janus.ready, results queues to
        # janus.results and intake queues to janus.intake.partitioned; dead-lettering ready queues
        f"^({re.escape(topology.PREFIX)}\\.q\\..+|{re.escape(topology.READY_EXCHANGE)}"
        f"|{re.escape(topology.RESULTS_EXCHANGE)}|{re.escape(intake_upgrade.PARTITIONED_EXCHANGE)}"
        f"|{_READY_QUEUES})$",
    ),
    "producer": (NOTHING, _names(topology.INTAKE_EXCHANGE), NOTHING),
    # Any dependency's admissions and results: for a deployment where one team runs every
    # worker. Give teams worker-<dependency> users instead (dependency_permissions).
    "worker": (NOTHING, _names(topology.RESULTS_EXCHANGE), f"^{_READY_QUEUES}$"),
    # Over AMQP, reading means consuming (destructive): monitoring gets no AMQP rights at all.
    # Passive declares (queue depths) need none; the management/Prometheus plugins use the tag.
    "monitoring": (NOTHING, NOTHING, NOTHING),
    # Whoever wants jobs' outcomes: its own janus.sub.* queues, bound to janus.outcomes (a bind
    # takes write on the queue and read on the exchange), and consumed; nothing of Janus's.
    "subscriber": (
        f"^{_SUBSCRIBER_QUEUES}$",
        f"^{_SUBSCRIBER_QUEUES}$",
        f"^({re.escape(topology.OUTCOMES_EXCHANGE)}|{_SUBSCRIBER_QUEUES})$",
    ),
}
TAGS: Mapping[str, list[str]] = {
    "janus": [],
    "producer": [],
    "worker": [],
    "monitoring": ["monitoring"],
    "subscriber": [],
}


def worker_role(dependency: str) -> str:
    return f"{WORKER_ROLE_PREFIX}{dependency}"


def dependency_permissions(dependency: str) -> tuple[str, str, str]:
    """A worker of one dependency: its ready queue only, and janus.results (with the routing
    key restricted to its dependency by topic_permissions, below)."""
    return (NOTHING, _names(topology.RESULTS_EXCHANGE), _names(topology.ready_queue(dependency)))


def dependency_topic_write(dependency: str) -> str:
    """Routing keys a worker of `dependency` may publish to janus.results with: its own name.
    RabbitMQ checks it on every publish to the topic exchange (topic permissions); a user with
    no topic permission on an exchange may use any key, hence the generic `worker` is trusted
    with every dependency."""
    return _names(dependency)


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def roles(dependencies: Sequence[str] = ()) -> list[str]:
    return [*ROLES, *(worker_role(dependency) for dependency in dependencies)]


def render(
    *,
    vhost: str = "janus",
    dependencies: Sequence[str] = (),
    users: Mapping[str, str] | None = None,
    passwords: Mapping[str, str] | None = None,
    rabbit_version: str = RENDERED_FOR,
    queue_type: topology.QueueType = topology.DEFAULT_QUEUE_TYPE,
    scale_out: bool = False,
) -> dict[str, Any]:
    """The definitions document. `users` maps a role to its user name (default: the role);
    a role without a password gets an empty hash: it cannot log in until one is set. Each of
    `dependencies` gets a role worker-<dependency> of its own. The shared queues are of
    `queue_type`, which must be Janus's own (its policy's queue_type). `scale_out`: member mode's
    intake (janus/broker/intake_upgrade.py) in place of the one queue janus.q.intake."""
    all_roles = roles(dependencies)
    users = {role: (users or {}).get(role, role) for role in all_roles}
    passwords = passwords or {}
    permissions = {
        **PERMISSIONS,
        **{worker_role(dependency): dependency_permissions(dependency) for dependency in dependencies},
    }
    exchanges, queues = _shared_topology(scale_out)
    return {
        "rabbit_version": rabbit_version,
        "vhosts": [{"name": vhost}],
        "users": [
            {
                "name": users[role],
                "password_hash": password_hash(passwords[role]) if role in passwords else "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": TAGS.get(role, []),
            }
            for role in all_roles
        ],
        "permissions": [
            {"user": users[role], "vhost": vhost, "configure": c, "write": w, "read": r}
            for role, (c, w, r) in permissions.items()
        ],
        "topic_permissions": [
            {
                "user": users[worker_role(dependency)],
                "vhost": vhost,
                "exchange": topology.RESULTS_EXCHANGE,
                "write": dependency_topic_write(dependency),
                "read": NOTHING,
            }
            for dependency in dependencies
        ],
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": vhost,
                "type": exchange.type.value,
                "durable": True,
                "auto_delete": False,
                "internal": internal,
                "arguments": dict(exchange.arguments or {}),
            }
            for exchange, internal in exchanges
        ],
        "queues": [
            {
                "name": queue.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": dict(topology.queue_arguments(queue_type)),
            }
            for queue in queues
        ],
        "bindings": [
            {
                "source": queue.bound_to,
                "vhost": vhost,
                "destination": queue.name,
                "destination_type": "queue",
                "routing_key": queue.routing_key,
                "arguments": {},
            }
            for queue in queues
            if queue.bound_to is not None
        ]
        + (
            [
                {
                    "source": topology.INTAKE_EXCHANGE,
                    "vhost": vhost,
                    "destination": intake_upgrade.PARTITIONED_EXCHANGE,
                    "destination_type": "exchange",
                    "routing_key": "#",
                    "arguments": {},
                }
            ]
            if scale_out
            else []
        ),
    }


def _shared_topology(
    scale_out: bool,
) -> tuple[list[tuple[topology.ExchangeSpec, bool]], list[topology.QueueSpec]]:
    """(exchange, internal) and queues the definitions declare: member mode's intake path in
    place of janus.q.intake (bound to janus.intake with "#") when `scale_out`."""
    exchanges = [(exchange, False) for exchange in topology.SHARED_EXCHANGES]
    queues = list(topology.SHARED_QUEUES)
    if scale_out:
        exchanges += [
            (
                topology.ExchangeSpec(name=intake_upgrade.INTAKE_UNROUTED_EXCHANGE, type=ExchangeType.FANOUT),
                True,
            ),
            (
                topology.ExchangeSpec(
                    name=intake_upgrade.PARTITIONED_EXCHANGE,
                    type=ExchangeType.TOPIC,
                    arguments=intake_upgrade.PARTITIONED_ARGUMENTS,
                ),
                True,
            ),
        ]
        queues = [queue for queue in queues if queue.name != topology.INTAKE_QUEUE]
        queues.append(
            topology.QueueSpec(
                name=intake_upgrade.INTAKE_UNROUTED_QUEUE, bound_to=intake_upgrade.INTAKE_UNROUTED_EXCHANGE
            )
        )
    return exchanges, queues


JANUS_URL_FILE = "janus-amqp-url"  # in a password directory: Janus's own URL, for JANUS_AMQP_URL_FILE
# docker-compose's `cluster` profile: Janus's URLs of the three nodes, and the nodes' shared Erlang cookie.
JANUS_CLUSTER_URL_FILE = "janus-amqp-cluster-url"
ERLANG_COOKIE_FILE = "erlang-cookie"
CLUSTER_HOSTS = "rabbit-1:5672,rabbit-2:5672,rabbit-3:5672"


def create_passwords(
    directory: Path,
    all_roles: Sequence[str],
    *,
    host: str,
    vhost: str,
    janus_user: str = "janus",
    cluster_hosts: str = CLUSTER_HOSTS,
) -> list[Path]:
    """A random password in `directory`/ROLE for each role that has none, and Janus's AMQP URL
    (its user, its password, `host`, `vhost`) in `directory`/janus-amqp-url; the files created.

    Readable by all (0644): a container runs as a user of its own, not the host's. Fine for a
    development machine; in production, give each secret to its one reader (Docker or
    Kubernetes secrets) instead."""
    directory.mkdir(parents=True, exist_ok=True)
    created = []
    for role in all_roles:
        path = directory / role
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")  # URL-safe: no quoting
            path.chmod(0o644)
            created.append(path)
    cookie = directory / ERLANG_COOKIE_FILE
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(20).upper(), encoding="utf-8")
        cookie.chmod(0o644)
        created.append(cookie)
    janus_password = (directory / "janus").read_text(encoding="utf-8").strip()

    def janus_url(one: str) -> str:
        return f"amqp://{quote(janus_user, safe='')}:{janus_password}@{one}/{quote(vhost, safe='')}"

    for name, text in (
        (JANUS_URL_FILE, janus_url(host) + "\n"),
        (JANUS_CLUSTER_URL_FILE, ",".join(map(janus_url, cluster_hosts.split(","))) + "\n"),
    ):
        url = directory / name
        if not url.exists() or url.read_text(encoding="utf-8") != text:
            url.write_text(text, encoding="utf-8")
            url.chmod(0o644)
            created.append(url)
    return created


def _pairs(values: Sequence[str], what: str, known: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        role, sep, rest = value.partition("=")
        if not sep or role not in known:
            raise SystemExit(
                f"--{what} expects ROLE=VALUE with ROLE one of {', '.join(known)}; got {value!r}"
            )
        pairs[role] = rest
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Print Janus's RabbitMQ definitions (JSON) on stdout.")
    parser.add_argument("--vhost", default="janus")
    parser.add_argument(
        "--dependency",
        action="append",
        default=[],
        help="a dependency whose workers get a user of their own, worker-DEPENDENCY (repeatable)",
    )
    parser.add_argument("--user", action="append", default=[], help="ROLE=NAME (default: the role's name)")
    parser.add_argument(
        "--password-file", action="append", default=[], help="ROLE=PATH: the password, read from a file"
    )
    parser.add_argument(
        "--config", type=Path, help="Janus's config: each of its dependencies gets a worker user"
    )
    parser.add_argument(
        "--password-dir",
        type=Path,
        help="the password of each role read from the file DIR/ROLE, where there is one",
    )
    parser.add_argument(
        "--create-passwords",
        action="store_true",
        help="first write a random password for every role with none in --password-dir, and DIR/"
        f"{JANUS_URL_FILE} (Janus's AMQP URL); print the definitions only with --output",
    )
    parser.add_argument("--janus-host", default="rabbitmq:5672", help=f"HOST:PORT in DIR/{JANUS_URL_FILE}")
    parser.add_argument(
        "--janus-cluster-hosts",
        default=CLUSTER_HOSTS,
        help=f"HOST:PORT,... of a cluster's nodes, in DIR/{JANUS_CLUSTER_URL_FILE}",
    )
    parser.add_argument("--output", type=Path, help="write the definitions there (default: standard output)")
    parser.add_argument(
        "--rabbitmq-version",
        help="the RabbitMQ the definitions are for (X.Y.Z); worker-DEPENDENCY users need "
        f"{_dotted(CC_CHECKED_SINCE)} or later, whose topic permissions check CC and BCC routing keys",
    )
    parser.add_argument(
        "--queue-type",
        choices=topology.QUEUE_TYPES,
        help="the type of the shared queues: Janus's queue_type (default: --config's, else "
        f"{topology.DEFAULT_QUEUE_TYPE})",
    )
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="member mode's intake (one queue per dependency, an alternate exchange for unknown routing "
        f"keys) in place of {topology.INTAKE_QUEUE} (docs/scale-out.md)",
    )
    parser.add_argument(
        "--allow-unchecked-cc",
        action="store_true",
        help="render worker-DEPENDENCY users for an older or unnamed RabbitMQ all the same (warns)",
    )
    return parser


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def parse_version(text: str) -> tuple[int, int, int]:
    """ "4.0.3" -> (4, 0, 3); missing parts are 0. ValueError if it is not X[.Y[.Z]]."""
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"not a RabbitMQ version (X.Y.Z): {text!r}")
    major, minor, patch = (int(part) for part in [*parts, "0", "0"][:3])
    return major, minor, patch


def unchecked_cc_risk(version: str | None) -> str | None:
    """What worker-<dependency> users risk on this broker (None: nothing, its topic permissions
    check CC and BCC); ValueError for a malformed version."""
    if version is not None and parse_version(version) >= CC_CHECKED_SINCE:
        return None
    broker = f"RabbitMQ {version}" if version is not None else "a RabbitMQ of unnamed version"
    return (
        f"{broker} may not check the CC and BCC routing keys of a publish against topic permissions "
        f"(only {_dotted(CC_CHECKED_SINCE)} and later do), so a worker-DEPENDENCY user can publish into "
        "another dependency's results queue: Janus sets such results aside (wrong_routing_key), but a "
        "flood of them holds that dependency's results back (docs/security.md)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    dependencies = list(args.dependency)
    queue_type: topology.QueueType = args.queue_type or topology.DEFAULT_QUEUE_TYPE
    if args.config is not None:
        from janus.config import load_config  # only here: the plain rendering needs no config

        config = load_config(args.config, env={})
        dependencies += [name for name in config.dependencies if name not in dependencies]
        queue_type = args.queue_type or config.queue_type
    try:
        risk = unchecked_cc_risk(args.rabbitmq_version) if dependencies else None
    except ValueError as exc:
        parser.error(str(exc))
    if risk is not None and not args.allow_unchecked_cc:
        parser.exit(
            2,
            f"{parser.prog}: refusing to render worker users: {risk}. Name a RabbitMQ of "
            f"{_dotted(CC_CHECKED_SINCE)} or later with --rabbitmq-version, or accept the risk with "
            "--allow-unchecked-cc\n",
        )
    if risk is not None:
        print(f"warning: {risk}", file=sys.stderr)
    known = roles(dependencies)
    users = _pairs(args.user, "user", known)
    passwords: dict[str, str] = {}
    if args.password_dir is not None:
        if args.create_passwords:
            created = create_passwords(
                args.password_dir,
                known,
                host=args.janus_host,
                vhost=args.vhost,
                janus_user=users.get("janus", "janus"),
                cluster_hosts=args.janus_cluster_hosts,
            )
            for path in created:
                print(f"created {path}", file=sys.stderr)
        for role in known:
            path = args.password_dir / role
            if path.is_file():
                passwords[role] = path.read_text(encoding="utf-8").strip()
    elif args.create_passwords:
        parser.error("--create-passwords needs --password-dir")
    passwords.update(
        (role, Path(path).read_text(encoding="utf-8").strip())
        for role, path in _pairs(args.password_file, "password-file", known).items()
    )
    document = render(
        vhost=args.vhost,
        dependencies=dependencies,
        users=users,
        passwords=passwords,
        rabbit_version=args.rabbitmq_version or RENDERED_FOR,
        queue_type=queue_type,
        scale_out=args.scale_out,
    )
    text = json.dumps(document, indent=2) + "\n"
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    elif not args.create_passwords:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
