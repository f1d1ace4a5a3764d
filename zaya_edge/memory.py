"""The process's peak resident memory, the same unit on every platform.

`resource.getrusage` is absent on Windows and reports KiB on Linux but bytes on macOS; this is
the one place that knows. Used by the runtime's stats and by the benchmarks.
"""

from __future__ import annotations

import ctypes
import sys


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (0 where the platform cannot say)."""
    if sys.platform == "win32":
        return _windows_peak_working_set()
    try:
        import resource
    except ImportError:  # an exotic platform: no figure rather than a crash
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _windows_peak_working_set() -> int:
    class Counters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
        _fields_ = [("cb", ctypes.c_ulong), ("PageFaultCount", ctypes.c_ulong)] + [
            (name, ctypes.c_size_t) for name in (
                "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")
        ]

    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    try:
        process = ctypes.windll.kernel32.GetCurrentProcess()
        if not ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
            return 0
    except (AttributeError, OSError):
        return 0
    return int(counters.PeakWorkingSetSize)
