"""A small thread-safe LRU cache of predicted identity LoRAs, bounded by entry count and bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

V = TypeVar("V")


def tensor_bytes(value: object) -> int:
    """Bytes held by the tensors in a nested dict/list/tuple, or in an object's ``lora`` dict."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    lora = getattr(value, "lora", None)
    return tensor_bytes(lora) if lora is not None else 0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class LruCache(Generic[V]):
    """Least-recently-used cache. ``max_bytes`` counts tensor bytes (see ``tensor_bytes``)."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 512 * 2**20) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("cache limits must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: V) -> None:
        size = tensor_bytes(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes or self.max_entries == 0:
                return  # too large to keep at all
            self._entries[key] = (value, size)
            self._bytes += size
            self._evict()

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size
            self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes
