"""The optional bearer token that guards the HTTP API (JANUS_HTTP_TOKEN_FILE).

Every path but the two health checks needs it: `Authorization: Bearer TOKEN` (Prometheus'
`authorization.credentials_file`, `janus status`), or HTTP Basic with the token as the password
(what a browser sends after its login prompt, so the status page works without a script of ours
holding the token). Compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no token
# Asks a browser for the token (any user name); a client that sends Bearer ignores it.
CHALLENGE = ("WWW-Authenticate", 'Basic realm="janus", charset="UTF-8"')


class TokenGuard:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the HTTP token is empty")
        self._token = token.encode()

    def allows(self, path: str, authorization: str | None) -> bool:
        if path in OPEN_PATHS:
            return True
        offered = _offered(authorization or "")
        return offered is not None and hmac.compare_digest(offered, self._token)


def _offered(authorization: str) -> bytes | None:
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the port on this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")
