"""Running the review app: a uvicorn server on 127.0.0.1 at a free port, one session token.

:func:`serve` runs until interrupted (the CLI); :func:`running_server` runs one in a
background thread for the length of a ``with`` block (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["serve", "running_server", "ReviewServer", "new_token", "review_url", "is_loopback"]


def new_token() -> str:
    """A fresh session token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def review_url(host: str, port: int, token: str) -> str:
    """The URL to open: the token rides in the fragment, which browsers never send."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/#token={token}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
    # say they are TCP; with it on, each keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(app, sock: socket.socket):
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=5, limit_concurrency=256,
                            h11_max_incomplete_event_size=64 * 1024)
    return uvicorn.Server(config)


@dataclass
class ReviewServer:
    """A review server started by :func:`running_server`."""

    url: str
    base: str
    token: str
    port: int
    host: str


def _app(workspace, token, author, host, allow_remote):
    from smartset.review.app import LOOPBACK_HOSTS, create_app

    remote = not is_loopback(host)
    if remote and not allow_remote:
        raise ValueError(f"binding to {host!r} exposes the workspace beyond this machine; "
                         f"pass allow_remote=True (the CLI's --allow-remote) to mean it")
    return create_app(workspace, token=token, author=author,
                      allowed_hosts=None if remote else LOOPBACK_HOSTS)


def serve(workspace, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          author: str | None = None, allow_remote: bool = False, on_ready=None) -> None:
    """Serve the review app until interrupted. ``port`` 0 takes a free port;
    ``on_ready(url)`` is called once the server accepts connections."""
    token = token or new_token()
    app = _app(workspace, token, author, host, allow_remote)
    sock = _bind(host, port)
    url = review_url(host, sock.getsockname()[1], token)
    server = _server(app, sock)
    if on_ready is not None:
        def announce():
            while not server.started and not server.should_exit:
                time.sleep(0.02)
            if server.started:
                on_ready(url)

        threading.Thread(target=announce, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def running_server(workspace, *, token: str | None = None, author: str | None = None,
                   host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[ReviewServer]:
    """Run the review app in a background thread on a free port for the ``with`` block."""
    token = token or new_token()
    app = _app(workspace, token, author, host, False)
    sock = _bind(host, 0)
    port = sock.getsockname()[1]
    server = _server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="smartset-review-server")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the review server did not start")
        time.sleep(0.01)
    try:
        yield ReviewServer(url=review_url(host, port, token), base=f"http://{host}:{port}",
                           token=token, port=port, host=host)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
