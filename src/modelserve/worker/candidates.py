"""Scoring a rollout's candidate on a thread of its own, for at most its batch's deadline.

Live batches are scored on the worker's own thread. A candidate is a version that has not
served anyone yet: if it hangs, it must hold a thread of its own, not the worker, or a shadow
could take every worker away from live. So a candidate's batch runs on that version's
thread, and the worker waits for it until the batch's deadline; past it, the batch is
answered as failed (the judge counts it against the candidate) and the worker goes back to
its queue. While a version's thread is still busy with an earlier batch, the version's next
batches are refused at once: a hung candidate holds one thread per worker, never more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from modelserve.errors import UserError

T = TypeVar("T")


class CandidateLate(UserError):
    """A candidate did not answer a batch in time, or is still busy with an earlier one."""


class CandidateThreads:
    """One scoring thread per candidate version (the latest `keep` versions)."""

    def __init__(self, keep: int):
        self._keep = max(keep, 1)
        self._pools: OrderedDict[str, ThreadPoolExecutor] = OrderedDict()
        self._running: dict[str, Future] = {}

    def run(self, version: str, work: Callable[[], T], timeout: float) -> T:
        """work() on the version's thread, its result within timeout seconds, or CandidateLate."""
        earlier = self._running.get(version)
        if earlier is not None and not earlier.done():
            raise CandidateLate(f"version {version} is still scoring an earlier batch that "
                                "ran past its deadline; this batch is not given to it")
        future = self._pool(version).submit(work)
        self._running[version] = future
        try:
            return future.result(timeout=max(timeout, 0.0))
        except FutureTimeout:
            raise CandidateLate(f"version {version} did not answer within {timeout:.3g} s "
                                "(its batch's deadline)") from None

    def _pool(self, version: str) -> ThreadPoolExecutor:
        """The version's thread, made on first use; the least recent version's beyond keep is
        let go (a thread still busy ends when its work does)."""
        pool = self._pools.get(version)
        if pool is None:
            pool = self._pools[version] = ThreadPoolExecutor(
                1, thread_name_prefix=f"candidate-{version}")
            while len(self._pools) > self._keep:
                gone, old = self._pools.popitem(last=False)
                self._running.pop(gone, None)
                old.shutdown(wait=False)
        self._pools.move_to_end(version)
        return pool
