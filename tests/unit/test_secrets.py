"""Secrets from files: JANUS_AMQP_URL_FILE and JANUS_DATABASE_URL_FILE (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from janus.config import Settings, load_config
from janus.errors import ConfigError

FILE_URLS = 'amqp_url = "amqp://file/"\ndatabase_url = "postgresql://file/db"\n[dependencies.api]\n'


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "janus.toml"
    path.write_text(FILE_URLS)
    return path


def test_urls_come_from_the_named_files_without_their_newline(tmp_path: Path) -> None:
    env = {
        "JANUS_AMQP_URL_FILE": secret(tmp_path, "amqp", "amqps://janus:s3cret@mq:5671/janus\n"),
        "JANUS_DATABASE_URL_FILE": secret(
            tmp_path, "pg", "postgresql://janus:pw@db/janus?sslmode=verify-full\n"
        ),
    }
    config = load_config(config_file(tmp_path), env=env)
    assert config.amqp_url == "amqps://janus:s3cret@mq:5671/janus"
    assert config.database_url == "postgresql://janus:pw@db/janus?sslmode=verify-full"


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"JANUS_AMQP_URL": "amqp://env/", "JANUS_AMQP_URL_FILE": "/x"}, "not both"),  # ambiguous
        (
            {"JANUS_DATABASE_URL_FILE": "/nonexistent/secret"},
            "JANUS_DATABASE_URL_FILE: cannot read",
        ),  # missing
    ],
)
def test_bad_secret_variables_are_named(tmp_path: Path, env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config(config_file(tmp_path), env=env)


def test_an_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        load_config(config_file(tmp_path), env={"JANUS_AMQP_URL_FILE": secret(tmp_path, "amqp", "\n")})


def test_settings_read_the_files_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JANUS_AMQP_URL", raising=False)
    monkeypatch.setenv("JANUS_AMQP_URL_FILE", secret(tmp_path, "amqp", "amqp://from-file/\n"))
    assert Settings().amqp_url == "amqp://from-file/"
    monkeypatch.setenv("JANUS_AMQP_URL", "amqp://direct/")
    with pytest.raises(ConfigError, match="not both"):
        Settings()
