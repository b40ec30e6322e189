import threading

import torch

from hyperlora_ext.cache import LruCache, tensor_bytes


def _value(n_floats: int) -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(n_floats, dtype=torch.float32)}


def test_hit_and_miss_are_counted():
    cache: LruCache[dict] = LruCache(max_entries=4, max_bytes=10_000)
    assert cache.get("a") is None
    cache.put("a", _value(10))
    assert cache.get("a") is not None
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_evicts_least_recently_used_by_entry_count():
    cache: LruCache[dict] = LruCache(max_entries=2, max_bytes=10_000)
    cache.put("a", _value(1))
    cache.put("b", _value(1))
    cache.get("a")  # "b" becomes the oldest
    cache.put("c", _value(1))
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.stats.evictions == 1


def test_evicts_by_bytes_and_refuses_oversized_values():
    cache: LruCache[dict] = LruCache(max_entries=10, max_bytes=100)
    cache.put("a", _value(10))  # 40 bytes
    cache.put("b", _value(10))
    cache.put("c", _value(10))  # 120 bytes in all -> "a" goes
    assert "a" not in cache and len(cache) == 2 and cache.nbytes == 80
    cache.put("huge", _value(100))
    assert "huge" not in cache and len(cache) == 2


def test_replacing_a_key_updates_the_byte_count():
    cache: LruCache[dict] = LruCache(max_entries=10, max_bytes=1000)
    cache.put("a", _value(10))
    cache.put("a", _value(20))
    assert cache.nbytes == 80 and len(cache) == 1


def test_clear_empties_everything():
    cache: LruCache[dict] = LruCache()
    cache.put("a", _value(3))
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("a") is None


def test_tensor_bytes_walks_nested_values_and_result_objects():
    class Result:
        def __init__(self) -> None:
            self.lora = {"x": torch.zeros(4, dtype=torch.float16)}

    assert tensor_bytes({"a": [torch.zeros(2), (torch.zeros(3),)]}) == 20
    assert tensor_bytes(Result()) == 8


def test_concurrent_use_keeps_the_bounds():
    cache: LruCache[dict] = LruCache(max_entries=8, max_bytes=8 * 40)

    def worker(offset: int) -> None:
        for i in range(200):
            cache.put((offset, i % 12), _value(10))
            cache.get((offset, (i * 7) % 12))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 8 and cache.nbytes == 40 * len(cache)
    assert cache.stats.hits + cache.stats.misses == 6 * 200
