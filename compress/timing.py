"""Timing: latency as median and p90 after warm-up, and speed ratios timed interleaved.

Several models are timed in one loop (each round runs every model once, the order
rotating), so a load that comes and goes on a shared machine falls on all of them alike;
a speed ratio is the median of the round-by-round ratios with a distribution-free 95%
interval. A busy machine is detected (p90 spread, other programs' CPU share, ratios that
disagree) and flagged rather than hidden. See docs/measurement.md.
"""
from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from compress.limits import check, check_optional
from compress.progress import Cancel, Cancelled, OnProgress, emit


@dataclass
class Latency:
    median: float      # ms
    p90: float         # ms
    mean: float        # ms
    batch: int
    device: str
    threads: int
    runs: int
    warmup: int
    interleaved_with: list[str] = field(default_factory=list)   # models timed in the same loop
    loop: str = ""             # id of that loop: two latencies with the same id were timed together
    others_cpu: Optional[float] = None   # share of the machine's CPU other programs used meanwhile (Linux)

    @property
    def noisy(self) -> bool:
        """A busy machine: the runs disagree (the 90th percentile is over 1.5× the median),
        or other programs used over a quarter of the CPU while timing (a steady load slows
        every run alike, so it does not show in the spread, yet it biases ratios between
        runtimes that use their threads differently)."""
        return self.p90 > NOISY_P90 * self.median or (self.others_cpu or 0.0) > NOISY_OTHERS


NOISY_P90 = 1.5          # p90/median above this: the machine was busy while timing
NOISY_RATIO = 1.35       # a speed ratio's 95% interval wider than this factor (hi/lo): ratios disagree
NOISY_OTHERS = 0.25      # other programs used more than this share of all cores while timing


def _cpu_snapshot() -> Optional[tuple[float, float, float]]:
    """(all cores' busy seconds, all cores' seconds, this process's CPU seconds) from
    /proc/stat (Linux; None elsewhere). Steal time counts as busy: another tenant ran."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    total = sum(fields[:8])                           # user nice system idle iowait irq softirq steal
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (total - idle) / hz, total / hz, time.process_time()


def others_cpu_share(start, end) -> Optional[float]:
    """The share of all cores other programs used between two :func:`_cpu_snapshot`s."""
    if start is None or end is None or end[1] - start[1] <= 0:
        return None
    others = (end[0] - start[0]) - (end[2] - start[2])
    return max(0.0, min(1.0, others / (end[1] - start[1])))


@dataclass
class Speedup:
    """How many times faster ``other`` ran than ``base``, from runs timed in one interleaved
    loop (so both saw the same load): the median of the per-round ratios base/other, with a
    distribution-free 95% interval of that median and the min–max of the ratios."""
    base: str
    other: str
    ratio: float                     # >1: other is faster
    ci95: tuple[float, float]
    spread: tuple[float, float]      # min and max of the per-round ratios
    pairs: int
    noisy: bool
    why: str = ""                    # what made it noisy
    role: str = ""                   # "total", "runtime", "compression" or "from start" (see Profile.speed)

    def to_json(self) -> dict:
        d = asdict(self)
        d["ci95"], d["spread"] = list(self.ci95), list(self.spread)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Speedup":
        return cls(**{**d, "ci95": tuple(d["ci95"]), "spread": tuple(d["spread"])})


def measure_latency(model: nn.Module, input_size: tuple[int, int, int], device: torch.device,
                    batch: int = 1, warmup: int = 10, runs: int = 50,
                    threads: Optional[int] = None, on_progress: Optional[OnProgress] = None,
                    cancel: Optional[Cancel] = None) -> Latency:
    """Median and p90 wall time of ``model(x)`` over ``runs`` timed runs after ``warmup``."""
    return time_interleaved([("model", model, device)], input_size, batch=batch, warmup=warmup, runs=runs,
                            threads=threads, on_progress=on_progress, cancel=cancel).latency["model"]


@dataclass
class Timing:
    """Wall times (ms) of several models timed in one interleaved loop."""
    latency: dict[str, Latency]
    times: dict[str, list[float]]          # per model, one timed run per round, in round order

    def speedup(self, base: str, other: str, role: str = "") -> Speedup:
        """``base``'s time over ``other``'s, round by round (>1: ``other`` is faster)."""
        ratios = [b / o for b, o in zip(self.times[base], self.times[other]) if o > 0]
        lo, hi = median_ci95(ratios)
        why = [f"{n}'s slowest runs (p90) took {self.latency[n].p90 / self.latency[n].median:.1f}× its median"
               for n in (base, other) if self.latency[n].p90 > NOISY_P90 * self.latency[n].median]
        others = self.latency[base].others_cpu
        if others is not None and others > NOISY_OTHERS:
            why.append(f"other programs used {100 * others:.0f}% of the CPU while timing")
        if lo > 0 and hi / lo > NOISY_RATIO:
            why.append(f"the round-by-round ratios disagree (95% interval ×{lo:.2f}–×{hi:.2f})")
        if why:
            # a busy machine adds error that the median's sampling interval does not see (a load
            # shifts whole stretches of rounds alike): the interval becomes the ratios' full range
            lo, hi = min(ratios), max(ratios)
        return Speedup(base=base, other=other, ratio=float(statistics.median(ratios)), ci95=(lo, hi),
                       spread=(min(ratios), max(ratios)), pairs=len(ratios), noisy=bool(why),
                       why="; ".join(why), role=role)

    def set_latency(self, name: str, profile: dict) -> dict:
        """Put ``name``'s latency into a Profile JSON (as :meth:`Profile.to_json` writes it)."""
        lat = self.latency[name]
        profile["latency_ms"] = {**asdict(lat), "noisy": lat.noisy}
        return profile


