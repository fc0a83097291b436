"""Per-invocation logs: what each invocation printed or logged, kept in bounded files.

Theory of operation: an executor replaces ``sys.stdout`` and ``sys.stderr`` with streams
that, while an invocation runs, cut what is written into lines and append each line,
stamped with the time, function, invocation id and attempt, to the executor's log file
(``<data_dir>/logs/<cluster>-<executor>.jsonl``, one JSON object per line, one
``write`` per line, so a line is on disk before the next one is produced and a crash
loses at most an unfinished line). ``ctx.logger`` records go to the same file through a
logging handler. Writes made outside any invocation, and everything, also go to the
original stream, so the terminal of an embedded cluster still shows them.

Nothing happens for an invocation that neither prints nor logs: capturing costs the
warm path nothing but the check for an unfinished line when an invocation ends.

Files, not the store: logs are append-only and unbounded in rate, and writing them to
the store would cost a commit per line and churn every executor's change feed. Each
file has one writer (its executor), which rotates it to ``.1`` at ``max_bytes``; the
coordinator deletes the oldest files when the directory outgrows its budget, and serves
``stratus logs`` by reading them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from stratus.protocol import keys
from stratus.protocol import messages as m

MAX_FILE_BYTES = 4 << 20  # per executor file, before rotation (one old file kept)
MAX_DIR_BYTES = 256 << 20  # all files: the oldest go first
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(m.LogLine)

Current = Callable[[], "m.Call | None"]


class InvocationLogs:
    """The executor's log file, and the streams and handler that feed it."""

    def __init__(
        self,
        data_dir: str,
        cluster_id: str,
        executor_id: str,
        current: Current,
        *,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        directory = Path(data_dir) / keys.LOGS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / keys.log_name(cluster_id, executor_id)
        self.current = current
        self.max_bytes = max_bytes
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._streams: list[_Capture] = []

    def install(self) -> None:
        """Capture ``sys.stdout``, ``sys.stderr`` and the ``ctx.logger`` loggers."""
        self._streams = [_Capture(self, "stdout", sys.stdout), _Capture(self, "stderr", sys.stderr)]
        sys.stdout, sys.stderr = self._streams
        fn_logger = logging.getLogger("stratus.fn")
        fn_logger.setLevel(logging.INFO)
        fn_logger.propagate = False  # INFO records must not reach the root's handler too
        fn_logger.addHandler(_Handler(self))

    def end_invocation(self) -> None:
        """Write out an unfinished last line of the invocation that is ending."""
        for stream in self._streams:
            if stream.partial:
                stream.flush()

    def write(self, stream: str, text: str) -> None:
        """Log one line of the running invocation (dropped when none is running)."""
        call = self.current()
        if call is None:
            return
        line = m.LogLine(
            time.time_ns(), call.function, call.invocation_id, call.attempt, stream, text
        )
        data = _encoder.encode(line) + b"\n"
        with contextlib.suppress(OSError):  # a full disk must not fail the function
            os.write(self._fd, data)
            self._size += len(data)
            if self._size > self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = 0

    def close(self) -> None:
        self.end_invocation()
        os.close(self._fd)


class _Capture(io.TextIOBase):
    """A text stream that logs whole lines of the running invocation and passes
    everything through to the stream it replaced."""

    def __init__(self, logs: InvocationLogs, name: str, original: TextIO) -> None:
        self.logs = logs
        self.stream = name
        self.original = original
        self.partial = ""

    def write(self, text: str) -> int:
        with contextlib.suppress(Exception):
            self.original.write(text)
        if self.logs.current() is not None:
            *lines, self.partial = (self.partial + text).split("\n")
            for line in lines:
                self.logs.write(self.stream, line)
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.logs.write(self.stream, self.partial)
            self.partial = ""
        with contextlib.suppress(Exception):
            self.original.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


class _Handler(logging.Handler):
    def __init__(self, logs: InvocationLogs) -> None:
        super().__init__(logging.INFO)
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for line in text.split("\n"):
            self.logs.write(record.levelname, line)
        if record.levelno >= logging.WARNING:  # what the root handler would have shown
            with contextlib.suppress(Exception):
                sys.__stderr__.write(f"{record.name}: {text}\n")  # type: ignore[union-attr]


# --------------------------------------------------------------------------- reading


def read(
    directory: Path,
    *,
    function: str = "",
    invocation_id: str = "",
    cursor: dict[str, int] | None = None,
    limit: int = 1000,
) -> tuple[list[m.LogLine], dict[str, int]]:
    """Lines of ``function`` (or every function) and of ``invocation_id`` (if given),
    oldest first: the last ``limit`` of them on a first read (``cursor`` None), else
    those written since ``cursor``. Returns them with the cursor of the next read."""
    first = cursor is None
    position = dict(cursor or {})
    found: list[m.LogLine] = []
    with contextlib.suppress(FileNotFoundError):
        names = sorted(p.name for p in directory.iterdir())
        for name in names:
            if name.endswith(".jsonl.1") and first:
                found += _lines(directory / name, 0, function, invocation_id)[0]
        for name in names:
            if not name.endswith(".jsonl"):
                continue
            start = position.get(name, 0)
            lines, position[name] = _lines(directory / name, start, function, invocation_id)
            found += lines
    found.sort(key=lambda line: line.time_ns)
    return found[-limit:], position


def _lines(path: Path, start: int, function: str, invocation_id: str) -> tuple[list[Any], int]:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < start:
                start = 0  # rotated since: read the new file from its start
            f.seek(start)
            data = f.read()
    except OSError:
        return [], start
    complete = data.rfind(b"\n") + 1  # an unfinished line is read next time
    lines = []
    for raw in data[:complete].splitlines():
        try:
            line = _decoder.decode(raw)
        except msgspec.DecodeError:
            continue
        if (not function or line.function == function) and (
            not invocation_id or line.invocation_id == invocation_id
        ):
            lines.append(line)
    return lines, start + complete


def prune(directory: Path, budget: int = MAX_DIR_BYTES) -> None:
    """Delete the least recently written log files until the rest fit in ``budget``."""
    try:
        files = [(p.stat().st_mtime_ns, p.stat().st_size, p) for p in directory.iterdir()]
    except FileNotFoundError:
        return
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files):
        if total <= budget:
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        total -= size
