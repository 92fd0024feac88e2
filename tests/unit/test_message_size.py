"""Memory bounded by size: prefetch counts bounded in bytes, and oversized messages set aside
truncated (the end-to-end test is in tests/integration/test_hostile_input.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from janus import config, protocol
from janus.service.app import PREFETCH, PREFETCH_BYTES, RESULTS_PREFETCH, prefetch
from janus.service.tick import TRUNCATED_BODY_BYTES, SetAside, set_aside_body


def test_the_configs_room_is_the_protocols() -> None:
    # janus.config may not import janus.protocol: the two copies must agree.
    assert config.MESSAGE_ENVELOPE_BYTES == protocol.ENVELOPE_BYTES
    assert config.LARGEST_RESULT_BYTES == protocol.MAX_RESULT_BYTES


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [
        (PREFETCH, 128 * 1024, 256),  # the default size: 32 MiB of them per channel
        (RESULTS_PREFETCH, 128 * 1024, 256),
        (PREFETCH, 8 * 1024, PREFETCH),  # small messages: the count bounds first
        (PREFETCH, 64 * 1024 * 1024, 1),  # huge ones: still one at a time, never none
    ],
)
def test_prefetch_bounds_bytes_as_well_as_count(count: int, size: int, expected: int) -> None:
    assert prefetch(count, size) == expected
    assert expected == 1 or expected * size <= PREFETCH_BYTES


def aside(source: str, body: bytes) -> SetAside:
    message = cast(Any, SimpleNamespace(body=body))
    return SetAside(message=message, source=source, reason="message_too_large", detail="")


@pytest.mark.parametrize(
    ("source", "size", "truncated"),
    [
        ("intake", 1024 + protocol.ENVELOPE_BYTES, False),  # at the cap: kept whole
        ("intake", 1024 + protocol.ENVELOPE_BYTES + 1, True),
        ("returned", 1024 + protocol.ENVELOPE_BYTES + 1, True),
        ("results", protocol.MAX_RESULT_BYTES, False),
        ("results", protocol.MAX_RESULT_BYTES + 1, True),
    ],
)
def test_a_message_over_its_cap_is_set_aside_truncated(source: str, size: int, truncated: bool) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    kept, original = set_aside_body(aside(source, body), max_payload_bytes=1024)
    if truncated:
        assert (kept, original) == (body[:TRUNCATED_BODY_BYTES], size)
    else:
        assert (kept, original) == (body, None)
