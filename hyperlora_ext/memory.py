"""Peak resident memory of this process and the machine's RAM, on Linux, macOS and Windows alike.

``resource`` exists only on Unix and its ``ru_maxrss`` unit differs (Linux KiB, macOS bytes);
Windows reports the peak working set through ``GetProcessMemoryInfo`` and the physical memory
through ``GlobalMemoryStatusEx``. Nothing Unix-only is imported at module level, so this module
(and all that use it) import on Windows.
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


def total_ram_bytes() -> int | None:
    """Physical memory of the machine, or None where the platform does not tell."""
    try:
        if sys.platform == "win32":
            return _windows_total()
        import os

        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ImportError, OSError, AttributeError, ValueError):
        return None


def _windows_total() -> int:
    import ctypes
    from ctypes import wintypes

    class Status(ctypes.Structure):
        _fields_ = [
            ("dwLength", wintypes.DWORD),
            ("dwMemoryLoad", wintypes.DWORD),
            ("ullTotalPhys", ctypes.c_uint64),
            ("ullAvailPhys", ctypes.c_uint64),
            ("ullTotalPageFile", ctypes.c_uint64),
            ("ullAvailPageFile", ctypes.c_uint64),
            ("ullTotalVirtual", ctypes.c_uint64),
            ("ullAvailVirtual", ctypes.c_uint64),
            ("ullAvailExtendedVirtual", ctypes.c_uint64),
        ]

    status = Status()
    status.dwLength = ctypes.sizeof(status)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        raise OSError("GlobalMemoryStatusEx failed")
    return int(status.ullTotalPhys)


def return_freed_memory() -> bool:
    """Hand memory freed by Python / torch back to the OS where the allocator keeps it.

    glibc keeps freed blocks under its mmap threshold (it grows to 32 MB after large frees, so the
    CLIP tower's tensors land on its heap) for reuse: unloading the encoders would leave RSS
    unchanged. ``malloc_trim`` gives those pages back. Other C libraries and Windows return large
    frees by themselves; there this does nothing. Returns whether a trim ran.
    """
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return False
    trim(0)
    return True
