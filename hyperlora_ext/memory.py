"""Peak resident memory of this process, on Linux, macOS and Windows alike.

``resource`` exists only on Unix and its ``ru_maxrss`` unit differs (Linux KiB, macOS bytes);
Windows reports the peak working set through ``GetProcessMemoryInfo``. Nothing Unix-only is
imported at module level, so this module (and all that use it) import on Windows.
"""

from __future__ import annotations

import sys


def peak_rss_mb() -> float | None:
    """Peak resident set size in MiB so far, or None where the platform does not tell."""
    try:
        if sys.platform == "win32":
            return _windows_peak() / 2**20
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError, AttributeError, ValueError):
        return None
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _windows_peak() -> int:
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [
            ("cb", wintypes.DWORD),
            ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t),
            ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
            ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t),
            ("PeakPagefileUsage", ctypes.c_size_t),
        ]

    counters = Counters()
    counters.cb = ctypes.sizeof(counters)
    process = ctypes.windll.kernel32.GetCurrentProcess()  # type: ignore[attr-defined]
    if not ctypes.windll.psapi.GetProcessMemoryInfo(  # type: ignore[attr-defined]
        process, ctypes.byref(counters), counters.cb
    ):
        raise OSError("GetProcessMemoryInfo failed")
    return int(counters.PeakWorkingSetSize)
