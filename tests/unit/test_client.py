"""The SDK's pieces that need no broker: handler kinds, the thread pool, `throttled` and `duration`."""

from __future__ import annotations

import functools
import json
import threading

import pytest

from janus.client.sync_producer import default_amqp_url
from janus.client.threads import HandlerThreads
from janus.client.worker import ReadyJob, Throttled, is_coroutine_function
from janus.config import DEFAULT_AMQP_URL
from janus.errors import ProtocolError
from janus.protocol import decode_result, encode_result


async def coroutine(job: ReadyJob) -> None:
    """A coroutine function."""


def plain(job: ReadyJob) -> None:
    """A plain function."""


class AsyncCallable:
    async def __call__(self, job: ReadyJob) -> None:
        """An object called like a coroutine function."""


@pytest.mark.parametrize(
    ("handler", "is_async"),
    [
        (coroutine, True),
        (plain, False),
        (functools.partial(coroutine), True),  # wrapped: still awaited, never put on a thread
        (AsyncCallable(), True),
        (lambda job: None, False),
    ],
)
def test_handlers_are_told_apart(handler: object, is_async: bool) -> None:
    assert is_coroutine_function(handler) is is_async


def test_the_pool_has_as_many_daemon_threads_as_asked() -> None:
    pool = HandlerThreads(3, "t")
    release = threading.Event()
    barrier = threading.Barrier(3)

    def work() -> str:
        barrier.wait(10)  # all three at once: three threads
        release.wait(10)
        name = threading.current_thread().name
        assert threading.current_thread().daemon, "a stuck function must not keep the process alive"
        return name

    futures = [pool.submit(work) for _ in range(3)]
    release.set()
    seen = {str(future.result(10)) for future in futures}
    assert seen == {"t-0", "t-1", "t-2"}
    pool.close()


def test_throttled_and_duration_travel_in_the_result_and_are_optional() -> None:
    body = encode_result(
        job_id="j", attempt=3, outcome="failure", error="429", retry_after=2.0, throttled=True, duration=0.25
    )
    assert json.loads(body) == {
        "job_id": "j",
        "attempt": 3,
        "outcome": "failure",
        "error": "429",
        "retry_after": 2.0,
        "throttled": True,
        "duration": 0.25,
    }
    decoded = decode_result(body, "application/json")
    assert decoded.throttled
    assert decoded.duration == 0.25
    plain = encode_result(job_id="j", attempt=1, outcome="failure")
    assert "throttled" not in json.loads(plain)
    assert "duration" not in json.loads(plain)
    older = decode_result(plain, "application/json")  # from a worker that sends neither
    assert not older.throttled
    assert older.duration is None
    with pytest.raises(ProtocolError):
        decode_result(b'{"job_id":"j","attempt":1,"outcome":"success","duration":-1}', "application/json")
    assert str(Throttled()) == "throttled"
    assert str(Throttled(retry_after=2.5)) == "throttled, retry after 2.5s"


def test_the_sync_producer_takes_its_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JANUS_AMQP_URL", raising=False)
    monkeypatch.delenv("JANUS_AMQP_URL_FILE", raising=False)
    assert default_amqp_url() == DEFAULT_AMQP_URL
    monkeypatch.setenv("JANUS_AMQP_URL", "amqp://elsewhere/")
    assert default_amqp_url() == "amqp://elsewhere/"
