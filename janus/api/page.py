"""The live status page at `/`: static files served by Janus itself (no CDN: it works offline).

The page polls GET /status (the same picture as `janus status`) and asks GET /why/JOB_ID; it
holds no state on the server. Files are read once, at import, from janus/api/static/.
"""

from __future__ import annotations

from importlib import resources

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page's files by URL path; nothing else under /static/ is served.
FILES = {"/": "index.html", "/static/app.js": "app.js", "/static/style.css": "style.css"}
_CACHE: dict[str, bytes] = {}


def asset(path: str) -> tuple[str, bytes] | None:
    """(content type, body) of the page file at URL `path`, or None if it is not one."""
    name = FILES.get(path)
    if name is None:
        return None
    body = _CACHE.get(name)
    if body is None:
        body = _CACHE[name] = (resources.files("janus.api") / "static" / name).read_bytes()
    return TYPES[name[name.rindex(".") :]], body


HEADERS = [
    ("Cache-Control", "no-cache"),
    # Nothing but this page's own files and its own API: no inline script, no other origin.
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
]
