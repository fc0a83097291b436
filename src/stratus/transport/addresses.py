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
    return sock, tcp(host, port)


def tcp(host: str, port: int) -> str:
    """``tcp://host:port``, with an IPv6 host in brackets."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


_WILDCARDS = ("0.0.0.0", "::", "")


def advertised(bound: str, advertise: str = "") -> str:
    """The address peers should dial for a listener bound at ``bound``.

    ``advertise`` (a host name or address) replaces the bound host; a wildcard host
    (``0.0.0.0``, ``::``) is no place to dial from another machine, so it becomes this
    machine's routable address. Unix addresses are returned as they are.
    """
    family, sockaddr = parse(bound)
    if family == socket.AF_UNIX:
        return bound
    assert isinstance(sockaddr, tuple)
    host, port = sockaddr
    if advertise:
        host = check_host(advertise)
    elif host in _WILDCARDS:
        host = routable_host(family)
    return tcp(host, port)


def check_host(host: str) -> str:
    """``host`` without brackets; ``ConfigurationError`` unless it names one host."""
    bare = host.strip().removeprefix("tcp://").strip("[]")
    wrong = not bare or bare in _WILDCARDS or any(c in bare for c in "/@ ")
    if not wrong and ":" in bare:  # IPv6, not host:port
        try:
            socket.inet_pton(socket.AF_INET6, bare)
        except OSError:
            wrong = True
    if wrong:
        raise ConfigurationError(f"cannot advertise {host!r}: give a host name or address")
    return bare


def routable_host(family: int = socket.AF_INET) -> str:
    """The address of this machine that the default route leaves from (loopback when
    there is no route). Connecting a UDP socket sends nothing; it only picks a source."""
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"  # documentation nets
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            host: str = sock.getsockname()[0]
            if host not in _WILDCARDS:
                return host
    except OSError:
        pass
    try:
        host = socket.gethostbyname(socket.gethostname())
        if family == socket.AF_INET and not host.startswith("127."):
            return host
    except OSError:
        pass
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


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
