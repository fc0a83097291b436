"""Unsigned, badly signed and malformed frames are dropped, never unpickled, and the
cluster keeps serving."""

from __future__ import annotations

import os
import pickle
import socket
import struct
from pathlib import Path

import pytest

import stratus
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec, FrameReader
from stratus.transport import addresses


class _Exploit:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


@pytest.fixture
def ping(app: stratus.App) -> stratus.Function:
    fn = app.function(name="ping")(lambda ctx, x=0: x)
    assert fn.remote().result(timeout=10) == 0
    return fn


def _key(app: stratus.App) -> bytes:
    assert app._cluster is not None
    return app._cluster.key


def _executor_address(app: stratus.App) -> str:
    assert app._cluster is not None
    executor_id = app.status().executors[0].executor_id
    return app._cluster.config.executor_unix(executor_id)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _call(path: str = "", x: int = 1) -> m.Call:
    args = pickle.dumps(((_Exploit(path),), {})) if path else pickle.dumps(((x,), {}))
    return m.Call(1, "evil.1", "ping", 1, args, 1, None, "evil")


def test_garbage_to_the_coordinator_is_dropped(app: stratus.App, ping: stratus.Function) -> None:
    with addresses.connect(app.address) as sock:
        sock.setblocking(True)
        sock.sendall(os.urandom(64))
        assert _closed_by_peer(sock)
    assert ping.remote(2).result(timeout=10) == 2


def test_wrongly_signed_pickle_is_never_loaded(
    app: stratus.App, ping: stratus.Function, tmp_path: Path
) -> None:
    proof = tmp_path / "unpickled"
    forged = Codec(b"wrong key, wrong key!", m.ToClient, max_frame=1 << 20)
    with addresses.connect(_executor_address(app)) as sock:
        sock.setblocking(True)
        sock.sendall(forged.encode(m.Hello("evil", "client")) + forged.encode(_call(str(proof))))
        assert _closed_by_peer(sock)
    assert not proof.exists()
    assert ping.remote(3).result(timeout=10) == 3


def test_unsigned_frame_is_dropped(app: stratus.App, ping: stratus.Function) -> None:
    body = b"\x93\xa5hello\xa4evil\xa6client"
    with addresses.connect(_executor_address(app)) as sock:
        sock.setblocking(True)
        sock.sendall(struct.pack("!I", 32 + len(body)) + b"\0" * 32 + body)
        assert _closed_by_peer(sock)
    assert ping.remote(4).result(timeout=10) == 4


def test_oversized_frame_closes_the_connection(app: stratus.App, ping: stratus.Function) -> None:
    with addresses.connect(app.address) as sock:
        sock.setblocking(True)
        sock.sendall(struct.pack("!I", 2**31) + b"x" * 100)
        assert _closed_by_peer(sock)
    assert ping.remote(5).result(timeout=10) == 5


def test_a_call_before_hello_closes_the_connection(
    app: stratus.App, ping: stratus.Function, tmp_path: Path
) -> None:
    proof = tmp_path / "unpickled"
    codec = Codec(_key(app), m.ToClient, max_frame=1 << 20)
    with addresses.connect(_executor_address(app)) as sock:
        sock.setblocking(True)
        sock.sendall(codec.encode(_call(str(proof))))
        assert _closed_by_peer(sock)
    assert not proof.exists()


def test_malformed_frame_from_a_known_peer_is_dropped_and_the_link_survives(
    app: stratus.App, ping: stratus.Function
) -> None:
    codec = Codec(_key(app), m.ToClient, max_frame=1 << 20)
    malformed = codec.encode(m.Welcome("not a call"))  # well signed, wrong for an executor
    with addresses.connect(_executor_address(app)) as sock:
        sock.setblocking(True)
        sock.sendall(codec.encode(m.Hello("tester", "client")) + malformed + codec.encode(_call()))
        reader, replies = FrameReader(1 << 20), []
        sock.settimeout(10)
        while len(replies) < 2:
            replies += [codec.decode(f) for f in reader.feed(sock.recv(65536))]
    assert isinstance(replies[0], m.Welcome)
    assert isinstance(replies[1], m.Result) and pickle.loads(replies[1].value) == 1


def test_a_client_with_the_wrong_key_cannot_connect(app: stratus.App) -> None:
    with pytest.raises(stratus.ConnectionFailed):
        stratus.connect(app.address, key=b"0" * 32)
