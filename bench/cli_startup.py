"""`hackathon --help` wall time (target < 0.5 s): the CLI must not import torch/NeMo at start-up.

Prints the median of 5 runs and, for scale, the time of `python -c "import torch"` in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

exe = Path(sys.executable).parent / "hackathon"


def wall(cmd: list[str], n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


help_s = wall([str(exe), "--help"])
torch_s = wall([sys.executable, "-c", "import torch"], n=1)
print(f"hackathon --help: {help_s:.3f} s (target < 0.5 s) — {'OK' if help_s < 0.5 else 'TOO SLOW'}")
print(f"import torch alone: {torch_s:.3f} s (ratio torch/help = {torch_s / help_s:.1f}x)")
