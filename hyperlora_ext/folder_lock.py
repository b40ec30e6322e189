"""A lock on a folder shared by every process: held while several files in it change together.

Exclusive creation of a lock file works on every OS and file system (no fcntl on Windows). A lock
older than STALE_LOCK_SECONDS was left by a crashed process and is taken over.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from hyperlora_ext.errors import HyperLoRAError

LOCK_NAME = ".hyperlora.lock"  # held by the store (of any process) saving or deleting
STALE_LOCK_SECONDS = 30.0  # a save takes well under a second; older: left by a crashed process


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Held while a save or delete changes several files, by every store of every process:
    exclusive creation of a lock file works on every OS and file system. A lock older than
    STALE_LOCK_SECONDS was left by a crashed process and is taken over."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HyperLoRAError(f"cannot create the folder {folder} ({exc})") from exc
    path = folder / LOCK_NAME
    refused_until = time.monotonic() + 1.0
    while True:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            if _lock_age(path) > STALE_LOCK_SECONDS:
                # Two processes taking over one stale lock at once could both hold it; that
                # needs a crash first and a tie within microseconds after it.
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                continue
        except PermissionError as exc:  # Windows, while another process deletes the lock
            if time.monotonic() > refused_until:
                raise HyperLoRAError(f"cannot write into {folder} ({exc})") from exc
        except OSError as exc:
            raise HyperLoRAError(f"cannot write into {folder} ({exc})") from exc
        time.sleep(0.005)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def wait_unlocked(folder: Path) -> None:
    """Return once no save or delete holds the folder's lock (or the lock is stale)."""
    path = folder / LOCK_NAME
    while path.exists() and _lock_age(path) <= STALE_LOCK_SECONDS:
        time.sleep(0.005)


def _lock_age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # released just now: try again