def median_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Distribution-free 95% interval of the median: the order statistics whose ranks a
    Binomial(n, ½) brackets with 95% probability (min–max below 6 values)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return (float("nan"), float("nan"))
    k, cdf = -1, 0.0                 # k: the largest rank with P(B <= k) <= 2.5%
    for i in range(n):
        cdf += math.comb(n, i) / 2 ** n
        if cdf > 0.025:
            break
        k = i
    return (xs[0], xs[-1]) if k < 0 else (xs[k], xs[n - 1 - k])


def time_interleaved(models: Sequence[tuple[str, nn.Module, torch.device]], input_size: tuple[int, int, int],
                     batch: int = 1, warmup: int = 10, runs: int = 50, threads: Optional[int] = None,
                     on_progress: Optional[OnProgress] = None, cancel: Optional[Cancel] = None) -> Timing:
    """Time several models in one loop: each round runs every model once (A, B, C, then
    B, C, A, …: the order rotates so none always runs first), so a load that comes and goes
    on a shared machine falls on all of them alike and their round-by-round ratios stay
    fair. ``warmup`` untimed rounds come first. CUDA is synchronised around every run.
    Each model runs on its own device with a batch of random images of ``input_size``."""
    batch, runs, warmup = check("batch", batch), check("runs", runs), check("warmup", warmup)
    threads = check_optional("threads", threads)
    names = [n for n, _, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ: {names}")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        inputs = {}
        for _, m, dev in models:
            m.to(dev).eval()
            if str(dev) not in inputs:
                inputs[str(dev)] = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0)).to(dev)
        times: dict[str, list[float]] = {n: [] for n in names}
        k = len(models)
        cpu0 = None
        total = warmup + runs
        with torch.inference_mode():
            for r in range(total):
                if r == warmup:                    # the timed rounds start: who else uses the CPU from now
                    cpu0 = _cpu_snapshot()
                for j in range(k):
                    name, m, dev = models[(r + j) % k]
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("latency measurement cancelled")
                    sync = torch.cuda.synchronize if dev.type == "cuda" else None
                    x = inputs[str(dev)]
                    if sync:
                        sync()
                    t0 = time.perf_counter()
                    m(x)
                    if sync:
                        sync()
                    if r >= warmup:
                        times[name].append((time.perf_counter() - t0) * 1000)

                if r % 5 == 0:
                    emit(on_progress, "latency", (r + 1) / total,
                         f"timing round {r + 1}/{total}" + (f" ({k} models in turn)" if k > 1 else ""))
        others = others_cpu_share(cpu0, _cpu_snapshot())
        lat = {}
        loop = uuid.uuid4().hex[:12]
        for name, _, dev in models:
            t = times[name]
            lat[name] = Latency(median=float(statistics.median(t)), p90=float(np.percentile(t, 90)),
                                mean=float(np.mean(t)), batch=batch, device=str(dev),
                                threads=torch.get_num_threads(), runs=runs, warmup=warmup,
                                interleaved_with=[n for n in names if n != name], loop=loop,
                                others_cpu=others)
        return Timing(latency=lat, times=times)
    finally:
        torch.set_num_threads(old_threads)
