"""Binding the port and running uvicorn: the URL is printed once the port is ours (port 0 picks a free one)."""

from __future__ import annotations

import ipaddress
import socket

from ..errors import NextscaleError
from .app import create_app
from .models import Models
from .session import Session


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise NextscaleError(f"--host {host}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise NextscaleError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def serve(
    models: Models | Session, host: str = "127.0.0.1", port: int = 7860, sock: socket.socket | None = None
) -> None:
    """Serves the page until Ctrl-C, on `sock` if given (already bound, as `bind` leaves it), else on host:port.
    Nothing is written to disk: uploads and results live in memory."""
    import uvicorn

    models = Models(models) if isinstance(models, Session) else models
    first = models.get()
    sock = bind(host, port) if sock is None else sock
    server = uvicorn.Server(uvicorn.Config(create_app(models), log_level="warning", timeout_graceful_shutdown=5))
    print(
        f"nextscale serve: {first.title} ({first.resolution}×{first.resolution}) at {url_of(sock)}  (Ctrl-C stops)",
        flush=True,
    )
    others = [name for name in models.names if name != first.title]
    if others:
        print(f"nextscale serve: the page's model picker also offers {', '.join(others)}", flush=True)
    if not is_loopback(sock):
        print(
            f"nextscale serve: note: listening on {sock.getsockname()[0]}, so anyone who can reach this machine "
            "can use it",
            flush=True,
        )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly on Ctrl-C, then raises it again for the caller
        pass
    print("nextscale serve: stopped", flush=True)
