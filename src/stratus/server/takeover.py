"""A server's claim on its store at start-up: the key check, then the lease, with I/O.

Theory of operation (docs/scaling.md, "A coordinator on another host"): before a server
(``stratus up``) serves, it proves it has the store's cluster key (``check_key``: the
store's key check, written by the first server, must match; ``WrongClusterKey``
otherwise) and takes the store's coordinator lease (``LeaseKeeper.acquire``, which waits
out a dead holder's lease and refuses to start, ``CoordinatorActive``, while a live one
renews it). While it serves, a thread renews the lease; losing it (another coordinator
took it, or no renewal succeeded in time) stops the coordinator. A clean stop releases it,
so a successor starts at once. The decisions are ``server/lease.py``'s, without I/O.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from stratus import _exceptions as exc
from stratus.protocol import keys
from stratus.protocol import lease as records
from stratus.server import lease as ls
from stratus.store.base import Put, Store, Transaction

log = logging.getLogger("stratus.coordinator")


def check_key(store: Store, key: bytes, cluster_id: str, store_url: str) -> None:
    """Raise ``WrongClusterKey`` unless ``key`` is the key ``store`` was set up with; a
    store without a key check gets one (this server sets it up)."""
    proof = records.key_proof(key)
    while True:
        entry = store.get(keys.KEY_CHECK)
        if entry.value is None:
            check = records.KeyCheck(proof, cluster_id, time.time())
            put = Put(keys.KEY_CHECK, records.encode_key_check(check))
            if store.commit(Transaction({keys.KEY_CHECK: entry.version}, [put])).ok:
                return
            continue  # another server set it up at the same moment: check against theirs
        try:
            check = records.decode_key_check(entry.value)
        except exc.ProtocolError as e:
            raise exc.WrongClusterKey(f"{e}: this store's cluster key cannot be checked") from None
        if check.mac != proof:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(check.created))
            raise exc.WrongClusterKey(
                f"the store {store_url} was set up by cluster {check.cluster_id} on {when} "
                "with another cluster key than this server's: give every coordinator host "
                "the cluster's key ($STRATUS_KEY, $STRATUS_KEY_FILE or --key-file)"
            )
        return


def this_host() -> str:
    """Who can see this host's processes: its boot, pid and network namespaces. A lease
    holder with the same string ran beside us, and its pid says whether it lives."""
    parts = []
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        parts.append(f.read().strip())
    for ns in ("pid", "net"):
        with contextlib.suppress(OSError):
            parts.append(f"{ns}:{os.stat(f'/proc/self/ns/{ns}').st_ino}")
    return "/".join(parts) if len(parts) == 3 else ""  # unknown: never judged gone


def holder_gone(record: records.LeaseRecord | None, host: str) -> bool:
    """Whether ``record``'s holder is known dead: it ran on this host, and its pid is gone."""
    if record is None or not host or record.host != host or record.pid <= 0:
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone's process: maybe ours under another user
    return False


class LeaseKeeper:
    """Takes, renews and releases the store's lease for the coordinator at ``address``."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        *,
        address: str,
        cluster_id: str,
        duration: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.key, self.clock = store, key, clock
        self.host = this_host()
        self.lease = ls.Lease(
            address=address,
            cluster_id=cluster_id,
            duration=duration,
            host=self.host,
            pid=os.getpid(),
        )
        self.epoch = 0
        self.lost = ""  # why we lost the lease, once we did
        self._on_lost: Callable[[str], None] = lambda reason: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the lease: the renewing thread and release()

    def acquire(self) -> int:
        """Take the lease, waiting out a holder that does not renew it; the epoch we serve
        as. ``CoordinatorActive`` if a live coordinator holds it."""
        said = ""
        while True:
            try:
                record, version = records.read_lease(self.store, self.key)
            except (exc.StratusError, OSError) as e:
                raise exc.StoreUnavailable(f"cannot read the coordinator's lease: {e}") from e
            seen = ls.Observed(record, version, holder_gone(record, self.host))
            instructions = self._carry_out(self.lease.handle(seen, self.clock()))
            for instruction in instructions or [ls.Watch(self.clock() + 0.1, said)]:
                match instruction:
                    case ls.Serve(epoch, reason):
                        log.info("coordinator epoch %d holds the store's lease (%s)", epoch, reason)
                        self.epoch = epoch
                        return epoch
                    case ls.Refuse(reason, address, epoch):
                        raise exc.CoordinatorActive(reason, address=address, epoch=epoch)
                    case ls.Lose(reason):
                        raise exc.StoreUnavailable(reason)
                    case ls.Watch(at, reason):
                        if reason != said:
                            log.warning("%s", reason)
                            said = reason
                        time.sleep(max(0.0, at - self.clock()))

    def start(self, on_lost: Callable[[str], None]) -> None:
        """Renew the lease on a thread until ``release``; ``on_lost(reason)`` (from that
        thread) if it is lost."""
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._renew, name="stratus-lease", daemon=True)
        self._thread.start()

    def serving(self) -> bool:
        """Whether this coordinator may still serve (cheap: a clock read)."""
        return self.lease.serving(self.clock())

    def release(self) -> None:
        """Stop renewing and let a successor start at once (a clean stop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        with self._lock:
            self._carry_out(self.lease.handle(ls.Release(), self.clock()))

    def _renew(self) -> None:
        while not self._stop.wait(self.lease.renew_every / 2):
            with self._lock:
                for instruction in self._carry_out(self.lease.handle(ls.Tick(), self.clock())):
                    if isinstance(instruction, ls.Lose):
                        self.lost = instruction.reason
                        log.error("coordinator lost the store's lease: %s", instruction.reason)
                        self._on_lost(instruction.reason)
                        return

    def _carry_out(self, instructions: list[ls.Instruction]) -> list[ls.Instruction]:
        """Do the writes (check-and-set), feeding their outcomes back; return the rest."""
        rest: list[ls.Instruction] = []
        while instructions:
            instruction, *instructions = instructions
            if not isinstance(instruction, ls.Write):
                rest.append(instruction)
                continue
            sent = self.clock()
            put = Put(keys.COORDINATOR_LEASE, records.seal(self.key, instruction.record))
            txn = Transaction({keys.COORDINATOR_LEASE: instruction.expected}, [put])
            try:
                result = self.store.commit(txn)
            except (exc.StratusError, OSError) as e:
                log.warning("could not %s the coordinator's lease: %s", instruction.purpose, e)
                instructions += self.lease.handle(ls.StoreFailed(str(e)), self.clock())
                continue
            version = result.versions.get(keys.COORDINATOR_LEASE, 0)
            instructions += self.lease.handle(ls.Written(result.ok, version, sent), self.clock())
        return rest
