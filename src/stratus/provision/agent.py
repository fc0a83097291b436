"""One node agent process: its command line, its environment, and stopping it in time.

Shared by every provisioner: the local one runs :class:`AgentProcess` here, the Ray one
inside an actor on the agent's Ray node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from stratus import _exceptions as exc
from stratus.server import lifeline
from stratus.transport import addresses

KEY_VARIABLE = "STRATUS_KEY"  # what ``stratus node`` reads the key from (config.load_key)
STOP_TIMEOUT = 10.0  # seconds an agent has to stop its executors after SIGTERM


@dataclass(frozen=True)
class AgentSpec:
    """What one agent offers and where it joins; the key travels apart, in the env."""

    join: str
    node_id: str
    data_dir: str
    cores: int = 0  # 0: the agent detects what it may use
    memory_mb: int = 0
    gpus: int | tuple[str, ...] | None = None  # a count, GPU ids, or None: detected
    advertise: str = ""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        addresses.parse(self.join)  # a malformed address is a ConfigurationError now
        if not self.node_id:
            raise exc.ConfigurationError("a node agent needs a node id")
        count = self.gpus if isinstance(self.gpus, int) else 0
        if self.cores < 0 or self.memory_mb < 0 or count < 0:
            raise exc.ConfigurationError(f"a node's capacity cannot be negative: {self}")

    def command(self) -> list[str]:
        """``python -m stratus.cli node ...`` with this spec's options (never the key)."""
        args = [sys.executable, "-m", "stratus.cli", "node", "--join", self.join]
        args += ["--node-id", self.node_id, "--data-dir", self.data_dir]
        args += ["--log-level", self.log_level]
        if self.cores:
            args += ["--cores", str(self.cores)]
        if self.memory_mb:
            args += ["--memory-mb", str(self.memory_mb)]
        if isinstance(self.gpus, int):
            args += ["--gpus", str(self.gpus)]
        elif self.gpus is not None:  # ids; "3," is the one id 3, "3" would be a count
            args += ["--gpus", ",".join(self.gpus) + ("," if len(self.gpus) == 1 else "") or "0"]
        if self.advertise:
            args += ["--advertise", self.advertise]
        return args


@dataclass(frozen=True)
class AgentInfo:
    """One agent a provisioner runs: where, its pid there, and its exit status once gone."""

    node_id: str
    where: str  # "local", or "ray node <id>"
    pid: int
    exit_status: int | None = None
    offer: dict[str, float] = field(default_factory=dict)  # what was reserved for it


class AgentProcess:
    """A ``stratus node`` child that dies with its parent (``PR_SET_PDEATHSIG``)."""

    def __init__(self, spec: AgentSpec, key: bytes, *, log_path: str = "") -> None:
        env = dict(os.environ, **{KEY_VARIABLE: key.hex()})
        env.pop("STRATUS_KEY_FILE", None)
        os.makedirs(spec.data_dir, mode=0o700, exist_ok=True)
        output = open(log_path or os.path.join(spec.data_dir, "agent.log"), "ab")  # noqa: SIM115
        parent = os.getpid()
        with output:
            self.process = subprocess.Popen(
                spec.command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # If our process dies without stopping it, the agent goes too: no agent
                # outlives the provisioner (or Ray actor) that owns it.
                preexec_fn=lambda: lifeline.die_with_parent(parent, signal.SIGTERM),
            )
        self.spec = spec

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_status(self) -> int | None:
        """None while it runs."""
        return self.process.poll()

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (the agent stops its executors), SIGKILL past ``timeout``; its status."""
        if self.process.poll() is None:
            self.terminate()
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
