"""A conformance run: Janus's side of the protocol, played against a worker process.

On a vhost of its own (made and deleted here, or one given), the harness declares the
topology, starts the worker command with the conformance environment, publishes
admissions as Janus would (`rules.plan`), collects what comes back (results on the
results and unroutable queues, dead letters on janus.returned, the handler's starts),
kills the worker while a handler runs to see whether the admission is redelivered, holds
one delivery before the worker starts to redeliver it once the worker has started a copy,
and hands it all to `rules.judge`. It waits on what it observes, with deadlines; the only
fixed pause is the settle time after the last expected message, during which a second
result would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from janus.broker import BROKER_ERRORS, topology
from janus.conformance import contract
from janus.conformance.contract import DEFAULT_AMQP_URL
from janus.conformance.rules import (
    Case,
    KillSeen,
    Kind,
    Observations,
    RedeliverySeen,
    ResultSeen,
    ReturnSeen,
    RuleResult,
    judge,
    killed_case,
    plan,
    redelivered_case,
)
from janus.core.jobs import Admission
from janus.errors import JanusError
from janus.local_services import LocalServices
from janus.protocol import CONTENT_TYPE, decode_ready, encode_ready

STOP_GRACE = 10.0  # seconds a worker has to stop on SIGTERM before it is killed


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    worker_command: Sequence[str]
    dependency: str = "conformance"
    # Without a vhost (no path, or "/"), the harness makes a vhost of its own with rabbitmqctl
    # and deletes it after; with one (e.g. ".../my-vhost", "%2F" for the default), it uses it
    # as it is: it must be the worker's and the harness's alone (no Janus consuming it).
    amqp_url: str = DEFAULT_AMQP_URL
    timeout: float = 30.0  # for each wait: the worker consuming, the results, the kill
    settle: float = 0.5  # watched after the last expected message, for results that should not come
    env: Mapping[str, str] = field(default_factory=dict)  # more environment for the worker
    rabbitmqctl: Sequence[str] = ("rabbitmqctl",)


@dataclass(kw_only=True)
class Report:
    vhost: str
    rules: list[RuleResult]
    worker_output: list[str]
    problems: list[str] = field(
        default_factory=list
    )  # what kept a phase from completing (the rules say what was not seen)

    @property
    def ok(self) -> bool:
        return bool(self.rules) and all(rule.passed for rule in self.rules)


async def run_conformance(options: Options) -> Report:
    parts = urlsplit(options.amqp_url)
    local = LocalServices(
        amqp_base=f"{parts.scheme}://{parts.netloc}",
        rabbitmqctl=tuple(options.rabbitmqctl),
        amqp_user=unquote(parts.username or "guest"),
    )
    given = unquote(parts.path[1:]) if parts.path not in ("", "/") else None
    vhost = given if given is not None else f"janus-conformance-{uuid.uuid4().hex[:8]}"
    if given is None:
        await local.create_vhost(vhost)
    try:
        with tempfile.TemporaryDirectory(prefix="janus-conformance-") as scratch:
            run = _Run(options, local, vhost, fresh=given is None, log_path=Path(scratch) / "starts.jsonl")
            return await run.run()
    finally:
        if given is None:
            await local.delete_vhost(vhost)


class WorkerProcess:
    """The worker under test, in a session of its own so that a kill reaches what it started."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self._command = list(command)
        self._env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.output: deque[str] = deque(maxlen=200)
        self._reader: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()

    async def start(self) -> None:
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self._command,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise JanusError(f"cannot start the worker command {self._command}: {exc}") from exc
        self._reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.output.append(raw.decode(errors="replace").rstrip())
        await process.wait()
        self.exited.set()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    async def kill(self) -> None:
        """SIGKILL, to the whole process group: no handler, no shutdown code runs."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        await self.exited.wait()

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.running:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exited.wait(), STOP_GRACE)
            except TimeoutError:
                self.output.append(f"(did not stop within {STOP_GRACE:g}s of SIGTERM: killed)")
        await self.kill()  # what the worker started may outlive it


class _WorkerGone(Exception):
    pass


class _Run:
    def __init__(
        self, options: Options, local: LocalServices, vhost: str, *, fresh: bool, log_path: Path
    ) -> None:
        self.options = options
        self.local = local
        self.vhost = vhost
        self.fresh = fresh
        self.log_path = log_path
        self.url = local.amqp_url(vhost)
        self.dependency = options.dependency
        self.run_id = f"conformance-{uuid.uuid4().hex[:8]}"
        self.seen = Observations(dependency=self.dependency, cases=[])
        self.problems: list[str] = []  # what kept a phase from completing
        self._changed = asyncio.Condition()
        self.worker = WorkerProcess(options.worker_command, self._worker_env())

    def _worker_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.options.env,
            contract.ENV_AMQP_URL: self.url,
            contract.ENV_DEPENDENCIES: self.dependency,
            contract.ENV_HANDLER: contract.CONFORMANCE_HANDLER,
            contract.ENV_CONFORMANCE_LOG: str(self.log_path),
        }

    async def run(self) -> Report:
        try:
            connection = await aio_pika.connect(
                self.url, client_properties={"connection_name": "janus-conformance"}
            )
        except BROKER_ERRORS as exc:
            raise JanusError(f"cannot connect to RabbitMQ (vhost {self.vhost!r}): {exc!r}") from exc
        async with connection:
            await topology.declare_topology(connection, [self.dependency])
            # No confirms on the harness's channels: any channel in confirm mode is the worker's.
            channel = await connection.channel(publisher_confirms=False)
            await self._listen(channel)
            ready = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
            holding = await connection.channel(publisher_confirms=False)  # the delivery to redeliver
            try:
                await self._phases(channel, ready, holding)
            except (_WorkerGone, TimeoutError) as exc:
                self.problems.append(str(exc))
            finally:
                await self.worker.stop()
                if not self.fresh:  # a given vhost: leave no admission of this run behind
                    await (await channel.get_queue(topology.ready_queue(self.dependency))).purge()
        if self.log_path.exists():
            self.seen.starts = contract.read_starts(self.log_path.read_text(encoding="utf-8"))
        return Report(
            vhost=self.vhost,
            rules=judge(self.seen),
            worker_output=list(self.worker.output),
            problems=self.problems,
        )

    async def _listen(self, channel: AbstractChannel) -> None:
        await channel.set_qos(prefetch_count=200)
        queues = (
            topology.results_queue(self.dependency),
            topology.UNROUTABLE_QUEUE,  # results with another routing key end up here
            topology.RETURNED_QUEUE,
            topology.ready_queue(self.dependency),
        )
        if not self.fresh:  # a given vhost: nothing from an earlier run may count
            for name in queues:
                await (await channel.get_queue(name, ensure=True)).purge()
        for name, callback in zip(
            queues[:3], (self._on_result, self._on_result, self._on_return), strict=True
        ):
            queue = await channel.get_queue(name, ensure=True)
            await queue.consume(callback)

    async def _on_result(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self.seen.results.append(
            ResultSeen(
                routing_key=message.routing_key or "",
                body=message.body,
                content_type=message.content_type,
                delivery_mode=int(message.delivery_mode) if message.delivery_mode is not None else None,
                received_at=time.time(),
            )
        )
        await self._notify()

    async def _on_return(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        deaths = message.headers.get("x-death")
        reason = None
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            raw = deaths[0].get("reason")
            reason = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            job_id: str | None = decode_ready(message.body).job_id
        except JanusError:
            job_id = message.message_id
        self.seen.returns.append(ReturnSeen(job_id=job_id, reason=reason, received_at=time.time()))
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, what: str, done: Callable[[], bool], *, poll: float | None = None) -> None:
        """Until `done()`, within the timeout; fails at once if the worker exits. `poll`: look
        again every so often, for state that sends no message (the log file)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout
        while True:
            if done():
                return
            if self.worker.exited.is_set():
                raise _WorkerGone(f"the worker exited (code {self._code()}) while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {self.options.timeout:g}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, poll or remaining)), self._changed:
                    await self._changed.wait_for(lambda: done() or self.worker.exited.is_set())

    async def _notify_on_exit(self) -> None:
        await self.worker.exited.wait()
        await self._notify()

    def _code(self) -> object:
        return self.worker.process.returncode if self.worker.process is not None else None

    async def _phases(
        self, channel: AbstractChannel, ready: AbstractExchange, holding: AbstractChannel
    ) -> None:
        held = await self._hold(holding, ready)
        await self.worker.start()
        watcher = asyncio.create_task(self._notify_on_exit())
        try:
            await self._run_phases(channel, ready, held)
        finally:
            watcher.cancel()

    async def _hold(self, holding: AbstractChannel, ready: AbstractExchange) -> AbstractIncomingMessage:
        """Before the worker consumes: take one admission from the ready queue and keep it
        unacked, so that the broker can deliver it again, flagged redelivered (redelivered_dropped)."""
        case = redelivered_case(self.run_id, time.time())
        self.seen.cases.append(case)
        self.seen.redelivery = RedeliverySeen(case=case, redelivered_at=None)
        taken: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await holding.set_qos(prefetch_count=1)
        queue = await holding.get_queue(topology.ready_queue(self.dependency), ensure=True)
        consumer = await queue.consume(taken.put)
        await self._publish(ready, case)
        async with asyncio.timeout(self.options.timeout):
            held = await taken.get()
        await queue.cancel(consumer)  # the delivery stays unacked on this channel
        return held

    async def _redeliver(self, ready: AbstractExchange, held: AbstractIncomingMessage) -> None:
        """Give the worker a copy of the held admission; once it has started the copy, put the
        held delivery back: the worker gets it again, as after an ack the broker never read."""
        assert self.seen.redelivery is not None
        case = self.seen.redelivery.case
        await self._publish(ready, case)
        await self._wait(
            "the worker to start the admission to redeliver", lambda: self._started(case), poll=0.05
        )
        await held.nack(requeue=True)
        self.seen.redelivery = RedeliverySeen(case=case, redelivered_at=time.time())

    def _started(self, case: Case) -> bool:
        if not self.log_path.exists():
            return False
        starts = contract.read_starts(self.log_path.read_text(encoding="utf-8"))
        return any(start.job_id == case.job_id for start in starts)

    async def _run_phases(
        self, channel: AbstractChannel, ready: AbstractExchange, held: AbstractIncomingMessage
    ) -> None:
        ready_queue = topology.ready_queue(self.dependency)
        await self._wait_queue(
            channel, ready_queue, lambda consumers, _: consumers > 0, "the worker to consume"
        )

        cases = plan(self.run_id, time.time())
        self.seen.cases.extend(cases)
        for case in cases:
            await self._publish(ready, case)
        confirms = asyncio.create_task(self._count_confirm_channels())
        answered = [*cases, *(c for c in self.seen.cases if c.kind is Kind.REDELIVERED)]
        try:
            await self._redeliver(ready, held)
            await self._wait("the first phase's results and dead letters", lambda: self._answered(answered))
        except TimeoutError as exc:
            self.problems.append(str(exc))  # the rules say what is missing; the kill still tells
        finally:
            self.seen.confirm_channels, self.seen.confirm_check_problem = await confirms
        # Watch past the end of the longest handler (a redelivered copy started again runs from
        # when it went back): a late or second result shows then.
        ends = [case.handler_ends_at for case in cases]
        redelivery = self.seen.redelivery
        if redelivery is not None and redelivery.redelivered_at is not None:
            ends.append(redelivery.redelivered_at + redelivery.case.instructions.sleep)
        quiet_until = max(ends) + self.options.settle
        await asyncio.sleep(max(quiet_until - time.time(), self.options.settle))

        await self._kill_mid_handler(channel, ready, ready_queue)

    def _answered(self, cases: Sequence[Case]) -> bool:
        for case in cases:
            if case.kind is Kind.EXPIRED:
                if not any(r.job_id == case.job_id for r in self.seen.returns) and not self.seen.results_for(
                    case
                ):
                    return False
            elif not self.seen.results_for(case):
                return False
        return True

    async def _kill_mid_handler(
        self, channel: AbstractChannel, ready: AbstractExchange, ready_queue: str
    ) -> None:
        case = killed_case(self.run_id, time.time())
        self.seen.cases.append(case)
        await self._publish(ready, case)

        try:
            await self._wait(
                "the handler of the admission to kill the worker in", lambda: self._started(case), poll=0.05
            )
        except TimeoutError:
            self.seen.kill = KillSeen(case=case, started=False, consumers_gone=False, ready_after_kill=None)
            raise
        await self.worker.kill()
        # The broker requeues a dead consumer's unacked deliveries as it drops the consumer.
        try:
            _, waiting = await self._wait_queue(
                channel,
                ready_queue,
                lambda consumers, _: consumers == 0,
                "the broker to drop the killed worker's consumer",
                require_worker=False,
            )
        except TimeoutError:
            self.seen.kill = KillSeen(case=case, started=True, consumers_gone=False, ready_after_kill=None)
            raise
        self.seen.kill = KillSeen(case=case, started=True, consumers_gone=True, ready_after_kill=waiting)

    async def _wait_queue(
        self,
        channel: AbstractChannel,
        name: str,
        done: Callable[[int, int], bool],
        what: str,
        *,
        require_worker: bool = True,
    ) -> tuple[int, int]:
        """Poll the queue's (consumers, ready messages) until `done` holds: the broker sends no event for them."""
        deadline = asyncio.get_running_loop().time() + self.options.timeout
        while True:
            declared = await channel.declare_queue(name, passive=True)
            result = declared.declaration_result
            counts = (result.consumer_count or 0, result.message_count or 0)
            if done(*counts):
                return counts
            if require_worker and self.worker.exited.is_set():
                raise _WorkerGone(f"the worker exited (code {self._code()}) while waiting for {what}")
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(f"timed out after {self.options.timeout:g}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def _publish(self, ready: AbstractExchange, case: Case) -> None:
        body = encode_ready(
            Admission(
                job_id=case.job_id,
                dependency=self.dependency,
                scope="conformance",
                payload=case.instructions.payload(),
                attempt=case.attempt,
                admitted_at=case.admitted_at,
                expires_at=case.expires_at,
                lease_deadline=case.lease_expires_at,
            )
        )
        ttl_ms = round((case.expires_at - time.time()) * 1000)
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=case.job_id,
            # As Janus sets it (the admission's TTL); not on the expired admission, which the
            # worker must refuse itself (the broker would otherwise drop it unseen).
            expiration=ttl_ms / 1000 if ttl_ms > 0 else None,
        )
        await ready.publish(message, routing_key=self.dependency)

    async def _count_confirm_channels(self) -> tuple[int | None, str]:
        """The channels in confirm mode on this vhost once the worker has published (the
        harness's own are not): rabbitmqctl, since AMQP cannot tell another client's mode."""
        try:
            await self._wait("a first result", lambda: bool(self.seen.results))
        except (_WorkerGone, TimeoutError) as exc:
            return None, f"no result to look for its channel ({exc})"
        try:
            process = await asyncio.create_subprocess_exec(
                *self.options.rabbitmqctl,
                "-q",
                "list_channels",
                "--no-table-headers",
                "vhost",
                "confirm",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return None, f"cannot run {self.options.rabbitmqctl[0]}: {exc}"
        out, err = await process.communicate()
        if process.returncode != 0:
            return None, f"rabbitmqctl list_channels failed: {err.decode(errors='replace').strip()}"
        count = 0
        for line in out.decode(errors="replace").splitlines():
            fields = line.split("\t")
            if len(fields) == 2 and fields[0] == self.vhost and fields[1] == "true":
                count += 1
        return count, ""
