"""``modules.call_queue``: the lock that lets one generation (or GPU job) run at a time.

A1111 1.10 and Forge use ``modules.fifo_lock.FIFOLock``: ``acquire(blocking=True)`` (no timeout),
``release()``, and a context manager; waiting threads get the lock in arrival order.
"""

import collections
import threading


class FIFOLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inner_lock = threading.Lock()
        self._pending_threads: collections.deque = collections.deque()

    def acquire(self, blocking: bool = True) -> bool:
        with self._inner_lock:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            release_event = threading.Event()
            self._pending_threads.append(release_event)
        release_event.wait()
        return self._lock.acquire()

    def release(self) -> None:
        with self._inner_lock:
            if self._pending_threads:
                self._pending_threads.popleft().set()
            self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


queue_lock = FIFOLock()
