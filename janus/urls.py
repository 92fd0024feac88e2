"""What error messages may say about a connection URL: never its password."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit


def split_urls(urls: str) -> list[str]:
    """Several AMQP URLs (a cluster's nodes) in one string, separated by commas or whitespace
    (a comma inside a URL is percent-encoded, %2C). One URL is a list of one."""
    return [url for url in re.split(r"[\s,]+", urls.strip()) if url]


def redact(url: str) -> str:
    """The URL (or each of several AMQP URLs) with its password replaced by ***, for messages and logs."""
    if url.count("://") > 1:
        return ",".join(redact(one) for one in split_urls(url))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable: say nothing of what it holds but its scheme
        return url.split(":", 1)[0] + "://…"
    if password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def url_user(url: str) -> str | None:
    try:
        user = urlsplit(url).username
    except ValueError:
        return None
    return unquote(user) if user else None


def url_path_name(url: str) -> str | None:
    """The URL's path without its leading slash: an AMQP vhost, a PostgreSQL database."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return unquote(path[1:]) if len(path) > 1 else None


def check_port(url: str) -> None:
    """Raise ValueError, naming the problem, if the URL's port is not a number in range."""
    parts = urlsplit(url)
    for host in parts.netloc.rpartition("@")[2].split(","):  # libpq accepts several hosts
        _, colon, port = host.rpartition(":") if not host.endswith("]") else ("", "", "")
        if colon and port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"invalid port {port!r}")
