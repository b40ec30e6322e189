"""Peak RSS in the unit each platform reports: Linux KiB, macOS bytes; unknown is None."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from hyperlora_ext import memory


def fake_resource(max_rss: int) -> SimpleNamespace:
    usage = SimpleNamespace(ru_maxrss=max_rss)
    return SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: usage)


@pytest.mark.parametrize(
    ("platform", "max_rss", "mib"),
    [
        ("linux", 3 * 2**20, 3072.0),  # KiB
        ("darwin", 3 * 2**30, 3072.0),  # bytes: a 3 GiB peak, under the old 4 GiB guess
        ("darwin", 200 * 2**20, 200.0),
        ("darwin", 6 * 2**30, 6144.0),
    ],
)
def test_each_platforms_unit(monkeypatch, platform, max_rss, mib):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setitem(sys.modules, "resource", fake_resource(max_rss))
    assert memory.peak_rss_mb() == pytest.approx(mib)


def test_without_resource_the_peak_is_unknown(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "resource", None)  # import raises ImportError
    assert memory.peak_rss_mb() is None


def test_the_real_peak_is_plausible():
    peak = memory.peak_rss_mb()
    assert peak is None or 10 < peak < 10**6  # MiB: more than an empty interpreter, not KiB


def test_freed_memory_is_handed_back_on_linux_only(monkeypatch):
    if sys.platform == "linux":  # glibc here; musl would say False
        assert memory.return_freed_memory() is True
    for platform in ("win32", "darwin"):
        monkeypatch.setattr(sys, "platform", platform)
        assert memory.return_freed_memory() is False  # their allocators return large frees
