"""A cluster's nodes as Janus's amqp_url: a list in the policy file, or one string of URLs."""

from __future__ import annotations

import pytest

from janus.config import parse_config
from janus.errors import ConfigError
from janus.urls import redact, split_urls

NODES = ["amqp://janus:s3cret@rabbit-1:5672/janus", "amqp://janus:s3cret@rabbit-2:5672/janus"]


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        (NODES[0], NODES[:1]),  # one URL: a list of one
        (",".join(NODES), NODES),  # comma-separated
        (" , ".join(NODES) + ",", NODES),  # spaces and a trailing comma
        ("\n".join(NODES), NODES),  # one a line (an environment variable from a file)
    ],
)
def test_split_urls(text: str, urls: list[str]) -> None:
    assert split_urls(text) == urls


def test_the_policy_takes_a_list_of_nodes_and_checks_each_port() -> None:
    config = parse_config({"amqp_url": NODES, "dependencies": {"api": {}}}, env={})
    assert split_urls(config.amqp_url) == NODES
    with pytest.raises(ConfigError, match="invalid port 'x'"):
        parse_config({"amqp_url": [NODES[0], "amqp://h:x/"], "dependencies": {"api": {}}}, env={})


def test_the_environment_gives_several_nodes_too() -> None:
    config = parse_config({"dependencies": {"api": {}}}, env={"JANUS_AMQP_URL": ",".join(NODES)})
    assert split_urls(config.amqp_url) == NODES


def test_no_password_of_any_node_is_shown() -> None:
    shown = redact(",".join(NODES))
    assert "s3cret" not in shown
    assert shown.count("janus:***@") == 2
