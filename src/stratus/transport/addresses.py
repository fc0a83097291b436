"""Socket addresses: ``tcp://host:port`` and ``unix:@name`` (Linux abstract sockets).

Abstract Unix sockets have no file, so a SIGKILLed cluster leaves nothing to clean up;
TCP is used between hosts and for clients of a ``stratus up`` server.
"""

from __future__ import annotations

import socket

from stratus._exceptions import ConfigurationError, ConnectionFailed

DEFAULT_PORT = 7070
_BUFFER = 4 * 1024 * 1024  # large socket buffers: batches of calls rarely block a writer


def parse(address: str) -> tuple[int, str | tuple[str, int]]:
    """``(family, sockaddr)`` for an address string; ``ConfigurationError`` if malformed."""
    if address.startswith("unix:"):
        path = address[5:]
        if path in ("", "@"):
            raise ConfigurationError(f"empty unix address {address!r}")
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    if address.startswith("tcp://"):
        rest = address[6:]
        host, sep, port = rest.rpartition(":")
        if not sep or (host.count(":") and not host.endswith("]")):  # no port, or bare IPv6
            host, port = rest, str(DEFAULT_PORT)
        host = host.strip("[]")
        if not port.isdigit():
            raise ConfigurationError(f"bad port in address {address!r}")
        number = int(port)
        if not host or not 0 <= number < 65536:
            raise ConfigurationError(f"bad address {address!r}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, number)
    raise ConfigurationError(f"address {address!r} must start with tcp:// or unix:")


def is_local(address: str) -> bool:
    """True when the address can only be reached from this machine."""
    family, sockaddr = parse(address)
    if family == socket.AF_UNIX:
        return True
    assert isinstance(sockaddr, tuple)
    return sockaddr[0] in ("127.0.0.1", "::1", "localhost") or sockaddr[0].startswith("127.")


def listen(address: str) -> tuple[socket.socket, str]:
    """A non-blocking listening socket and its address (with the real port for ``:0``)."""
    family, sockaddr = parse(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise ConnectionFailed(f"cannot listen on {address}: {e}") from e
    sock.setblocking(False)
    if family == socket.AF_UNIX:
        return sock, address
    host, port = sock.getsockname()[:2]
    return sock, f"tcp://{host}:{port}"


def connect(address: str, timeout: float = 5.0) -> socket.socket:
    """A connected, non-blocking socket; ``ConnectionFailed`` when nobody answers."""
    family, sockaddr = parse(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except OSError as e:
        sock.close()
        raise ConnectionFailed(f"cannot connect to {address}: {e}") from e
    tune(sock)
    return sock


def tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
