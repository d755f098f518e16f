"""The review app's guard, in front of every request (pure ASGI), and its one error shape.

- ``Host`` must name the loopback address the app is bound to (no DNS rebinding), unless
  the app was started for other hosts on purpose;
- every ``/api/`` request carries the session token: the ``X-Smartset-Token`` header, or,
  for reads only (images in ``<img>`` tags), a ``token`` query parameter; a request that
  changes state needs the header, so a form posted from another site cannot; a wrong or
  missing token gets 403;
- a state-changing request with an ``Origin`` of another site gets 403;
- bodies larger than the limit get 413, read no further;
- every response gets a strict Content-Security-Policy (scripts and styles only from the
  app itself, nothing from elsewhere), ``nosniff``, no referrer and no framing.

Every API error is ``{"error": {"status", "code", "message", "detail"}}``.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs

__all__ = ["Guard", "error_body", "ERROR_CODES", "TOKEN_HEADER"]

TOKEN_HEADER = "x-smartset-token"
ERROR_CODES = {400: "bad_request", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error"}
_SAFE_METHODS = {"GET", "HEAD"}
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def error_body(status: int, message: str, detail=None, code: str | None = None) -> dict:
    """The one error envelope of the JSON API."""
    return {"error": {"status": status, "code": code or ERROR_CODES.get(status, "error"),
                      "message": message, "detail": detail}}


async def _send_error(send, status: int, message: str, detail=None) -> None:
    body = json.dumps(error_body(status, message, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: host, token, origin and size checks, and security headers."""

    def __init__(self, app, *, token: str, allowed_hosts: set[str] | None, max_body: int):
        self.app = app
        self.token = token.encode()
        self.allowed_hosts = allowed_hosts  # None: any (started for other hosts on purpose)
        self.max_body = max_body

    def _host_ok(self, host: str) -> bool:
        if self.allowed_hosts is None:
            return True
        if host.startswith("["):  # [::1]:port
            name = host[: host.find("]") + 1] if "]" in host else host
        else:
            name = host.split(":", 1)[0]
        return name.lower() in self.allowed_hosts

    def _token_ok(self, scope, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(TOKEN_HEADER.encode())
        if given is None and scope["method"] in _SAFE_METHODS:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            given = values[0].encode() if values else None
        return given is not None and secrets.compare_digest(given, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in SECURITY_HEADERS if h[0] not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        if not self._host_ok(host):
            return await _send_error(send, 403, f"Host {host!r} is not allowed: open the URL "
                                                f"'smartset review' printed.")
        path, method = scope["path"], scope["method"]
        if path.startswith("/api/") or path == "/api":
            if not self._token_ok(scope, headers):
                how = ("the X-Smartset-Token header" if method not in _SAFE_METHODS
                       else "the X-Smartset-Token header or ?token=")
                return await _send_error(send, 403, f"Missing or wrong session token: send it "
                                                    f"in {how} (it is in the URL "
                                                    f"'smartset review' printed).")
            origin = headers.get(b"origin")
            if method not in _SAFE_METHODS and origin is not None:
                origin_host = origin.decode("latin-1").split("://", 1)[-1]
                if origin_host != host:
                    return await _send_error(send, 403, f"Requests from {origin.decode()!r} "
                                                        f"are not allowed.")
        if method in _SAFE_METHODS:
            return await self.app(scope, receive, send_with_headers)

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _send_error(send, 413, f"Request body too large: at most "
                                                f"{self.max_body} bytes.")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await _send_error(send, 413, f"Request body too large: at most "
                                                    f"{self.max_body} bytes.")
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send_with_headers)
