"""`janus worker DEPENDENCY=module:function ...`: a worker process for plain functions and coroutines.

The functions are imported as Celery, Dramatiq and RQ import theirs (the current directory
first on the path); each runs with the SDK's guarantees (janus.client.worker). SIGTERM or
Ctrl-C drains: no new admissions, running ones finish and report, then the process exits 0;
a second one exits at once. A lost connection to RabbitMQ is replaced by the SDK, which
publishes again every result not yet confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from janus.cli.common import amqp_url_of, port, with_config
from janus.config import DEPENDENCY_NAME, Settings
from janus.errors import JanusError
from janus.urls import redact

log = logging.getLogger("janus.worker")

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    dependency: str
    spec: str  # module:function, as given
    function: Callable[..., object]


def add_parsers(commands: Any) -> None:
    worker = with_config(
        commands.add_parser(
            "worker",
            help="run functions as a worker: DEPENDENCY=module:function ...",
            description="Consume each dependency's admissions and run its function (a plain function "
            "on a thread, or a coroutine function), with the SDK's guarantees: ack before start, "
            "expired admissions refused, one result per admission, cut off before the lease ends. "
            "A function returns to succeed, raises to fail, raises janus.client.RetryAfter(seconds) "
            "to pause the dependency. SIGTERM drains.",
        )
    )
    worker.add_argument("targets", nargs="+", metavar="DEPENDENCY=module:function")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="handlers (threads, for plain functions) at once, over all dependencies; also the "
        "prefetch (default: %(default)s)",
    )
    worker.add_argument(
        "--amqp-url",
        help="RabbitMQ; a cluster's nodes separated by commas (default: $JANUS_AMQP_URL, else the "
        "--config file's, else the local one)",
    )
    worker.add_argument("--metrics-port", type=port, help="serve /metrics on this port (default: none)")
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default: %(default)s)"
    )


def parse_target(text: str) -> tuple[str, str, str]:
    """(dependency, module, function) from "DEPENDENCY=module:function"."""
    dependency, equals, spec = text.partition("=")
    module, colon, function = spec.partition(":")
    if not (equals and colon and dependency and module and function):
        raise JanusError(f"expected DEPENDENCY=module:function, got {text!r}")
    if not DEPENDENCY_NAME.fullmatch(dependency):
        raise JanusError(f"invalid dependency name {dependency!r} in {text!r}")
    return dependency, module, function


def load_targets(texts: list[str]) -> list[Target]:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the project's own modules
    targets: dict[str, Target] = {}
    for text in texts:
        dependency, module_name, attribute = parse_target(text)
        if dependency in targets:
            raise JanusError(f"dependency {dependency!r} is given twice")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise JanusError(f"cannot import {module_name!r}: {_where(exc)}") from None
        function: Any = module
        for part in attribute.split("."):
            function = getattr(function, part, None)
            if function is None:
                raise JanusError(f"module {module_name!r} has no {attribute!r}")
        if not callable(function):
            raise JanusError(f"{module_name}:{attribute} is not callable")
        targets[dependency] = Target(
            dependency=dependency, spec=f"{module_name}:{attribute}", function=function
        )
    return list(targets.values())


def _where(exc: BaseException) -> str:
    """The exception and the innermost line of the user's code it came from, in one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{place}"


async def worker(args: argparse.Namespace, settings: Settings) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from janus.client.metrics import WorkerMetrics
    from janus.client.worker import Worker, WorkRecord, is_coroutine_function

    if args.concurrency < 1:
        raise JanusError(f"--concurrency must be at least 1, got {args.concurrency}")
    targets = load_targets(args.targets)
    url = amqp_url_of(args, settings)
    metrics: WorkerMetrics | None = None

    def on_record(record: WorkRecord) -> None:
        _log_record(record)
        if metrics is not None:
            metrics.observe(record)

    running = Worker(
        url,
        {target.dependency: target.function for target in targets},
        prefetch=args.concurrency,
        max_in_flight=args.concurrency,
        on_record=on_record,
        name=f"janus-worker-{os.getpid()}",
    )
    if args.metrics_port is not None:
        registry = CollectorRegistry()
        metrics = WorkerMetrics(registry, running)
        try:
            start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
        except OSError as exc:
            busy = " (in use)" if exc.errno == errno.EADDRINUSE else ""
            raise JanusError(
                f"cannot serve /metrics on {args.metrics_host}:{args.metrics_port}{busy}: {exc.strerror or exc}"
            ) from None
    await running.start()
    kinds = ", ".join(
        f"{t.dependency} ({t.spec}, {'coroutine' if is_coroutine_function(t.function) else 'plain function'})"
        for t in targets
    )
    log.info("worker for %s on %s: %d at once", kinds, redact(url), args.concurrency)
    return await _until_stopped(running)


async def _until_stopped(running: Any) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            log.warning("%s received again: exiting without waiting for running jobs", sig.name)
            os._exit(1)  # plain functions' threads cannot be stopped; Janus recovers their jobs by lease
        log.info("%s received: no new jobs; waiting for %d running ones to report", sig.name, running.running)
        stopping.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    # A lost connection is the SDK's to replace (it reconnects and publishes unconfirmed results
    # again): this only waits for a signal.
    await stopping.wait()
    await running.stop()
    for sig in signals:
        loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0


def _log_record(record: Any) -> None:
    tried = f"try {record.try_number}, " if record.try_number is not None else ""
    what = f"{record.job_id} of {record.dependency} ({tried}admission {record.attempt})"
    if record.outcome == "expired":
        log.warning("%s: expired before it could start; returned to Janus unstarted", what)
    elif record.outcome == "failure":
        log.warning("%s failed in %.3f s: %s", what, record.finished_at - record.started_at, record.error)
    else:
        log.info("%s done in %.3f s", what, record.finished_at - record.started_at)
