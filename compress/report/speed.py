"""Speed figures in words: how many times faster, timed how, and whether the machine was
busy. A noisy figure is flagged, never stated as a result."""
from __future__ import annotations

from typing import Optional

from compress.quantize import MODES

BUSY = "the machine was busy; speed figures are unreliable, measure again"


def times_faster(r: float) -> str:
    return f"{r:.1f}× faster" if r >= 1 else f"{1 / r:.1f}× slower"


def speed_entry(after: dict, role: str) -> Optional[dict]:
    """The Speedup JSON of ``role`` ("total", "runtime", "compression", "from start") in a
    Profile JSON's ``speed`` list, or None."""
    return next((s for s in after.get("speed") or [] if s.get("role") == role), None)


def speed_against(after: dict, base: str) -> Optional[dict]:
    """The Speedup JSON in a Profile JSON's ``speed`` list whose base is ``base`` (a name in
    the timing loop: "original", "float model", "ort-fp32", …), or None."""
    return next((s for s in after.get("speed") or [] if s.get("base") == base), None)


def speed_ratio(before: dict, after: dict) -> tuple[Optional[float], bool, str]:
    """(how many times faster ``after`` ran than ``before``, noisy?, how it was timed).
    From the interleaved per-round ratios when the run has them; from two medians (timed
    in separate loops, e.g. a run recorded by an older version) otherwise."""
    total = speed_entry(after, "total")
    if total is not None:
        return total["ratio"], total["noisy"], total.get("why", "")
    lb, la = before.get("latency_ms"), after.get("latency_ms")
    if not (lb and la):
        return None, False, ""
    noisy = [f"{n}'s p90 is {x['p90'] / x['median']:.1f}× its median" for n, x in (("before", lb), ("after", la))
             if x["p90"] > 1.5 * x["median"]]
    return lb["median"] / la["median"], bool(noisy), "; ".join(noisy + ["timed in separate loops"])


def speed_phrase(before: dict, after: dict) -> Optional[str]:
    """The speed part of a summary: the ratio with its interval, split into runtime switch
    and compression where the run measured both. A noisy figure is never stated."""
    ratio, noisy, why = speed_ratio(before, after)
    if ratio is None:
        return None
    if noisy:
        return f"speed not stated: {BUSY} ({why})"
    total = speed_entry(after, "total")
    if total is None:
        return f"{times_faster(ratio)} ({why})"
    lo, hi = total["ci95"]
    text = f"{times_faster(ratio)} (95% interval ×{lo:.2f}–×{hi:.2f}, {total['pairs']} rounds timed in turn)"
    rt, comp = speed_entry(after, "runtime"), speed_entry(after, "compression")
    if rt and comp:
        if rt["noisy"] or comp["noisy"]:
            text += "; how much of it came from the runtime is unreliable (the machine was busy)"
        else:
            where = _runtime_of(rt["other"])
            text += (f": ×{rt['ratio']:.2f} from running in {where} instead of PyTorch (both float), "
                     f"×{comp['ratio']:.2f} from compression within that runtime")
    return text


def _runtime_of(name: str) -> str:
    """The runtime a timing-loop entry ran in: "original in ExecuTorch FP32 (XNNPACK)" names
    it; a quantize mode's float twin ("ort-fp32") through its registry entry."""
    if name.startswith("original in "):
        return name[len("original in "):]
    return MODES[name].runtime if name in MODES else name



def time_change(before: dict, after: dict) -> str:
    """after's time as a multiple of before's, from the per-round ratios, with their 95%
    interval; marked when the machine was busy."""
    ratio, noisy, _ = speed_ratio(before, after)
    total = speed_entry(after, "total")
    text = f"×{1 / ratio:.2f}"
    if total:
        lo, hi = total["ci95"]
        text += f" (×{1 / hi:.2f}–×{1 / lo:.2f})"
    return text + (" ⚠ busy machine: unreliable" if noisy else "")



def same_run_faster(before: dict, after: dict) -> Optional[float]:
    """How many times faster ``after`` ran than ``before`` (two Profile JSONs of one run),
    rounded to two decimals, or None when the run timed no latency."""
    ratio, _, _ = speed_ratio(before, after)
    return None if ratio is None else round(ratio, 2)


def timing_note(before: dict, after: dict) -> str:
    """How a run's speed-up was timed (in turn with its 95% interval, or in separate loops),
    led by a warning when the machine was busy; "" without a speed-up."""
    ratio, noisy, _ = speed_ratio(before, after)
    if ratio is None:
        return ""
    total = speed_entry(after, "total")
    how = f"in turn, 95% ×{total['ci95'][0]:.2f}–×{total['ci95'][1]:.2f}" if total else "separate loops"
    return ("⚠ busy machine: unreliable; " if noisy else "") + how


def timed_together(a: dict, b: dict) -> bool:
    """Whether two Profile JSONs were timed in one interleaved loop (so their latencies
    compare directly); a profile with itself always was."""
    la, lb = a.get("latency_ms") or {}, b.get("latency_ms") or {}
    return a is b or bool(la.get("loop") and la.get("loop") == lb.get("loop"))


def busy_warning(why: list[str]) -> str:
    """The warning for figures timed on a busy machine, each entry saying which and why."""
    return f"⚠ {BUSY[0].upper() + BUSY[1:]}. " + "; ".join(why) + "."


def noisy_latency(lat) -> str:
    """The warning for a latency (a timing.Latency) whose slowest runs were far off its
    median; "" when it is not noisy."""
    return f"⚠ The slowest runs (p90) took {lat.p90 / lat.median:.1f}× the median: {BUSY}." if lat.noisy else ""


def photo_speed(sp) -> str:
    """The speed part of the Classify page's verdict, from the Speedup of the two models
    timed in turn on one photo (None: not timed)."""
    if sp is None:
        return ""
    if sp.noisy:
        return f" Speed is not stated: {BUSY} ({sp.why})."
    return (f" On this photo the compressed model ran {times_faster(sp.ratio)} than the original "
            f"(95% interval ×{sp.ci95[0]:.2f}–×{sp.ci95[1]:.2f} over {sp.pairs} rounds in turn).")
