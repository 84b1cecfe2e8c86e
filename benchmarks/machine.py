"""The machine line every benchmark prints, so figures are never quoted without it."""

import os
import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """E.g. "AMD EPYC 7B13, 2 cores, 24 GB RAM"."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{cpu_name()}, {os.cpu_count()} cores, {memory:.0f} GB RAM"
