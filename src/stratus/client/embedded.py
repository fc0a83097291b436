"""Starting and stopping an embedded cluster: a coordinator process and its executors.

The coordinator runs as ``python -m stratus._node`` in its own session (so a Ctrl-C in
the terminal reaches only the user's program). Its stdin is a lifeline: we write the
configuration and keep the pipe open; when this process exits, even by SIGKILL, the
kernel closes it and the whole cluster shuts down.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time

from stratus import _exceptions as exc
from stratus import config as cfg


class EmbeddedCluster:
    """A cluster owned by this process. ``address`` and ``key`` let clients connect."""

    def __init__(self, config: cfg.ClusterConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.key = config.key
        ready_r, ready_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stratus._node", "--ready-fd", str(ready_w)],
                stdin=subprocess.PIPE,
                pass_fds=(ready_w,),
                start_new_session=True,
            )
        finally:
            os.close(ready_w)
        assert self.process.stdin is not None
        self._lifeline = self.process.stdin
        self._lifeline.write(cfg.encode(config) + b"\n")
        self._lifeline.flush()
        try:
            self.address = self._wait_ready(ready_r, timeout)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(ready_r)

    def _wait_ready(self, fd: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):  # not EOF: our children inherit the pipe
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exc.ConnectionFailed(f"the embedded cluster was not ready in {timeout} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.process.wait(timeout=5)
                raise exc.ConnectionFailed(f"the embedded cluster exited with status {code}")
            data += chunk
        reply = json.loads(data)
        if "error" in reply:
            raise exc.ConnectionFailed(f"the embedded cluster could not start: {reply['error']}")
        address: str = reply["address"]
        return address

    def close(self, timeout: float = 5.0) -> None:
        """Stop the cluster: close the lifeline, wait, then kill what is left."""
        if not self._lifeline.closed:
            with contextlib.suppress(OSError):
                self._lifeline.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
