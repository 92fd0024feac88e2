"""The wire contract: what each decoder accepts, what it refuses, and the reason it gives.

The reasons (`ProtocolError.reason`) are part of the contract: they label the
set-aside messages and the `janus_rejected_messages_total` metric.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.core.jobs import Admission
from janus.errors import ProtocolError
from janus.protocol import (
    CONTENT_TYPE,
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    decode_intake,
    decode_ready,
    decode_result,
    encode_intake,
    encode_ready,
    encode_result,
)

CAP = 64 * 1024
JSON = "application/json"


def body(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- intake: accepted ---------------------------------------------------------

INTAKE_ACCEPTED = [
    # (body, expected (job_id, dependency, scope), expected payload text)
    (body(job_id="j1", dependency="api"), ("j1", "api", "default"), None),  # scope defaults, no payload
    (body(job_id="j1", dependency="api", scope="t-1"), ("j1", "api", "t-1"), None),  # explicit scope
    (body(job_id="j1", dependency="api", payload=None), ("j1", "api", "default"), None),  # null payload
    (
        body(job_id="j1", dependency="api", payload={"a": [1, 2.5, "é"]}),
        ("j1", "api", "default"),
        '{"a":[1,2.5,"é"]}',
    ),
    # ^ the payload is returned as compact JSON, non-ASCII kept as is
    (body(job_id="j1", dependency="api", payload=0), ("j1", "api", "default"), "0"),  # falsy but present
    (
        body(job_id="j1", dependency="api", payload=""),
        ("j1", "api", "default"),
        '""',
    ),  # empty string is a payload
    (body(job_id="x" * MAX_ID_LENGTH, dependency="api"), ("x" * MAX_ID_LENGTH, "api", "default"), None),
    # ^ exactly 200 characters
    (body(job_id="é" * MAX_ID_LENGTH, dependency="api"), ("é" * MAX_ID_LENGTH, "api", "default"), None),
    # ^ the length is in characters, not bytes
    (body(job_id="j1", dependency="api", future_field=1), ("j1", "api", "default"), None),  # unknown: ignored
    (b'  {"job_id" : "j1" ,\n "dependency":"api"}  ', ("j1", "api", "default"), None),  # whitespace
]


@pytest.mark.parametrize(("raw", "ids", "payload_text"), INTAKE_ACCEPTED)
def test_decode_intake_accepts(raw: bytes, ids: tuple[str, str, str], payload_text: str | None) -> None:
    message, text = decode_intake(raw, CONTENT_TYPE, CAP)
    assert (message.job_id, message.dependency, message.scope) == ids
    assert text == payload_text
    if text is not None:
        assert message.payload == json.loads(text)


# -- intake: refused ----------------------------------------------------------

INTAKE_REFUSED = [
    # (body, reason, a fragment the detail must contain)
    (body(job_id="x" * (MAX_ID_LENGTH + 1), dependency="api"), "invalid_fields", "job_id"),  # 201 chars
    (body(job_id="", dependency="api"), "invalid_fields", "job_id"),  # empty id
    (body(job_id="a\nb", dependency="api"), "invalid_fields", "job_id"),  # newline (log injection)
    (body(job_id="a\x00b", dependency="api"), "invalid_fields", "job_id"),  # NUL (PostgreSQL text refuses it)
    (body(job_id="a\x1f", dependency="api"), "invalid_fields", "job_id"),  # last C0 control
    (body(job_id="a\x7f", dependency="api"), "invalid_fields", "job_id"),  # DEL
    (body(job_id="j1", dependency="a\tb"), "invalid_fields", "dependency"),  # tab in the dependency
    (body(job_id="j1", dependency="api", scope="a\rb"), "invalid_fields", "scope"),  # CR in the scope
    (body(job_id="j1", dependency="api", scope=None), "invalid_fields", "scope"),  # null is not "default"
    (body(job_id="j1", dependency="api", scope=""), "invalid_fields", "scope"),  # empty scope
    (body(job_id=1, dependency="api"), "invalid_fields", "job_id"),  # a number is not a string (strict)
    (body(dependency="api"), "invalid_fields", "job_id"),  # missing job_id
    (body(job_id="j1"), "invalid_fields", "dependency"),  # missing dependency
    (b"job_id=j1&dependency=api", "malformed_json", "Invalid JSON"),  # not JSON
    (b"", "malformed_json", "Invalid JSON"),  # empty body
    (b'{"job_id":"j1","dependency":"api"', "malformed_json", "Invalid JSON"),  # truncated
    (b'{"job_id":"\xff\xfe","dependency":"api"}', "malformed_json", "Invalid JSON"),  # not UTF-8
    (b'{"job_id":"\\ud800","dependency":"api"}', "malformed_json", "Invalid JSON"),  # lone surrogate
    (b"[]", "not_an_object", "JSON object"),  # an array
    (b'"j1"', "not_an_object", "JSON object"),  # a string
    (b"42", "not_an_object", "JSON object"),  # a number
    (b"null", "not_an_object", "JSON object"),  # null
]


@pytest.mark.parametrize(("raw", "reason", "detail"), INTAKE_REFUSED)
def test_decode_intake_refuses(raw: bytes, reason: str, detail: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_intake(raw, CONTENT_TYPE, CAP)
    assert caught.value.reason == reason
    assert detail in caught.value.detail
    assert str(caught.value) == f"{reason}: {caught.value.detail}"


CONTENT_TYPES = [
    (None, True),  # missing: accepted (some clients never set it)
    ("application/json", True),  # the one we publish
    ("application/json; charset=utf-8", True),  # with a parameter
    ("Application/JSON", True),  # media types are case-insensitive
    (" application/json ;charset=utf-8", True),  # stray spaces
    ("text/plain", False),  # wrong type
    ("application/jsonl", False),  # a prefix is not a match
    ("application/x-msgpack", False),  # another encoding
    ("", False),  # present but empty
]


@pytest.mark.parametrize(("content_type", "accepted"), CONTENT_TYPES)
def test_content_type(content_type: str | None, accepted: bool) -> None:
    intake = body(job_id="j1", dependency="api")
    result = encode_result(job_id="j1", attempt=1, outcome="success")
    if accepted:
        decode_intake(intake, content_type, CAP)
        decode_result(result, content_type)
    else:
        for decode in (
            lambda: decode_intake(intake, content_type, CAP),
            lambda: decode_result(result, content_type),
        ):
            with pytest.raises(ProtocolError) as caught:
                decode()
            assert caught.value.reason == "wrong_content_type"
            assert repr(content_type) in caught.value.detail


ROUTING_KEYS = [
    # (routing key of the delivery, the body's dependency, accepted)
    ("api", "api", True),  # the key producers must use
    (None, "api", True),  # no key given to the decoder: the body alone is judged
    ("mail", "api", False),  # a producer allowed to publish for mail, naming api in the body
    ("", "api", False),  # an empty key (janus.q.intake is bound with "#", so it arrives)
    ("API", "api", False),  # keys are compared exactly, like the broker's permissions do
    ("api.x", "api", False),  # a longer topic key
]


@pytest.mark.parametrize(("routing_key", "dependency", "accepted"), ROUTING_KEYS)
def test_intake_routing_key_must_be_the_dependency(
    routing_key: str | None, dependency: str, accepted: bool
) -> None:
    raw = body(job_id="j1", dependency=dependency)
    if accepted:
        assert decode_intake(raw, JSON, CAP, routing_key=routing_key)[0].dependency == dependency
        return
    with pytest.raises(ProtocolError) as caught:
        decode_intake(raw, JSON, CAP, routing_key=routing_key)
    assert caught.value.reason == "routing_mismatch"
    assert repr(routing_key) in caught.value.detail


def test_a_body_that_does_not_parse_is_judged_before_its_routing_key() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_intake(b'{"job_id": 1}', JSON, CAP, routing_key="mail")
    assert caught.value.reason == "invalid_fields"


def test_an_omitted_payload_reaches_the_worker_as_null() -> None:
    message, payload_text = decode_intake(body(job_id="j1", dependency="api"), JSON, CAP)
    assert (message.payload, payload_text) == (None, None)
    admission = Admission(
        job_id="j1", dependency="api", scope="default", payload=None, attempt=1,
        admitted_at=1.0, expires_at=2.0, lease_deadline=10.0,
    )  # fmt: skip
    assert json.loads(encode_ready(admission))["payload"] is None  # present, null: never absent


def test_content_type_is_checked_before_the_body() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_intake(b"not json", "text/plain", CAP)
    assert caught.value.reason == "wrong_content_type"


# -- the payload cap ----------------------------------------------------------

PAYLOAD_CAP = [
    # (payload as sent, cap, accepted) — the size is the UTF-8 length of the *compact* JSON
    ("é" * 10, 22, True),  # '"' + 10 × 2 bytes + '"' = 22 bytes: exactly the cap
    ("é" * 10, 21, False),  # one byte over
    ("a" * 10, 12, True),  # ASCII: one byte each
    ({"a": 1, "b": [1, 2]}, 17, True),  # '{"a":1,"b":[1,2]}' is 17 bytes; the spaced input is longer
    ({"a": 1, "b": [1, 2]}, 16, False),  # one byte short
    ("😀", 6, True),  # 4 bytes of UTF-8 + 2 quotes, though the input may escape it as 12 characters
    ("😀", 5, False),  # ... and one byte short
    (None, 1, True),  # no payload: nothing to cap
]


@pytest.mark.parametrize(("payload", "cap", "accepted"), PAYLOAD_CAP)
def test_payload_cap_counts_bytes_of_compact_json(payload: object, cap: int, accepted: bool) -> None:
    # Sent spaced and ASCII-escaped, so that the raw body is larger than what is measured.
    raw = json.dumps({"job_id": "j1", "dependency": "api", "payload": payload}, ensure_ascii=True, indent=2)
    if accepted:
        _, text = decode_intake(raw.encode(), None, cap)
        assert text == (None if payload is None else compact(payload))
    else:
        with pytest.raises(ProtocolError) as caught:
            decode_intake(raw.encode(), None, cap)
        assert caught.value.reason == "payload_too_large"
        assert str(cap) in caught.value.detail


NON_FINITE_PAYLOADS = [
    b"NaN",  # JSON has no NaN, PostgreSQL's jsonb refuses it
    b"Infinity",  # nor infinities
    b"-Infinity",  # nor negative ones
    b"1e400",  # a finite literal that overflows a double to inf, dumped back as "Infinity"
    b'{"deep":[1,NaN]}',  # nested
]


@pytest.mark.parametrize("payload", NON_FINITE_PAYLOADS)
def test_non_finite_numbers_in_the_payload_are_refused(payload: bytes) -> None:
    raw = b'{"job_id":"j1","dependency":"api","payload":' + payload + b"}"
    with pytest.raises(ProtocolError):
        decode_intake(raw, CONTENT_TYPE, CAP)


C1_CONTROLS = ["\x80", "\x85", "\x9b", "\x9f"]  # PAD, NEL (a line break to str.splitlines), CSI, APC


@pytest.mark.parametrize("control", C1_CONTROLS)
def test_c1_control_characters_in_identifiers_are_refused(control: str) -> None:
    with pytest.raises(ProtocolError):
        decode_intake(body(job_id=f"a{control}b", dependency="api"), CONTENT_TYPE, CAP)


# -- results ------------------------------------------------------------------

RESULTS_ACCEPTED = [
    # (fields, expected (attempt, outcome, error, retry_after))
    ({"attempt": 1, "outcome": "success"}, (1, "success", None, None)),  # the minimum
    ({"attempt": 3, "outcome": "failure", "error": "boom"}, (3, "failure", "boom", None)),  # an error text
    ({"attempt": 1, "outcome": "failure", "retry_after": 5}, (1, "failure", None, 5.0)),  # int seconds
    ({"attempt": 1, "outcome": "failure", "retry_after": 2.5}, (1, "failure", None, 2.5)),  # float seconds
    ({"attempt": 1, "outcome": "failure", "retry_after": 0}, (1, "failure", None, 0.0)),  # zero: retry now
    ({"attempt": 1, "outcome": "success", "error": None, "retry_after": None}, (1, "success", None, None)),
    # ^ explicit nulls
    ({"attempt": 1, "outcome": "failure", "error": "x" * 2500}, (1, "failure", "x" * MAX_ERROR_LENGTH, None)),
    # ^ a long error is cut to 2000 characters, not refused
    ({"attempt": 1, "outcome": "success", "extra": [1]}, (1, "success", None, None)),  # unknown: ignored
]


@pytest.mark.parametrize(("fields", "expected"), RESULTS_ACCEPTED)
def test_decode_result_accepts(fields: dict[str, Any], expected: tuple[object, ...]) -> None:
    result = decode_result(body(job_id="j1", **fields), CONTENT_TYPE)
    assert result.job_id == "j1"
    assert (result.attempt, result.outcome, result.error, result.retry_after) == expected
    if result.retry_after is not None:
        assert type(result.retry_after) is float


RESULTS_REFUSED = [
    # (raw body, fragment of the detail); the reason is invalid_fields unless the body is not an object
    (body(job_id="j1", attempt="1", outcome="success"), "attempt"),  # "1" is not 1 (strict)
    (body(job_id="j1", attempt=1.0, outcome="success"), "attempt"),  # 1.0 is not an integer either
    (body(job_id="j1", attempt=True, outcome="success"), "attempt"),  # nor is true
    (body(job_id="j1", attempt=0, outcome="success"), "attempt"),  # attempts count from 1
    (body(job_id="j1", attempt=1, outcome="expired"), "outcome"),  # workers report success or failure only
    (body(job_id="j1", attempt=1, outcome="SUCCESS"), "outcome"),  # case matters
    (body(job_id="j1", attempt=1), "outcome"),  # missing outcome
    (body(job_id="j1", outcome="success"), "attempt"),  # missing attempt
    (body(job_id="j1", attempt=1, outcome="failure", retry_after=-1), "retry_after"),  # negative
    (body(job_id="j1", attempt=1, outcome="failure", retry_after=-0.001), "retry_after"),  # barely negative
    (b'{"job_id":"j1","attempt":1,"outcome":"failure","retry_after":NaN}', "retry_after"),  # NaN
    (b'{"job_id":"j1","attempt":1,"outcome":"failure","retry_after":Infinity}', "retry_after"),  # inf
    (
        b'{"job_id":"j1","attempt":1,"outcome":"failure","retry_after":1e400}',
        "retry_after",
    ),  # overflows to inf
    (body(job_id="j1", attempt=1, outcome="failure", retry_after="5"), "retry_after"),  # a string
    (body(job_id="j1", attempt=1, outcome="failure", retry_after=True), "retry_after"),  # a bool
    (body(job_id="j1", attempt=1, outcome="failure", error=5), "error"),  # error must be text
    (body(job_id="j\n1", attempt=1, outcome="success"), "job_id"),  # control character
    (body(job_id="x" * (MAX_ID_LENGTH + 1), attempt=1, outcome="success"), "job_id"),  # 201 chars
]


@pytest.mark.parametrize(("raw", "field"), RESULTS_REFUSED)
def test_decode_result_refuses(raw: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_result(raw, CONTENT_TYPE)
    assert caught.value.reason == "invalid_fields"
    assert caught.value.detail.startswith(f"{field}: "), caught.value.detail


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1]", "not_an_object"),  # an array
        (b"{", "malformed_json"),  # truncated
        (b"\x80", "malformed_json"),  # not UTF-8
    ],
)
def test_decode_result_refuses_non_messages(raw: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_result(raw, None)
    assert caught.value.reason == reason


ENCODE_RESULT = [
    # (arguments, the JSON object on the wire)
    (
        {"job_id": "j", "attempt": 1, "outcome": "success"},
        {"job_id": "j", "attempt": 1, "outcome": "success"},
    ),
    # ^ absent optionals are left out, not sent as null
    (
        {"job_id": "j", "attempt": 2, "outcome": "failure", "error": "e" * 3000, "retry_after": 1.5},
        {
            "job_id": "j",
            "attempt": 2,
            "outcome": "failure",
            "error": "e" * MAX_ERROR_LENGTH,
            "retry_after": 1.5,
        },
    ),  # the sender cuts the error too
    (
        {"job_id": "j", "attempt": 1, "outcome": "failure", "error": "", "retry_after": 0.0},
        {"job_id": "j", "attempt": 1, "outcome": "failure", "error": "", "retry_after": 0.0},
    ),  # falsy but present values are sent
]


@pytest.mark.parametrize(("arguments", "wire"), ENCODE_RESULT)
def test_encode_result(arguments: dict[str, Any], wire: dict[str, object]) -> None:
    raw = encode_result(**arguments)
    assert json.loads(raw) == wire
    decoded = decode_result(raw, CONTENT_TYPE)
    assert decoded.error == wire.get("error")
    assert decoded.retry_after == wire.get("retry_after")


# -- ready messages -----------------------------------------------------------

ADMISSIONS = [
    Admission(
        job_id="j1",
        dependency="api",
        scope="tenant-7",
        payload={"order": 42, "items": ["a", "é"], "note": None},
        attempt=3,
        admitted_at=1_700_000_000.125,
        expires_at=1_700_000_002.125,
        lease_deadline=1_700_000_030.125,
    ),  # a typical one
    Admission(
        job_id="j2",
        dependency="api",
        scope="default",
        payload=None,
        attempt=1,
        admitted_at=0.1,
        expires_at=0.30000000000000004,
        lease_deadline=1e-9,
    ),  # no payload, awkward floats must survive exactly
]


@pytest.mark.parametrize("admission", ADMISSIONS)
def test_ready_round_trip(admission: Admission) -> None:
    raw = encode_ready(admission)
    ready = decode_ready(raw)
    assert (ready.job_id, ready.dependency, ready.scope, ready.payload, ready.attempt) == (
        admission.job_id,
        admission.dependency,
        admission.scope,
        admission.payload,
        admission.attempt,
    )
    assert ready.admitted_at == admission.admitted_at
    assert ready.expires_at == admission.expires_at
    assert ready.lease_expires_at == admission.lease_deadline
    # Compact, and non-ASCII travels as UTF-8 rather than \u escapes (as every encoder here does).
    assert b'", "' not in raw
    assert b'": ' not in raw
    assert b"\\u" not in raw


READY_REFUSED = [
    # (fields changed from a valid ready message, reason)
    ({"attempt": "1"}, "invalid_fields"),  # strict: no string numbers
    ({"admitted_at": "0"}, "invalid_fields"),  # nor string times
    ({"job_id": None}, "invalid_fields"),  # no null id
]


@pytest.mark.parametrize(("change", "reason"), READY_REFUSED)
def test_decode_ready_refuses(change: dict[str, object], reason: str) -> None:
    fields = json.loads(encode_ready(ADMISSIONS[0])) | change
    with pytest.raises(ProtocolError) as caught:
        decode_ready(json.dumps(fields).encode())
    assert caught.value.reason == reason


def test_decode_ready_without_a_lease_deadline() -> None:
    fields = json.loads(encode_ready(ADMISSIONS[0]))
    del fields["lease_expires_at"]
    assert decode_ready(json.dumps(fields).encode()).lease_expires_at is None


# -- properties ---------------------------------------------------------------

# What an Identifier may hold: anything but C0 and C1 controls, DEL and lone surrogates (not encodable).
identifier_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters=[*map(chr, range(32)), *map(chr, range(0x7F, 0xA0))]
)
identifiers = st.text(identifier_chars, min_size=1, max_size=MAX_ID_LENGTH)
# U+0000 is refused on purpose (PostgreSQL cannot store it): see the NUL tests below.
json_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=["\x00"]), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(job_id=identifiers, dependency=identifiers, scope=identifiers, payload=json_values)
def test_intake_round_trips(job_id: str, dependency: str, scope: str, payload: object) -> None:
    raw = encode_intake(job_id=job_id, dependency=dependency, scope=scope, payload=payload)
    message, text = decode_intake(raw, CONTENT_TYPE, 10**7)
    assert (message.job_id, message.dependency, message.scope) == (job_id, dependency, scope)
    assert message.payload == payload
    assert text == (None if payload is None else compact(payload))


REASONS = {"wrong_content_type", "malformed_json", "not_an_object", "invalid_fields", "payload_too_large"}
field_names = st.sampled_from(["job_id", "dependency", "scope", "payload", "attempt", "other"])
wild_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=250),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
wild_bodies = st.one_of(
    st.binary(max_size=300),  # anything at all
    st.dictionaries(field_names, wild_values).map(
        lambda d: json.dumps(d).encode()
    ),  # JSON objects, NaN and all
    st.builds(
        lambda d, cut: json.dumps(d).encode()[:cut],
        st.dictionaries(field_names, wild_values),
        st.integers(0, 200),
    ),  # JSON cut short
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=wild_bodies,
    content_type=st.none() | st.sampled_from([CONTENT_TYPE, "text/plain"]) | st.text(max_size=10),
    cap=st.integers(1, 300),
)
def test_decode_intake_returns_or_raises_protocol_error(
    raw: bytes, content_type: str | None, cap: int
) -> None:
    try:
        message, text = decode_intake(raw, content_type, cap)
    except ProtocolError as exc:  # the only exception allowed out; anything else fails the test
        refused: str | None = exc.reason
    else:
        refused = None
    if refused is not None:
        assert refused in REASONS
        return
    # Whatever gets through satisfies the contract.
    for identifier in (message.job_id, message.dependency, message.scope):
        assert 1 <= len(identifier) <= MAX_ID_LENGTH
        assert not any(ord(ch) < 32 or ch == "\x7f" for ch in identifier)
    if text is None:
        assert message.payload is None
    else:
        assert len(text.encode()) <= cap
        assert json.loads(text) == message.payload or _has_nan(message.payload)


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list):
        return any(_has_nan(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nan(item) for item in value.values())
    return False


# -- what PostgreSQL could not store must be refused here, not fail a whole batch ----------

NUL_CASES = [
    # (raw payload JSON, refused?)
    (rb'"\u0000"', True),  # U+0000 itself
    (rb'{"k": ["a\u0000b"]}', True),  # nested
    (rb'{"\u0000": 1}', True),  # in a key
    (rb'"\\u0000"', False),  # an escaped backslash followed by "u0000": six harmless characters
    (rb'"\\\u0000"', True),  # an escaped backslash, then U+0000
]


@pytest.mark.parametrize(("payload", "refused"), NUL_CASES)
def test_nul_characters_in_the_payload_are_refused(payload: bytes, refused: bool) -> None:
    raw = b'{"job_id":"j1","dependency":"api","payload":' + payload + b"}"
    if refused:
        with pytest.raises(ProtocolError) as caught:
            decode_intake(raw, CONTENT_TYPE, CAP)
        assert caught.value.reason == "invalid_fields"
    else:
        _, text = decode_intake(raw, CONTENT_TYPE, CAP)
        assert text is not None
        assert "\x00" not in json.loads(text)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    return []


@given(
    payload=st.recursive(
        st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    )
)
@settings(max_examples=300, deadline=None)
def test_accepted_payload_text_never_holds_nul(payload: object) -> None:
    raw = json.dumps({"job_id": "j", "dependency": "api", "payload": payload}).encode()
    try:
        _, text = decode_intake(raw, CONTENT_TYPE, CAP)
    except ProtocolError:
        assert any("\x00" in s for s in _strings(payload))
        return
    assert not any("\x00" in s for s in _strings(json.loads(text or "null")))


def test_nul_in_a_result_error_is_replaced() -> None:
    result = decode_result(
        b'{"job_id":"j","attempt":1,"outcome":"failure","error":"a\\u0000b"}', CONTENT_TYPE
    )
    assert result.error == "a\ufffdb"


def test_a_message_far_over_the_cap_is_refused_before_parsing() -> None:
    body = b'{"job_id":"j","dependency":"api","payload":"' + b"x" * (CAP + 9000) + b'"}'
    with pytest.raises(ProtocolError) as caught:
        decode_intake(body, CONTENT_TYPE, CAP)
    assert caught.value.reason == "message_too_large"
    # Just over the payload cap, within the envelope: parsed, then refused for its payload.
    near = b'{"job_id":"j","dependency":"api","payload":"' + b"x" * CAP + b'"}'
    with pytest.raises(ProtocolError) as caught:
        decode_intake(near, CONTENT_TYPE, CAP)
    assert caught.value.reason == "payload_too_large"
