"""Finding (or starting) RabbitMQ and PostgreSQL for the tests, and isolating each test.

Local services are preferred. Where none answers and a Docker engine works, they
are started with testcontainers. Where neither is possible the integration tests
skip on a laptop, but fail under CI=true: CI must never pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import asyncpg

from janus.store.migrate import migrate


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass
class Services:
    """Where the services are, and how to make an isolated vhost / database on them."""

    pg_dsn_base: str  # without database name, e.g. postgresql://postgres@127.0.0.1:5432
    amqp_base: str  # without vhost, e.g. amqp://guest:guest@127.0.0.1:5672
    rabbitmqctl: Sequence[str]  # how to run rabbitmqctl (locally or in a container)
    template: str = ""
    _containers: list[object] = field(default_factory=list)

    def pg_dsn(self, database: str) -> str:
        return f"{self.pg_dsn_base}/{database}"

    def amqp_url(self, vhost: str) -> str:
        return f"{self.amqp_base}/{quote(vhost, safe='')}"

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.rabbitmqctl, *args], check=True, capture_output=True, timeout=60)

    async def actl(self, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *self.rabbitmqctl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}{out.decode()}")

    async def create_vhost(self, name: str) -> None:
        await self.actl("add_vhost", name)
        await self.actl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    async def delete_vhost(self, name: str) -> None:
        await self.actl("delete_vhost", name)

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.pg_dsn("postgres"))

    async def create_template(self) -> None:
        """A migrated database that each test's database is copied from (fast)."""
        self.template = f"janus_template_{uuid.uuid4().hex[:8]}"
        admin = await self.admin()
        try:
            await admin.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await admin.close()
        connection = await asyncpg.connect(self.pg_dsn(self.template))
        try:
            await migrate(connection)
        finally:
            await connection.close()

    async def create_database(self, name: str, *, from_template: bool = True) -> None:
        admin = await self.admin()
        try:
            template = f' TEMPLATE "{self.template}"' if from_template and self.template else ""
            await admin.execute(f'CREATE DATABASE "{name}"{template}')
        finally:
            await admin.close()

    async def drop_database(self, name: str) -> None:
        admin = await self.admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

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
            pg_dsn_base=f"postgresql://postgres@{pg_host}:5432",
            amqp_base=f"amqp://guest:guest@{amqp_host}:5672",
            rabbitmqctl=["rabbitmqctl"],
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
    container_id = rabbit.get_wrapped_container().id
    services = Services(
        pg_dsn_base=pg, amqp_base=amqp, rabbitmqctl=["docker", "exec", container_id, "rabbitmqctl"]
    )
    services._containers.extend([postgres, rabbit])
    return services
