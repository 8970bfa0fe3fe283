"""Writing the prediction log off the request path: a bounded buffer drained by one thread.

The bound a request pays: put() is a length check and a deque append, no I/O, no lock and
no waiting, whatever the disk does. The thread writes what is buffered every FLUSH_SECONDS
in one transaction; when the buffer is full, or the disk refuses a batch (full, read-only,
locked too long), the entries are dropped and counted, one warning a minute says so, and
predictions go on. Old entries are pruned by the same thread (the retention setting).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable

from modelserve.predlog.records import Answered
from modelserve.predlog.store import PredictionLog

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.2
MAX_BATCH = 2000  # entries per transaction
PRUNE_SECONDS = 60.0
WARN_SECONDS = 60.0
REOPEN_SECONDS = 5.0
# An entry reaches the file within this long unless its process dies or the disk refuses:
# feedback for a younger id that is not there yet waits this long before calling it unknown.
SETTLE_SECONDS = 2 * FLUSH_SECONDS + 1.0

Dropped = Callable[[int, str], None]  # how many entries, and why


class LogWriter:
    """Buffer answers in memory and write them to the log in batches, on a thread of its own."""

    def __init__(self, store: PredictionLog, retention_seconds: float, capacity_bytes: int,
                 on_dropped: Dropped = lambda count, why: None,
                 flush_seconds: float = FLUSH_SECONDS, clock: Callable[[], float] = time.time):
        self.store = store
        self._retention = retention_seconds
        self._capacity = capacity_bytes
        self._on_dropped = on_dropped
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._pending: deque[tuple[Answered, int]] = deque()
        self._pending_bytes = 0
        self._wake = threading.Event()
        self._stopping = False
        self._write_lock = threading.Lock()  # the thread and flush() write one at a time
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0
        self._warned_at = float("-inf")
        self.written = 0
        self.dropped = 0

    def put(self, entry: Answered) -> None:
        """Buffer one answer for the log, or drop it when the buffer is full (never wait)."""
        size = entry.rows.nbytes + (0 if entry.outputs is None else entry.outputs.nbytes)
        if self._pending_bytes + size > self._capacity or self._stopping:
            self._drop(1, "its buffer is full (the disk is slower than the traffic)")
            return
        self._pending_bytes += size
        self._pending.append((entry, size))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        """Start the writing thread (first use: after any fork of the serving process)."""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Write what is buffered every flush interval, and prune, until close(); a file
        that cannot be opened is tried again every REOPEN_SECONDS, the buffer dropped."""
        while not self._stopping:
            try:
                with self.store.connect() as connection:
                    while not self._stopping:
                        self._wake.wait(self._flush_seconds)
                        self._write_pending(connection)
                        self._prune_if_due(connection)
            except (sqlite3.Error, OSError) as error:
                self._warn(f"the prediction log {self.store.path.name} cannot be opened "
                           f"({error}); predictions go on")
                self._discard_pending(str(error))
                self._wake.wait(REOPEN_SECONDS)

    def flush(self) -> None:
        """Write everything buffered now, from the calling thread (feedback, close, tests)."""
        try:
            with self.store.connect() as connection:
                self._write_pending(connection)
        except (sqlite3.Error, OSError) as error:
            self._warn(f"the prediction log {self.store.path.name} cannot be opened ({error}); "
                       "predictions go on")
            self._discard_pending(str(error))

    def _write_pending(self, connection: sqlite3.Connection) -> None:
        """Write the buffered entries in batches; a batch the disk refuses is dropped."""
        with self._write_lock:
            while self._pending:
                batch = self._take(MAX_BATCH)
                try:
                    self.store.write(connection, batch)
                    self.written += len(batch)
                except (sqlite3.Error, OSError) as error:
                    self._drop(len(batch), f"the disk refused them ({error})")

    def _take(self, count: int) -> list[Answered]:
        """Up to `count` buffered entries, oldest first, no longer counted in the buffer."""
        batch: list[Answered] = []
        while self._pending and len(batch) < count:
            entry, size = self._pending.popleft()
            self._pending_bytes -= size
            batch.append(entry)
        return batch

    def _discard_pending(self, why: str) -> None:
        """Drop everything buffered (the file cannot be written at all)."""
        with self._write_lock:
            count = len(self._take(len(self._pending)))
        if count:
            self._drop(count, why)

    def _prune_if_due(self, connection: sqlite3.Connection) -> None:
        """Forget entries older than the retention, once a minute."""
        now = self._clock()
        if now < self._next_prune or self._retention <= 0:
            return
        self._next_prune = now + PRUNE_SECONDS
        try:
            removed = self.store.prune(connection, now - self._retention)
        except (sqlite3.Error, OSError) as error:
            self._warn(f"pruning the prediction log failed ({error}); predictions go on")
            return
        if removed:
            log.info("prediction log: forgot %d requests older than the retention", removed)

    def _drop(self, count: int, why: str) -> None:
        """Count entries that will not be logged, and say so (once a minute at most)."""
        self.dropped += count
        self._on_dropped(count, why)
        self._warn(f"prediction log: {count} answers not logged: {why}; predictions go on")

    def _warn(self, message: str) -> None:
        """A warning, at most once per WARN_SECONDS."""
        now = time.monotonic()
        if now - self._warned_at >= WARN_SECONDS:
            self._warned_at = now
            log.warning("%s", message)

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        if self._pending:
            self.flush()
