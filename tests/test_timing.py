"""Speed comparisons that survive a shared machine: models timed in turn (interleaved),
per-round ratios with a 95% interval, busy-machine flags, and summaries that never state a
noisy figure."""
import copy
import os
import subprocess
import sys
import time

import torch

from compress import timing as T
from compress.prune import StructuredConfig, prune_structured
from compress.report import BUSY, speed_phrase, summary
from compress.checkpoint import load_model

CPU = torch.device("cpu")


def test_median_interval_uses_binomial_ranks():
    # n = 50: P(B <= 17) = 1.6% and P(B <= 18) = 3.2% for B ~ Binomial(50, 1/2): ranks 18 and 33
    assert T.median_ci95(list(range(1, 51))) == (18, 33)
    assert T.median_ci95([3.0, 1.0, 2.0]) == (1.0, 3.0)           # too few values: min-max


def test_every_model_gets_the_same_rounds_and_a_twin_runs_as_fast():
    loaded = load_model("resnet18_cifar10")
    small, _ = prune_structured(loaded.model, StructuredConfig(ratio=0.5), loaded.spec.input_size)
    twin = copy.deepcopy(loaded.model)
    t = T.time_interleaved([("original", loaded.model, CPU), ("pruned", small, CPU), ("twin", twin, CPU)],
                           loaded.spec.input_size, runs=24, warmup=3, threads=1)
    assert [len(t.times[n]) for n in ("original", "pruned", "twin")] == [24, 24, 24]
    assert t.latency["original"].interleaved_with == ["pruned", "twin"]
    assert t.latency["pruned"].runs == 24 and t.latency["pruned"].threads == 1
    same = t.speedup("original", "twin")
    assert 0.7 < same.ratio < 1.4, same
    faster = t.speedup("original", "pruned", "total")
    assert faster.ratio > 1.3 and faster.ci95[0] <= faster.ratio <= faster.ci95[1] and faster.role == "total"
    assert faster.spread[0] <= faster.ci95[0] and faster.ci95[1] <= faster.spread[1]


def _speed(original, pruned, input_size):
    t = T.time_interleaved([("original", original, CPU), ("pruned", pruned, CPU)], input_size,
                           runs=60, warmup=5, threads=1)
    return t, t.speedup("original", "pruned", "total")


def test_a_busy_cpu_is_flagged_and_its_interval_still_covers_the_idle_ratio():
    loaded = load_model("resnet18_cifar10")
    pruned, _ = prune_structured(loaded.model, StructuredConfig(ratio=0.5), loaded.spec.input_size)
    _, idle = _speed(loaded.model, pruned, loaded.spec.input_size)
    cores = len(os.sched_getaffinity(0))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)
        timing, busy = _speed(loaded.model, pruned, loaded.spec.input_size)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert busy.noisy and busy.why, busy
    others = timing.latency["original"].others_cpu
    if others is not None:                                  # Linux: /proc/stat sees the busy loops
        assert others > T.NOISY_OTHERS and "other programs used" in busy.why, (others, busy.why)
    assert busy.ci95[0] <= idle.ratio <= busy.ci95[1], (idle, busy)
    # a summary never states a noisy figure as a headline
    before = timing.set_latency("original", {"size_bytes": 2, "accuracy": None})
    after = timing.set_latency("pruned", {"size_bytes": 1, "accuracy": None, "speed": [busy.to_json()]})
    text = summary(before, after)
    assert BUSY in text and "faster" not in text and "slower" not in text
    calm = dict(after, speed=[{**busy.to_json(), "noisy": False, "why": ""}])
    assert speed_phrase(before, calm).startswith(f"{busy.ratio:.1f}× faster")
