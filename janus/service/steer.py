"""Steering live: the policy of record and operators' pauses and overrides, applied by the leader.

`janus apply`, `pause`, `resume` and `override` only write rows (store/steering.py); the leader
alone changes its core. It looks for new rows every STEER_EVERY seconds; a new version of the
policy is applied by rebuilding the core from PostgreSQL with it (every window, held slot and
gate exactly as committed, counted under the new limits), after declaring the queues of the
dependencies it adds; steering is applied to the core as it is. Both go through the admission
loop between two ticks (`Control`), and only then are the rows marked applied, in a fenced
transaction, which is what the commands wait for. A new leader runs the newest version and
every pause and override in force, whatever its own file says (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from janus.config import JanusConfig, parse_limit_entry
from janus.core.policy import DependencyPolicy
from janus.core.steering import OperatorPause, Override, Steering
from janus.errors import ConfigError
from janus.policy_record import config_of_record, diff, same_policy
from janus.service.inbox import Control, Inbox
from janus.service.leadership import Term
from janus.store.repository import Store
from janus.store.steering import PolicyLog, PolicyVersion, SteeringRow

log = logging.getLogger("janus.steer")

STEER_EVERY = 0.2  # seconds between looks for new versions and steering: within a second


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class Running:
    """The policy the leader runs: the newest stored version, with the process's connections."""

    version: int
    config: JanusConfig
    removed: tuple[DependencyPolicy, ...]  # the last policy of each dependency removed since
    file_differs: bool  # the process's own file sets another policy

    def policies(self) -> list[DependencyPolicy]:
        return self.config.policies()

    def led(self) -> tuple[str, ...]:
        """Every dependency someone must lead: the configured ones, and the removed ones, whose
        lanes admit nothing but finish their held jobs and keep their waiting ones."""
        return tuple(sorted({*self.config.dependencies, *(policy.name for policy in self.removed)}))

    def published_outcomes(self) -> dict[str, frozenset[str]]:
        outcomes = self.config.published_outcomes()
        for policy in self.removed:  # their held jobs still finish: the defaults
            outcomes.setdefault(policy.name, frozenset({"succeeded", "dead"}))
        return outcomes


async def policy_of_record(store: Store, term: Term, file: JanusConfig, file_record: str) -> Running:
    """At the start of a term: the newest stored version; on an empty table, the file becomes version 1."""
    policy_log = store.policy_log
    newest = await policy_log.newest()
    if newest is None:
        async with store.leader_transaction(term.holder, term.epoch) as tx:
            await tx.record_first_version(
                file_record,
                f"{os_user()} (janus run)",
                "janus run on an empty database",
                diff(None, file_record),
            )
        newest = await policy_log.newest()
        if newest is None:
            raise ConfigError("the policy of record could not be stored")
    running = await running_of(policy_log, newest, file)
    if running.file_differs:
        log.warning(
            "the policy file differs from version %d, the policy of record, which runs: "
            "`janus apply --config FILE` to make the file the policy",
            running.version,
        )
    return running


async def running_of(policy_log: PolicyLog, newest: PolicyVersion, file: JanusConfig) -> Running:
    config = config_of_record(newest.policy, newest.version, file)
    removed: dict[str, DependencyPolicy] = {}
    for version in await policy_log.versions():  # oldest first: a dependency's last policy wins
        if version.version >= newest.version:
            continue
        try:
            old = config_of_record(version.policy, version.version, file)
        except ConfigError:
            continue
        for name, dependency in old.dependencies.items():
            if name not in config.dependencies:
                removed[name] = dependency.to_policy(name)
    return Running(
        version=newest.version,
        config=config,
        removed=tuple(removed.values()),
        file_differs=not same_policy(config, file),
    )


def steering_of(rows: Iterable[SteeringRow]) -> list[Steering]:
    """The core's steering from the latest rows of each dependency (`steering_in_force`)."""
    steering: dict[str, Steering] = {}
    for row in rows:
        current = steering.get(row.dependency, Steering(dependency=row.dependency))
        if row.kind == "pause":
            current = dataclasses.replace(current, pause=OperatorPause(until=row.until, by=row.by))
        elif row.kind == "override" and row.until is not None:
            limits = None if row.rate_limits is None else tuple(map(parse_limit_entry, row.rate_limits))
            override = Override(until=row.until, by=row.by, concurrency=row.concurrency, rate_limits=limits)
            current = dataclasses.replace(current, override=override)
        steering[row.dependency] = current
    return list(steering.values())


async def applied(inbox: Inbox, control: Control, draining: asyncio.Event) -> bool:
    """Hand `control` to the admission loop; True once it applied it (False: the term ends first)."""
    inbox.add_control(control)
    stopping: asyncio.Future[object] = asyncio.ensure_future(draining.wait())
    done: asyncio.Future[object] = control.done  # type: ignore[assignment]
    try:
        await asyncio.wait([done, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    return control.done.done()


class Steerer:
    """The leader's task that applies new versions and steering (a supervised task of the term)."""

    def __init__(
        self,
        *,
        store: Store,
        term: Term,
        inbox: Inbox,
        running: Running,
        file: JanusConfig,
        on_version: Callable[[Running], Awaitable[None]],
        seen: int,
        on_applied: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._term = term
        self._inbox = inbox
        self.running = running
        self._file = file
        self._on_version = on_version
        self._seen = seen  # the highest steering row applied
        self._on_applied = on_applied  # the history has changed (the status's recent changes)

    async def run(self, draining: asyncio.Event) -> None:
        while not draining.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(draining.wait(), timeout=STEER_EVERY)
                return
            await self.poll(draining)

    async def poll(self, draining: asyncio.Event) -> None:
        policy_log = self._store.policy_log
        number = await policy_log.newest_version_number()
        newest = await policy_log.newest() if number is not None and number > self.running.version else None
        if newest is not None and newest.version > self.running.version:
            running = await running_of(policy_log, newest, self._file)
            await self._on_version(running)  # the new queues declared, the service runs it from now on
            if await self._applied(Control(rebuild=True), draining):
                await self._mark(version=running.version)
                self.running = running
                log.info("running version %d of the policy", running.version)
        if await policy_log.steering_pending():
            top, rows = await policy_log.steering_in_force()
            # An override's rate limits must count admissions the core's windows may not hold (a
            # longer span, or no rate limit before): the core is rebuilt from PostgreSQL, which
            # reads the steering too. A pause, a resume, a concurrency or an end: applied as is.
            rebuild = any(
                r.kind == "override" and r.rate_limits is not None and r.id > self._seen for r in rows
            )
            control = Control(rebuild=True) if rebuild else Control(steering=steering_of(rows))
            if await self._applied(control, draining):
                await self._mark(steering_up_to=top)
                self._seen = top

    async def _applied(self, control: Control, draining: asyncio.Event) -> bool:
        return await applied(self._inbox, control, draining)

    async def _mark(self, *, version: int | None = None, steering_up_to: int | None = None) -> None:
        term = self._term
        async with self._store.leader_transaction(term.holder, term.epoch) as tx:
            if version is not None:
                await tx.mark_version_applied(version, term.epoch)
            if steering_up_to is not None:
                await tx.mark_steering_applied(steering_up_to, term.epoch)
        self._on_applied()
