"""Interleaved timing on an idle and a loaded CPU: resnet18_cifar10 against its 0.5-ratio
prune, timed in turn (compress.measure.time_interleaved), then again while HOGS busy-loop
processes run. Prints medians, p90s, the per-round ratio with its 95% interval, and the
busy flag. Results: docs/measurement.md.

    PYTHONPATH=. .venv/bin/python bench/interleaved_timing.py [THREADS=1] [HOGS=2] [RUNS=50]
"""
import subprocess
import sys
import time

import torch

from compress import prune as P
from compress.checkpoint import load_model
from compress.timing import time_interleaved

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
hogs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 50
L = load_model("resnet18_cifar10")
small, _ = P.prune_structured(L.model, P.StructuredConfig(ratio=0.5), L.spec.input_size)
cpu = torch.device("cpu")


def go(tag):
    t = time_interleaved([("original", L.model, cpu), ("pruned", small, cpu)], L.spec.input_size,
                         runs=runs, warmup=10, threads=threads)
    s = t.speedup("original", "pruned")
    lat = " | ".join(f"{n} {x.median:.2f} / {x.p90:.2f}" for n, x in t.latency.items())
    print(f"| {tag} | {lat} | ×{s.ratio:.2f} ({s.ci95[0]:.2f}–{s.ci95[1]:.2f}) | "
          f"{'yes: ' + s.why if s.noisy else 'no'} |", flush=True)


print(f"threads {threads}, {hogs} busy-loop processes, {runs} rounds")
go("idle")
busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
time.sleep(1)
try:
    go("busy")
    go("busy")
finally:
    for b in busy:
        b.kill()
go("idle")
