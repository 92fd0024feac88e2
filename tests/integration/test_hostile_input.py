"""Hostile intake and results against the real broker: Janus stays up, every valid job completes,
every invalid message is on janus.rejected with its reason, and the limits hold.

Two parts: NASTY, hand-written cases with the reason each must get (one line each, with
what it probes); and Hypothesis-generated batches (random bytes, random JSON, near-valid
objects, huge strings, deep nesting, wrong types) published between valid jobs. The
generated messages are judged by the wire decoder (janus.protocol) -- the hand-written
cases are the independent check of the decoder itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.audit import audit
from janus.broker import topology
from janus.client import Worker
from janus.errors import ProtocolError
from janus.protocol import ENVELOPE_BYTES, MAX_RESULT_BYTES, decode_intake, decode_result
from janus.service.tick import TRUNCATED_BODY_BYTES
from tests.integration.harness import RecordLog, job_rows, make_config, policies, running_janus, succeed

pytestmark = pytest.mark.integration

JSON = "application/json"
EXAMPLES = int(os.environ.get("JANUS_FUZZ_EXAMPLES", "25"))  # more for a longer hunt
CAP = 1024  # max_payload_bytes in these tests: caps are cheap to reach
DEPENDENCIES = {
    "api": {"concurrency": 3, "rate_limits": ["40/1s"], "lease_timeout": "10s"},
    "mail": {"lease_timeout": "10s"},
}


def intake(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# (body, content_type, expected reason, what it probes) -- intake messages.
NASTY_INTAKE: list[tuple[bytes, str | None, str, str]] = [
    (b"", JSON, "malformed_json", "empty body"),
    (b"\xff\xfe\xfa", JSON, "malformed_json", "not UTF-8"),
    ('{"job_id":"a","dependency":"api"}'.encode("utf-16"), JSON, "malformed_json", "UTF-16 JSON"),
    (b'\xef\xbb\xbf{"job_id":"bom","dependency":"api"}', JSON, "malformed_json", "a UTF-8 byte order mark"),
    (b'{"job_id": "t", "depend', JSON, "malformed_json", "truncated JSON"),
    (b'{"job_id":"t","dependency":"api"} x', JSON, "malformed_json", "trailing garbage after the object"),
    (b'{"job_id":"a\\ud800","dependency":"api"}', JSON, "malformed_json", "a lone surrogate escape"),
    (b"null", JSON, "not_an_object", "JSON null"),
    (b"[]", JSON, "not_an_object", "a JSON array"),
    (b'"job"', JSON, "not_an_object", "a JSON string"),
    (b"{}", JSON, "invalid_fields", "an empty object"),
    (intake(job_id="nodep"), JSON, "invalid_fields", "dependency missing"),
    (intake(dependency="api"), JSON, "invalid_fields", "job_id missing"),
    (intake(job_id=5, dependency="api"), JSON, "invalid_fields", "job_id a number"),
    (intake(job_id=True, dependency="api"), JSON, "invalid_fields", "job_id a boolean"),
    (intake(job_id=["a"], dependency="api"), JSON, "invalid_fields", "job_id an array"),
    (intake(job_id="", dependency="api"), JSON, "invalid_fields", "job_id empty"),
    (intake(job_id="x" * 201, dependency="api"), JSON, "invalid_fields", "job_id one over 200 characters"),
    (intake(job_id="a\nb", dependency="api"), JSON, "invalid_fields", "job_id with a newline (log injection)"),
    (intake(job_id="a\x00b", dependency="api"), JSON, "invalid_fields", "job_id with U+0000"),
    (intake(job_id="a\x85b", dependency="api"), JSON, "invalid_fields", "job_id with a C1 control character"),
    (intake(job_id="a\u2028b", dependency="api"), JSON, "invalid_fields", "job_id with a line separator"),
    (intake(job_id="a\u202eb", dependency="api"), JSON, "invalid_fields", "job_id with a bidi override"),
    (intake(job_id="s1", dependency="api", scope="s" * 201), JSON, "invalid_fields", "scope too long"),
    (intake(job_id="s2", dependency="api", scope="a\tb"), JSON, "invalid_fields", "scope with a tab"),
    (intake(job_id="s3", dependency="api", scope=None), JSON, "invalid_fields", "scope null, not absent"),
    (intake(job_id="s4", dependency="api", scope=7), JSON, "invalid_fields", "scope a number"),
    (intake(job_id="d1", dependency="nope"), JSON, "unknown_dependency", "a dependency not configured"),
    (intake(job_id="d2", dependency="API"), JSON, "unknown_dependency", "a dependency in the wrong case"),
    (intake(job_id="d3", dependency="api "), JSON, "unknown_dependency", "a dependency with a trailing space"),
    (intake(job_id="d4", dependency="a\x00pi"), JSON, "invalid_fields", "a dependency with U+0000"),
    (b'{"job_id":"n1","dependency":"api","payload":NaN}', JSON, "invalid_fields", "payload NaN"),
    (b'{"job_id":"n2","dependency":"api","payload":[-Infinity]}', JSON, "invalid_fields", "nested -Infinity"),
    (b'{"job_id":"n3","dependency":"api","payload":1e400}', JSON, "invalid_fields", "a float that overflows"),
    (b'{"job_id":"n4","dependency":"api","payload":' + b"9" * 5000 + b"}", JSON, "malformed_json", "5000-digit int"),
    (intake(job_id="z1", dependency="api", payload="a\x00"), JSON, "invalid_fields", "U+0000 in a payload string"),
    (intake(job_id="z2", dependency="api", payload={"\x00": 1}), JSON, "invalid_fields", "U+0000 in a payload key"),
    (intake(job_id="p1", dependency="api", payload="x" * CAP), JSON, "payload_too_large", "payload just over the cap"),
    (intake(job_id="p2", dependency="api", payload="é" * 600), JSON, "payload_too_large", "cap counted in bytes"),
    (intake(job_id="m1", dependency="api", payload="x" * 20_000), JSON, "message_too_large", "refused unparsed"),
    (intake(job_id="m2", dependency="api", payload="y" * 2_000_000), JSON, "message_too_large",
     "2 MB, set aside truncated with its size (the broker of these tests takes up to 128 MiB)"),
    (b'{"job_id":"deep","dependency":"api","payload":' + b"[" * 3000 + b"]" * 3000 + b"}", JSON, "malformed_json",
     "nesting 3000 deep"),
    (b'{"job_id":"k","job_id":5,"dependency":"api"}', JSON, "invalid_fields", "a duplicate key, the last wins"),
    (intake(job_id="c1", dependency="api"), "text/plain", "wrong_content_type", "text/plain"),
    (intake(job_id="c2", dependency="api"), "application/xml", "wrong_content_type", "another media type"),
    (intake(job_id="c3", dependency="api"), "application/jsonx", "wrong_content_type", "a near-miss media type"),
]  # fmt: skip

# (body, content_type, expected reason, what it probes) -- results from a misbehaving worker.
NASTY_RESULTS: list[tuple[bytes, str | None, str, str]] = [
    (b" \n ", JSON, "malformed_json", "whitespace only"),
    (b"[1]", JSON, "not_an_object", "an array"),
    (b'{"job_id":"ghost","attempt":1,"outcome":"success"}', JSON, "unknown_job", "a job never submitted"),
    (b'{"job_id":"ghost","attempt":"1","outcome":"success"}', JSON, "invalid_fields", "attempt a string"),
    (b'{"job_id":"ghost","attempt":1.0,"outcome":"success"}', JSON, "invalid_fields", "attempt a float"),
    (b'{"job_id":"ghost","attempt":true,"outcome":"success"}', JSON, "invalid_fields", "attempt a boolean"),
    (b'{"job_id":"ghost","attempt":0,"outcome":"success"}', JSON, "invalid_fields", "attempt zero"),
    (b'{"job_id":"ghost","attempt":2147483648,"outcome":"success"}', JSON, "invalid_fields", "attempt past int4"),
    (b'{"job_id":"ghost","attempt":1,"outcome":"SUCCESS"}', JSON, "invalid_fields", "outcome in capitals"),
    (b'{"job_id":"ghost","attempt":1}', JSON, "invalid_fields", "outcome missing"),
    (b'{"job_id":"ghost","attempt":1,"outcome":"failure","retry_after":-1}', JSON, "invalid_fields", "negative"),
    (b'{"job_id":"ghost","attempt":1,"outcome":"failure","retry_after":NaN}', JSON, "invalid_fields", "NaN delay"),
    (b'{"job_id":"ghost","attempt":1,"outcome":"failure","retry_after":"5"}', JSON, "invalid_fields", "a string"),
    (b'{"job_id":"gh\\nost","attempt":1,"outcome":"success"}', JSON, "invalid_fields", "job_id with a newline"),
    (json.dumps({"job_id": "g", "attempt": 1, "outcome": "failure", "error": "e" * 30_000}).encode(), JSON,
     "message_too_large", "an error of 30,000 characters, refused unparsed"),
    (json.dumps({"job_id": "g", "attempt": 1, "outcome": "failure", "error": "e" * 2_000_000}).encode(), JSON,
     "message_too_large", "2 MB of result, set aside truncated with its size"),
    (b'{"job_id":"ghost","attempt":1,"outcome":"success"}', "text/plain", "wrong_content_type", "text/plain"),
]  # fmt: skip


@dataclass
class World:
    """Janus's vhost seen from outside: publish to it, collect what it sets aside and what workers do."""

    intake: AbstractExchange
    results: AbstractExchange
    log: RecordLog
    completed: Callable[[], float]  # jobs Janus has recorded as succeeded (its metric)
    rejected: list[tuple[str, bytes, str]] = field(default_factory=list)  # (source, body, reason)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: list[str] = field(default_factory=list)  # valid jobs of earlier rounds, all done
    rounds: itertools.count[int] = field(default_factory=itertools.count)
    database: str = ""  # where Janus keeps the jobs: what a result naming a finished job repeats

    async def on_rejected(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers
        reason = headers.get(topology.REASON_HEADER)
        assert isinstance(reason, str)
        assert reason, "every message set aside has a reason"
        source = headers.get(topology.SOURCE_HEADER)
        assert isinstance(source, str)
        size = headers.get(topology.ORIGINAL_SIZE_HEADER)
        body = message.body
        if size is not None:  # truncated: recorded as `set_aside` below expects it
            assert isinstance(size, int)
            assert len(body) == TRUNCATED_BODY_BYTES
            body += b"...[%d bytes]" % size
        self.rejected.append((source, body, reason))
        self.changed.set()
        await message.ack()

    async def wait(self, done: Callable[[], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):  # the metric changes without an event
                    await asyncio.wait_for(self.changed.wait(), timeout=0.05)

    async def publish_intake(self, body: bytes, content_type: str | None) -> None:
        message = aio_pika.Message(body, content_type=content_type)
        await self.intake.publish(message, routing_key=routing_key_of(body))

    async def publish_result(self, body: bytes, content_type: str | None) -> None:
        # Through api's results queue, as a misbehaving worker of api would.
        await self.results.publish(aio_pika.Message(body, content_type=content_type), routing_key="api")

    async def valid_job(self, job_id: str, dependency: str = "api") -> None:
        await self.publish_intake(intake(job_id=job_id, dependency=dependency, payload={"n": 1}), JSON)

    async def round(
        self,
        intake_messages: list[tuple[bytes, str | None]],
        result_messages: list[tuple[bytes, str | None]],
        expect: Callable[[str, bytes, str | None], str | None],
    ) -> None:
        """Publish the messages between valid jobs; wait until every valid job is done and every
        invalid message set aside, and check each reason. `expect(source, body, content_type)`
        gives the reason a message must be set aside with, or None if it is a valid job."""
        tag = next(self.rounds)
        valid = [f"valid-{tag}-{k}" for k in range(len(intake_messages) + 1)]
        expected: Counter[tuple[str, bytes, str]] = Counter()
        jobs = set(valid)
        before = len(self.rejected)
        await self.valid_job(valid[0], "mail")
        for (body, content_type), job_id in zip(intake_messages, valid[1:], strict=True):
            body = body.replace(b"@ID@", uuid.uuid4().hex.encode())
            reason = expect("intake", body, content_type)
            if reason is None:
                jobs.add(decode_intake(body, content_type, CAP)[0].job_id)
            else:
                expected[("intake", set_aside("intake", body), reason)] += 1
            await self.publish_intake(body, content_type)
            await self.valid_job(job_id)
        previous = self.finished[-1] if self.finished else "ghost"
        finished = (await job_rows(self.database)).get(previous) if self.database else None
        for body, content_type in result_messages:
            body = body.replace(b"@PREV@", previous.encode())
            reason = about_a_finished_job(expect("results", body, content_type), body, content_type, finished)
            assert reason is not None, "no generated result may be valid for a job in flight"
            expected[("results", set_aside("results", body), reason)] += 1
            await self.publish_result(body, content_type)
        count = sum(expected.values())
        total = len(self.finished) + len(jobs)
        # Done when Janus itself has recorded every success (not only the worker): a result
        # naming a job of this round in the next one must find it finished.
        await self.wait(
            lambda: (
                len(self.rejected) - before >= count
                and jobs <= self.log.succeeded()
                and self.completed() >= total
            )
        )
        got = Counter(self.rejected[before:])
        assert got == expected, f"set aside {got - expected} unexpectedly; missing {expected - got}"
        self.finished.extend(sorted(jobs))


def set_aside(source: str, body: bytes) -> bytes:
    """What janus.rejected holds of a message set aside: itself, or, over the largest valid
    message of its source, its start and (here appended) its size header."""
    cap = MAX_RESULT_BYTES if source == "results" else CAP + ENVELOPE_BYTES
    if len(body) <= cap:
        return body
    return body[:TRUNCATED_BODY_BYTES] + b"...[%d bytes]" % len(body)


def about_a_finished_job(
    reason: str | None, body: bytes, content_type: str | None, finished: Any
) -> str | None:
    """A valid result naming the finished job `finished` (its row): published through api's
    queue, it is another dependency's (`wrong_dependency`), or a repeat of its success
    (`duplicate_result`); otherwise the reason stands (docs/protocol.md, "Results that change
    nothing")."""
    if reason != "unknown_job" or finished is None:
        return reason
    result = decode_result(body, content_type)
    if result.job_id != finished["job_id"]:
        return reason
    if finished["dependency"] != "api":
        return "wrong_dependency"
    if result.outcome == "success" and result.attempt == finished["attempt"]:
        return "duplicate_result"
    return reason


def routing_key_of(body: bytes) -> str:
    """Producers route intake by the job's dependency: the body's, when it names one (a hostile
    body is judged for what it is, not for its key: test_protocol_behaviours.py has the key)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return "api"
    dependency = value.get("dependency") if isinstance(value, dict) else None
    return dependency if isinstance(dependency, str) and len(dependency.encode()) <= 255 else "api"


def judge(source: str, body: bytes, content_type: str | None) -> str | None:
    """The reason the wire decoder gives, which Janus must put on the message it sets aside."""
    try:
        if source == "intake":
            message, _ = decode_intake(body, content_type, CAP, routing_key=routing_key_of(body))
            return None if message.dependency in DEPENDENCIES else "unknown_dependency"
        decode_result(body, content_type)
    except ProtocolError as exc:
        return exc.reason
    except Exception:
        return "undecodable"  # Janus sets aside what its decoder cannot digest
    return "unknown_job"  # generated results name no job in flight (a ghost or a finished job)


@pytest.fixture
async def world(database: str, vhost: str) -> AsyncIterator[World]:
    config = make_config(database, vhost, DEPENDENCIES, max_payload_bytes=CAP)
    log = RecordLog()
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed, "mail": succeed}, on_record=log.append)
        await worker.start()
        connection = await aio_pika.connect(vhost)
        channel = await connection.channel(publisher_confirms=True)
        consuming = await connection.channel()
        rejected = await consuming.get_queue(topology.REJECTED_QUEUE, ensure=True)
        world = World(
            intake=await channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True),
            results=await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True),
            log=log,
            database=database,
            completed=lambda: (
                service.metrics.registry.get_sample_value(
                    "janus_job_events_total", {"source": "result", "verdict": "succeeded"}
                )
                or 0.0
            ),
        )
        await rejected.consume(world.on_rejected)
        yield world
        await worker.stop()
        await connection.close()
        assert service.leading.is_set(), "Janus stayed up and leading"
    report = audit(log.records, policies(config), expected_jobs=world.finished)
    assert report.ok, report.summary()


def by_hand(source: str, body: bytes, content_type: str | None) -> str | None:
    for case_body, case_type, reason, _ in NASTY_INTAKE if source == "intake" else NASTY_RESULTS:
        if (case_body, case_type) == (body, content_type):
            return reason
    raise AssertionError(f"not a hand-written case: {body[:60]!r}")


def test_the_hand_written_cases_are_many_and_distinct() -> None:
    assert len(NASTY_INTAKE) + len(NASTY_RESULTS) >= 30
    keys = [(body, content_type) for body, content_type, _, _ in NASTY_INTAKE + NASTY_RESULTS]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(("body", "content_type", "reason", "probe"), NASTY_INTAKE + NASTY_RESULTS)
def test_the_decoder_agrees_with_each_hand_written_case(
    body: bytes, content_type: str | None, reason: str, probe: str
) -> None:
    source = "results" if (body, content_type, reason, probe) in NASTY_RESULTS else "intake"
    assert judge(source, body, content_type) == reason, probe


async def test_hand_written_nasty_messages_are_set_aside_with_their_reason(world: World) -> None:
    await world.round(
        [(body, content_type) for body, content_type, _, _ in NASTY_INTAKE],
        [(body, content_type) for body, content_type, _, _ in NASTY_RESULTS],
        by_hand,
    )


# -- generated ----------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
wrong_types = st.sampled_from([None, 0, -1, 1.5, True, [], {}, [1], {"a": 1}, "", "1"])
content_types = st.sampled_from(
    [JSON, JSON, JSON, None, "application/json; charset=utf-8", "text/plain", "APPLICATION/JSON"]
)
depths = st.integers(1, 1500)


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # allow_nan: NaN and Infinity are written, as a careless peer would


@st.composite
def near_valid_intake(draw: st.DrawFn) -> bytes:
    message: dict[str, object] = {
        "job_id": "@ID@",
        "dependency": draw(st.sampled_from(["api", "mail"])),
        "scope": draw(st.sampled_from(["default", "tenant-a", "t" * 200])),
        "payload": draw(json_values),
    }
    mutation = draw(
        st.sampled_from(
            [
                "none",
                "drop",
                "wrong type",
                "odd id",
                "odd scope",
                "odd dependency",
                "huge payload",
                "extra",
                "wrap",
            ]
        )
    )
    key = draw(st.sampled_from(["job_id", "dependency", "scope", "payload"]))
    if mutation == "drop":
        del message[key]
    elif mutation == "wrong type":
        message[key] = draw(wrong_types)
    elif mutation == "odd id":
        message["job_id"] = "@ID@" + draw(st.text(max_size=250))
    elif mutation == "odd scope":
        message["scope"] = draw(st.text(max_size=250))
    elif mutation == "odd dependency":
        message["dependency"] = draw(st.text(max_size=12))
    elif mutation == "huge payload":
        message["payload"] = "y" * draw(st.integers(CAP - 20, 12_000))
    elif mutation == "extra":
        message[draw(st.text(max_size=8))] = draw(json_values)
    elif mutation == "wrap":
        return dumps([message])
    return dumps(message)


def deep_intake(depth: int) -> bytes:
    return b'{"job_id":"@ID@","dependency":"api","payload":' + b"[" * depth + b"]" * depth + b"}"


intake_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(dumps),
    near_valid_intake(),
    near_valid_intake(),
    depths.map(deep_intake),
    depths.map(lambda d: b"[" * d),
    st.integers(0, 20_000).map(
        lambda n: b'{"job_id":"@ID@","dependency":"api","payload":"' + b"z" * n + b'"}'
    ),
)


@st.composite
def near_valid_result(draw: st.DrawFn) -> bytes:
    message: dict[str, object] = {
        "job_id": draw(st.sampled_from(["@PREV@", "ghost", "never-seen"])),
        "attempt": draw(st.integers(1, 5)),
        "outcome": draw(st.sampled_from(["success", "failure"])),
    }
    mutation = draw(st.sampled_from(["none", "drop", "wrong type", "odd id", "error", "retry_after", "huge"]))
    key = draw(st.sampled_from(["job_id", "attempt", "outcome"]))
    if mutation == "drop":
        del message[key]
    elif mutation == "wrong type":
        message[key] = draw(wrong_types | st.integers(-(2**40), 2**40) | st.text(max_size=10))
    elif mutation == "odd id":
        message["job_id"] = draw(st.text(max_size=250))
    elif mutation == "error":
        message["error"] = draw(st.text(max_size=3000) | wrong_types)
    elif mutation == "retry_after":
        message["retry_after"] = draw(st.floats() | wrong_types | st.integers())
    elif mutation == "huge":
        message["error"] = "e" * draw(st.integers(1000, 30_000))
    return dumps(message)


result_bodies = st.one_of(
    st.binary(max_size=100), json_values.map(dumps), near_valid_result(), near_valid_result()
)


async def test_generated_hostile_messages_between_valid_jobs(world: World) -> None:
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(
        intake_messages=st.lists(st.tuples(intake_bodies, content_types), min_size=1, max_size=8),
        result_messages=st.lists(st.tuples(result_bodies, content_types), max_size=6),
    )
    def one_batch(
        intake_messages: list[tuple[bytes, str | None]], result_messages: list[tuple[bytes, str | None]]
    ) -> None:
        # Hypothesis drives from a thread; Janus and the broker clients live on the test's loop.
        future = asyncio.run_coroutine_threadsafe(world.round(intake_messages, result_messages, judge), loop)
        future.result(timeout=60)

    await asyncio.to_thread(one_batch)
    assert len(world.finished) >= EXAMPLES * 2
