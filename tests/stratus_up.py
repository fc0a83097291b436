"""A real ``stratus up`` server for the system tests: started, stopped, killed, restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import free_port, wait_until

STRATUS = [sys.executable, "-m", "stratus.cli"]


class Server:
    """A ``stratus up`` in a process group of its own, on one port and data dir: stopped
    gently, killed (SIGKILL of the group: its executors go too) and started again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self) -> None:
        (self.data_dir / "server.json").unlink(missing_ok=True)  # left by a killed one
        argv = [*STRATUS, "up", "--listen", self.address, "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(
            [*argv, "--executors", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert wait_until(lambda: (self.data_dir / "server.json").exists(), timeout=30)

    def stop(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        self.output += self.process.communicate(timeout=30)[0]
        self.process = None

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.output += self.process.communicate(timeout=30)[0]
        self.process = None
