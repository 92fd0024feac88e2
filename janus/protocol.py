"""The wire contract (docs/protocol.md): the three JSON messages and their validation.

Shared by the service and the client SDK so both sides agree byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
)

from janus.core.jobs import Admission, Job, JobState
from janus.errors import ProtocolError

CONTENT_TYPE = "application/json"
# json.dumps writes U+0000 as \u0000; an even run of backslashes before it is escaped backslashes.
_NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")
MAX_ID_LENGTH = 200
MAX_ERROR_LENGTH = 2000
# Room for everything around the payload: three identifiers of up to 200 characters
# (up to 6 escaped bytes each), field names, and whitespace.
ENVELOPE_BYTES = 8 * 1024

# A result is small: its fields, and an error the SDK truncates to MAX_ERROR_LENGTH characters
# (up to 6 bytes each when escaped). Anything larger is refused before parsing.
MAX_RESULT_BYTES = ENVELOPE_BYTES + 6 * MAX_ERROR_LENGTH
MAX_ATTEMPT = 2**31 - 1  # PostgreSQL integer: no attempt number is larger

# Identifiers end up in logs, metrics and SQL: no control characters, no line or paragraph
# separators (they split a log line) and no bidirectional overrides (they disguise one).
Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$",
    ),
]


# Said instead of the pattern itself, which is unreadable.
_IDENTIFIER_PATTERN = {
    "string_pattern_mismatch": "must not contain control characters, line or paragraph separators, "
    "or bidirectional overrides"
}


class _Wire(BaseModel):
    # Strict: "attempt": "1" is a type error, not a silent coercion. Unknown fields
    # are ignored so that the protocol can grow without breaking old peers.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


def _finite_number(value: object) -> object:
    # JSON has one number type: accept 5 as well as 5.0, but never NaN or infinity.
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# A job's cost in units: what its dependency's unit limits count.
Cost = Annotated[float, BeforeValidator(_finite_number), Field(ge=0)]


class IntakeMessage(_Wire):
    job_id: Identifier
    dependency: Identifier
    scope: Identifier = "default"
    payload: JsonValue = None
    cost: Cost = 1.0  # the estimate, charged at each admission in the dependency's unit limits


class ReadyMessage(_Wire):
    job_id: str
    dependency: str
    scope: str
    payload: JsonValue = None
    attempt: int  # the admission's sequence number: fencing; echoed in the result
    admitted_at: float
    expires_at: float
    lease_expires_at: float | None = None
    # The job's tries in its current life (failed attempts + 1) and the most it gets; absent
    # from a Janus older than these fields. `attempt` also counts admissions nobody took.
    try_number: int | None = None
    max_attempts: int | None = None


class ResultMessage(_Wire):
    job_id: Identifier
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    outcome: Literal["success", "failure"]
    error: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    # Adaptive limits' signals (docs/protocol.md): the dependency said "slow down"; the call's seconds.
    throttled: bool = False
    duration: float | None = Field(default=None, ge=0)
    cost: Cost | None = None  # the attempt's actual units: settled in place of the estimate

    @field_validator("retry_after", "duration", mode="before")
    @classmethod
    def _int_seconds(cls, value: object) -> object:
        # JSON has one number type: accept 5 as well as 5.0, but never NaN or infinity.
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("seconds must be a finite number")
        return value

    @field_validator("error", mode="after")
    @classmethod
    def _bounded(cls, value: str | None) -> str | None:
        # Stored as the job's last error: PostgreSQL text cannot hold U+0000.
        return value[:MAX_ERROR_LENGTH].replace("\x00", "\ufffd") if value is not None else None


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    if content_type.split(";", 1)[0].strip().lower() != CONTENT_TYPE:
        raise ProtocolError("wrong_content_type", f"expected {CONTENT_TYPE}, got {content_type!r}")


def _explain(error: ValidationError) -> ProtocolError:
    first = error.errors()[0]
    if first["type"] in ("json_invalid", "json_type"):
        return ProtocolError("malformed_json", first["msg"])
    if first["type"] in ("model_type", "model_attributes_type"):
        return ProtocolError("not_an_object", "the message must be a JSON object")
    details = "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'message'}: {_IDENTIFIER_PATTERN.get(item['type'], item['msg'])}"
        for item in error.errors()[:5]
    )
    return ProtocolError("invalid_fields", details)


def decode_intake(
    body: bytes, content_type: str | None, max_payload_bytes: int, *, routing_key: str | None = None
) -> tuple[IntakeMessage, str | None]:
    """The validated intake message and its payload as JSON text (None when absent).

    With its delivery's `routing_key`: a body whose `dependency` is not that key is refused
    (`routing_mismatch`), since the broker's per-dependency producer permissions judge the key.
    A missing `content_type` is taken as JSON (many clients set none); any other is refused.
    """
    _check_content_type(content_type)
    if len(body) > max_payload_bytes + ENVELOPE_BYTES:
        # Refused before parsing: a huge message must not cost a huge parse.
        raise ProtocolError("message_too_large", f"{len(body)} bytes; the payload cap is {max_payload_bytes}")
    try:
        message = IntakeMessage.model_validate_json(body)
    except ValidationError as exc:
        raise _explain(exc) from None
    if routing_key is not None and routing_key != message.dependency:
        raise ProtocolError(
            "routing_mismatch",
            f"published with routing key {routing_key!r} for dependency {message.dependency!r}",
        )
    if message.payload is None:
        return message, None
    try:
        # allow_nan=False: Python's parser accepts NaN and Infinity, JSON (and PostgreSQL's jsonb) do not.
        payload_text = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ProtocolError("invalid_fields", "payload: NaN and Infinity are not JSON numbers") from None
    if _NUL_ESCAPE.search(payload_text):
        # PostgreSQL's jsonb cannot store U+0000; refusing it here keeps it from failing a whole batch.
        raise ProtocolError("invalid_fields", "payload: strings must not contain U+0000")
    if len(payload_text.encode()) > max_payload_bytes:
        raise ProtocolError("payload_too_large", f"payload over {max_payload_bytes} bytes")
    return message, payload_text


def check_identifiers(*, job_id: str, dependency: str, scope: str) -> None:
    """Raise ProtocolError (Janus's reason) if Janus would set aside a job with these identifiers."""
    try:
        IntakeMessage(job_id=job_id, dependency=dependency, scope=scope)
    except ValidationError as exc:
        raise _explain(exc) from None


def encode_checked_intake(
    *,
    job_id: str,
    dependency: str,
    scope: str,
    payload: JsonValue,
    max_payload_bytes: int | None = None,
    cost: float | None = None,
) -> bytes:
    """The intake message, or ProtocolError with the reason Janus would set it aside for (the
    payload cap is checked only if given: it is Janus's configuration; so are `max_cost` and the
    unit limits a cost must fit)."""
    try:
        body = encode_intake(job_id=job_id, dependency=dependency, scope=scope, payload=payload, cost=cost)
    except ValueError:
        raise ProtocolError(
            "invalid_fields", "payload or cost: NaN and Infinity are not JSON numbers"
        ) from None
    decode_intake(body, CONTENT_TYPE, max_payload_bytes if max_payload_bytes is not None else len(body))
    return body


def decode_result(body: bytes, content_type: str | None) -> ResultMessage:
    _check_content_type(content_type)
    if len(body) > MAX_RESULT_BYTES:
        raise ProtocolError("message_too_large", f"{len(body)} bytes; a result is at most {MAX_RESULT_BYTES}")
    try:
        return ResultMessage.model_validate_json(body)
    except ValidationError as exc:
        raise _explain(exc) from None


def decode_returned(body: bytes) -> tuple[str, int]:
    """A ready message that came back unused (dead-lettered to janus.returned: expired in its
    queue, or rejected by a worker): the job_id and attempt of that admission."""
    try:
        message = json.loads(body)
        job_id, attempt = message["job_id"], message["attempt"]
        if not isinstance(job_id, str) or not isinstance(attempt, int):
            raise TypeError("job_id must be a string and attempt an integer")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError("malformed_returned", str(exc)) from None
    return job_id, attempt


def decode_ready(body: bytes) -> ReadyMessage:
    try:
        return ReadyMessage.model_validate_json(body)
    except ValidationError as exc:
        raise _explain(exc) from None


def encode_ready(admission: Admission) -> bytes:
    return json.dumps(
        {
            "job_id": admission.job_id,
            "dependency": admission.dependency,
            "scope": admission.scope,
            "payload": admission.payload,
            "attempt": admission.attempt,
            "admitted_at": admission.admitted_at,
            "expires_at": admission.expires_at,
            "lease_expires_at": admission.lease_deadline,
            "try_number": admission.failures + 1,
            "max_attempts": admission.max_attempts,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def encode_intake(
    *, job_id: str, dependency: str, scope: str, payload: JsonValue, cost: float | None = None
) -> bytes:
    body: dict[str, object] = {"job_id": job_id, "dependency": dependency, "scope": scope, "payload": payload}
    if cost is not None:
        body["cost"] = cost
    return json.dumps(
        body,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()


def encode_result(
    *,
    job_id: str,
    attempt: int,
    outcome: Literal["success", "failure"],
    error: str | None = None,
    retry_after: float | None = None,
    throttled: bool = False,
    duration: float | None = None,
    cost: float | None = None,
) -> bytes:
    body: dict[str, object] = {"job_id": job_id, "attempt": attempt, "outcome": outcome}
    if cost is not None:
        body["cost"] = cost
    if error is not None:
        body["error"] = error[:MAX_ERROR_LENGTH]
    if retry_after is not None:
        body["retry_after"] = retry_after
    if throttled:
        body["throttled"] = True
    if duration is not None:
        body["duration"] = round(duration, 6)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# -- outcomes (Janus → janus.outcomes, routing key "<dependency>.<outcome>") ----------------


class OutcomeMessage(_Wire):
    """A job's terminal outcome, for producers who subscribe (docs/protocol.md)."""

    job_id: str
    dependency: str
    scope: str
    outcome: Literal["succeeded", "dead"]
    attempt: int  # admissions made for the job (its last attempt's number)
    failures: int  # failed attempts in its last life (max_attempts when dead)
    finished_at: float
    error: str | None = None  # dead: the last attempt's error


def encode_outcome(job: Job) -> bytes:
    """The outcome message of a job in a terminal state."""
    if not job.state.terminal or job.finished_at is None:
        raise ValueError(f"job {job.job_id!r} has not finished")
    body: dict[str, object] = {
        "job_id": job.job_id,
        "dependency": job.dependency,
        "scope": job.scope,
        "outcome": job.state.value,
        "attempt": job.attempt,
        "failures": job.failures,
        "finished_at": job.finished_at,
    }
    if job.state is JobState.DEAD and job.last_error is not None:
        body["error"] = job.last_error[:MAX_ERROR_LENGTH]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_outcome(body: bytes) -> OutcomeMessage:
    try:
        return OutcomeMessage.model_validate_json(body)
    except ValidationError as exc:
        raise _explain(exc) from None
