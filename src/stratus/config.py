"""The one frozen configuration a cluster is built from, and the names it derives."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import msgspec

from stratus._exceptions import ConfigurationError
from stratus.protocol.messages import Resources
from stratus.protocol.serialization import DEFAULT_MAX_PAYLOAD
from stratus.transport import addresses
from stratus.transport.guard import ConnectionLimits


class AutoscalingConfig(msgspec.Struct, frozen=True):
    """How warm pools grow, shrink and idle (docs/autoscaling.md). The defaults are
    Knative's windows and Azure's keep-alive; tests and benchmarks make them short."""

    tick: float = 0.5  # seconds between load samples and pool decisions
    stable_window: float = 60.0
    panic_window: float = 6.0
    scale_to_zero_grace: float = 2.0  # idle time before the autoscaler lets a pool go
    utilization: float = 1.0  # of one call per executor: 1.0 sizes pools to concurrency
    keep_alive: str = "hybrid"  # "hybrid" (learned from idle times) or "fixed"
    fixed_keep_alive: float = 600.0  # idle executors kept this long when nothing is learned
    idle_bin: float = 60.0  # width of a bin of the idle-time histogram
    idle_range: float = 4 * 3600.0  # idle times beyond this are out of range
    drain: float = 0.2  # a released executor takes no new calls this long before it stops

    def __post_init__(self) -> None:
        positive = ("tick", "stable_window", "panic_window", "utilization", "idle_bin")
        if any(getattr(self, name) <= 0 for name in positive):
            raise ConfigurationError(f"autoscaling: {', '.join(positive)} must be > 0")
        if self.keep_alive not in ("hybrid", "fixed"):
            raise ConfigurationError("autoscaling: keep_alive is 'hybrid' or 'fixed'")
        if min(self.scale_to_zero_grace, self.fixed_keep_alive, self.drain) < 0:
            raise ConfigurationError("autoscaling: windows cannot be negative")


class ClusterConfig(msgspec.Struct, frozen=True):
    """Everything the coordinator, the fork server and the executors need to start."""

    cluster_id: str
    key: bytes
    data_dir: str = ".stratus"
    listen: str = ""  # tcp://host:port for a server; empty for an embedded cluster
    # The host executors give clients for their TCP listeners; empty: the listen host, or
    # when that is a wildcard (0.0.0.0, ::), a routable address of this machine.
    advertise: str = ""
    store: str = ""  # where state lives; empty: sqlite:<data_dir>/state.db
    executors: int = 0  # the most executor processes at once; 0: one per core
    max_payload: int = DEFAULT_MAX_PAYLOAD
    preload: list[str] = []  # modules the fork server imports so executors start warm
    sys_path: list[str] = []  # extra import paths of the user's program
    log_level: str = "WARNING"
    metrics: str = ""  # host:port for the Prometheus endpoint; empty: not served
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    connections: ConnectionLimits = ConnectionLimits()  # what strangers may do (guard.py)
    # On a node agent's host (docs/scaling.md): the coordinator's TCP address, which its
    # executors dial; empty: the coordinator is on this host (an abstract socket).
    coordinator: str = ""
    offer: Resources | None = None  # what each executor offers; None: see executor_offer
    # A server's lease on its store (server/lease.py): a successor on another host waits
    # this long without a renewal before it takes a dead coordinator over.
    lease: float = 10.0

    def __post_init__(self) -> None:
        if self.advertise:
            addresses.check_host(self.advertise)
        if not self.lease > 0:
            raise ConfigurationError(f"the coordinator's lease lasts > 0 seconds, not {self.lease}")

    @property
    def coordinator_unix(self) -> str:
        return f"unix:@stratus-{self.cluster_id}-coordinator"

    def executor_unix(self, executor_id: str) -> str:
        return f"unix:@stratus-{self.cluster_id}-{executor_id}"

    @property
    def coordinator_address(self) -> str:
        """Where executors reach their coordinator."""
        return self.coordinator or self.coordinator_unix

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:{os.path.join(self.data_dir, 'state.db')}"

    @property
    def pool_size(self) -> int:
        return self.executors or os.cpu_count() or 1

    @property
    def executor_offer(self) -> Resources:
        """What each executor offers: ``offer`` if set (a node agent's, from its host's
        capacity), else one core and an equal share of this machine's memory."""
        if self.offer is not None:
            return self.offer
        try:
            total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        except (ValueError, OSError):
            total_mb = 4096
        return Resources(cpu=1.0, memory_mb=max(256, total_mb // self.pool_size), gpus=0)


def new_cluster_id() -> str:
    return secrets.token_hex(4)


def new_key() -> bytes:
    return secrets.token_bytes(32)


def encode(config: ClusterConfig) -> bytes:
    return msgspec.json.encode(config)


def decode(data: bytes) -> ClusterConfig:
    return msgspec.json.decode(data, type=ClusterConfig)


def load_key(
    key: bytes | str | None, data_dir: str | os.PathLike[str], *, key_file: str = ""
) -> bytes:
    """The key of a server: given, from ``key_file``, ``$STRATUS_KEY`` (hex),
    ``$STRATUS_KEY_FILE``, or ``<data_dir>/key``."""
    if isinstance(key, bytes):
        return key
    text = key or (None if key_file else os.environ.get("STRATUS_KEY"))
    if not text:
        path = key_file or os.environ.get("STRATUS_KEY_FILE") or os.path.join(data_dir, "key")
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError as e:
            raise ConfigurationError(
                f"no cluster key: pass key=, set STRATUS_KEY or STRATUS_KEY_FILE ({e})"
            ) from None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigurationError("a cluster key is written in hexadecimal") from None


def key_given(key_file: str = "") -> str:
    """Where a key given out of band comes from (``key_file``, ``$STRATUS_KEY``,
    ``$STRATUS_KEY_FILE``), or "" when none is: a server whose coordinator another host
    may take over is given the cluster's key so, never a key of its own."""
    if key_file:
        return key_file
    if os.environ.get("STRATUS_KEY"):
        return "$STRATUS_KEY"
    return os.environ.get("STRATUS_KEY_FILE", "")


def write_key(key: bytes, data_dir: str | os.PathLike[str]) -> str:
    """Write a server's key to ``<data_dir>/key``, readable by its owner only (in a
    directory that is its owner's only)."""
    make_private_dir(data_dir)
    path = os.path.join(data_dir, "key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an older key file may have been readable by others
        f.write(key.hex() + "\n")
    return path


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` (and its parents) if needed, and make it its owner's only (0700)."""
    Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
    _restrict(Path(path), 0o700)


def secure_data_dir(config: ClusterConfig) -> None:
    """Make what a cluster keeps on disk its owner's only: the data directory 0700; the
    key and an embedded store's files (SQLite's database and journals, an LMDB
    directory) 0600. A cluster started before this rule, or a file another program
    created, is tightened here; new files are created private by the server's umask."""
    make_private_dir(config.data_dir)
    private = [Path(config.data_dir, "key")]
    scheme, _, rest = config.store_url.partition(":")
    if scheme in ("sqlite", "lmdb"):
        store = Path(rest.partition("?")[0])
        private += [store, *(Path(f"{store}{end}") for end in ("-wal", "-shm", "-journal"))]
    for path in private:
        if path.is_dir():  # LMDB: a directory of two files
            _restrict(path, 0o700)
            for entry in path.iterdir():
                _restrict(entry, 0o600)
        else:
            _restrict(path, 0o600)


def _restrict(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` if it exists, is ours and is more open; else nothing (a
    shared directory named as the data dir stays as its owner set it)."""
    try:
        st = path.lstat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            path.chmod(mode)
    except OSError:
        pass
