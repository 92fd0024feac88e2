"""Shared fixtures: real services, one database and one vhost per test."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.services import Services, discover


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    found = discover()
    if found is None:
        message = "RabbitMQ and PostgreSQL are not reachable (and no Docker engine to start them)"
        if _in_ci():
            pytest.fail(message + ": CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    asyncio.run(found.create_template())
    yield found
    asyncio.run(found.drop_database(found.template))
    found.stop()


def _slug(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30]
    return f"{name}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def database(services: Services, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only; its DSN."""
    name = f"jt_{_slug(request)}"
    await services.create_database(name)
    yield services.pg_dsn(name)
    await services.drop_database(name)


@pytest.fixture
async def vhost(services: Services, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh RabbitMQ vhost for this test only; its AMQP URL."""
    name = f"janus-test-{_slug(request)}"
    await services.create_vhost(name)
    yield services.amqp_url(name)
    await services.delete_vhost(name)
