"""How much memory this process has used: the host's peak resident set and its share of the GPU.

Shared by the benchmarks (`echobench.bench`) and the packing of several cells per GPU
(`echobench.harness.packing`), which measure the same quantities.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def own_gpu_mib() -> float | None:
    """This process's memory on the GPU as nvidia-smi reports it (context included), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()) and parts[1].isdigit():
            return float(parts[1])
    return None
