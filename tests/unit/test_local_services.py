"""Database names go into DDL unquoted by parameters: only plain names pass."""

from __future__ import annotations

import pytest

from janus.errors import JanusError
from janus.local_services import LocalServices, check_database_name
from tests.services import in_containers


@pytest.mark.parametrize(
    "name",
    [
        'x"; DROP DATABASE postgres; --',  # an injection attempt
        "postgres",  # the admin database itself
        "template1",  # a template every new database is copied from
        "1starts_with_a_digit",
        "a" * 64,  # over PostgreSQL's 63-byte identifier limit
        "janus_demo\n",  # a trailing newline must not slip through
    ],
)
def test_unsafe_database_names_are_refused(name: str) -> None:
    with pytest.raises(JanusError, match="refusing"):
        check_database_name(name)


def test_plain_names_pass_and_urls_are_built_per_vhost() -> None:
    check_database_name("janus_demo")
    local = LocalServices()
    assert local.amqp_url("janus/test") == "amqp://guest:guest@127.0.0.1:5672/janus%2Ftest"
    assert local.pg_url("janus_demo") == "postgresql://postgres@127.0.0.1:5432/janus_demo"


def test_services_in_containers_are_administered_through_docker_exec() -> None:
    # The tests' fallback where no local services answer but a Docker engine does.
    services = in_containers(
        "postgresql://postgres:pw@10.0.0.2:32768", "amqp://guest:guest@10.0.0.3:32769", "c0ffee"
    )
    assert services.pg_dsn("jt_x") == "postgresql://postgres:pw@10.0.0.2:32768/jt_x"
    assert services.amqp_url("janus-test") == "amqp://guest:guest@10.0.0.3:32769/janus-test"
    assert services.local.rabbitmqctl == ("docker", "exec", "c0ffee", "rabbitmqctl")
