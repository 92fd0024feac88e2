"""Finding (or starting) RabbitMQ and PostgreSQL for the tests, and isolating each test.

Local services are preferred. Where none answers and a Docker engine works, they
are started with testcontainers. Where neither is possible the integration tests
skip on a laptop, but fail under CI=true: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field

import asyncpg

from janus.local_services import LocalServices
from janus.store.migrate import migrate


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass
class Services:
    """The local services (janus.local_services does the admin) and a migrated template database."""

    local: LocalServices
    template: str = ""
    _containers: list[object] = field(default_factory=list)

    def pg_dsn(self, database: str) -> str:
        return self.local.pg_url(database)

    def amqp_url(self, vhost: str) -> str:
        return self.local.amqp_url(vhost)

    async def create_vhost(self, name: str) -> None:
        await self.local.create_vhost(name)

    async def delete_vhost(self, name: str) -> None:
        await self.local.delete_vhost(name)

    async def create_template(self) -> None:
        """A migrated database that each test's database is copied from (fast)."""
        self.template = f"janus_template_{uuid.uuid4().hex[:8]}"
        await self.local.create_database(self.template)
        connection = await asyncpg.connect(self.pg_dsn(self.template))
        try:
            await migrate(connection)
        finally:
            await connection.close()

    async def create_database(self, name: str, *, from_template: bool = True) -> None:
        template = self.template if from_template and self.template else None
        await self.local.create_database(name, template=template)

    async def drop_database(self, name: str) -> None:
        await self.local.drop_database(name)

    def stop(self) -> None:
        for container in self._containers:
            container.stop()  # type: ignore[attr-defined]


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def discover() -> Services | None:
    pg_host = os.environ.get("JANUS_TEST_PG_HOST", "127.0.0.1")
    amqp_host = os.environ.get("JANUS_TEST_AMQP_HOST", "127.0.0.1")
    if reachable(pg_host, 5432) and reachable(amqp_host, 5672) and shutil.which("rabbitmqctl"):
        return Services(
            local=LocalServices(
                pg_base=f"postgresql://postgres@{pg_host}:5432",
                amqp_base=f"amqp://guest:guest@{amqp_host}:5672",
            )
        )
    if not _docker_works():
        return None
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    postgres = PostgresContainer("postgres:15", username="postgres", password="postgres").start()
    rabbit = RabbitMqContainer("rabbitmq:3.10").start()
    pg = (
        f"postgresql://postgres:postgres@{postgres.get_container_host_ip()}:{postgres.get_exposed_port(5432)}"
    )
    amqp = f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}"
    services = in_containers(pg, amqp, rabbit.get_wrapped_container().id)
    services._containers.extend([postgres, rabbit])
    return services


def in_containers(pg_base: str, amqp_base: str, rabbit_container: str) -> Services:
    """Services in Docker containers: the broker administered through `docker exec`."""
    return Services(
        local=LocalServices(
            pg_base=pg_base,
            amqp_base=amqp_base,
            rabbitmqctl=("docker", "exec", rabbit_container, "rabbitmqctl"),
        )
    )
