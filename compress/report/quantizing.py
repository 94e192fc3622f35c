"""What the Quantize page says: every mode measured in its runtime next to the FP32
baselines, one row each, how the table was measured, and the layers that lose most."""
from __future__ import annotations

from dataclasses import dataclass, field

from compress import quantize as Q
from compress.measure import Profile
from compress.report.speed import busy_warning, speed_against, speed_entry, speed_phrase
from compress.runtimes import PYTORCH

# how the Quantize table's numbers read (pandas Styler.format)
TABLE_FORMAT = {"size (MB)": "{:.2f}", "× size": "×{:.2f}", "latency median (ms)": "{:.2f}",
                "latency p90 (ms)": "{:.2f}", "speed-up vs PyTorch FP32": "{:.2f}×",
                "speed-up vs FP32 in its runtime": "{:.2f}×", "top-1 %": "{:.2f}",
                "same top-1 as FP32 %": "{:.1f}", "history run": "#{:.0f}"}


@dataclass
class QuantTable:
    rows: list[dict]                                   # one per model: baselines first, then the variants
    variants: list = field(default_factory=list)       # (row name, Result) of each variant that ran
    errors: list[str] = field(default_factory=list)    # "mode: why" of each that failed
    busy: str = ""                                     # the warning when speed was timed on a busy machine
    caption: str = ""                                  # how every figure was measured
    speed_lines: list[str] = field(default_factory=list)   # each variant's speed against the original


def runtime_name(result) -> str:
    """A quantized model's row name: the runtime that ran it, and its device for a mode
    that can run on a GPU."""
    mode = Q.MODES[result.recipe.quantize.mode]
    return result.model.runtime + (f" on {result.device}" if "cuda" in mode.devices else "")


def _same_runtime_speedup(p: Profile, sp):
    """INT8 against FP32 in the runtime that runs it: measured in the same loop for ONNX
    Runtime and ExecuTorch; PyTorch's own FP32 is the reference for PyTorch modes."""
    comp = speed_entry(p.to_json(), "compression")
    if comp is not None:
        return comp["ratio"]
    return sp["ratio"] if sp and p.runtime.startswith(PYTORCH) else None


def _caption(base: Profile, ok: list) -> str:
    lat0 = base.latency_ms
    n = base.accuracy.n if base.accuracy else 0
    n_cal = max((s["report"].get("calibration_images", 0) for r in ok for s in r.steps if s["step"] == "quantize"),
                default=0)
    return (f"Latency: batch 1, {lat0.runs} rounds after {lat0.warmup} warm-up; in each round every "
            f"model below runs once, in turn, so all of them see the same load. {lat0.threads} "
            f"threads, CPU unless noted. Speed-up: the median of the round-by-round ratios, with its "
            f"95% interval. Accuracy: the same {n} images for every row, the same "
            f"images as every page with these sidebar settings ({n_cal} other images, from a separate "
            "pool, calibrated INT8). Size: the bytes of each runtime's own file. Every row below the "
            "baselines is a run in the history, with its model.")


def quantize_table(out, from_compressed: bool) -> QuantTable:
    """The Quantize page's table from ``pipeline.run_variants``'s Variants: the original
    (when the variants start from a compressed model), PyTorch FP32, the float baselines
    in other runtimes, then every variant, each with size, latency, speed-ups (per-round
    ratios from one interleaved loop), accuracy and agreement with FP32."""
    ok = [r for r in out.results if not isinstance(r, dict)]
    refs = [r for r in out.baselines if not isinstance(r, dict)]
    errors = [f"{r['config'].mode}: {r['error']}" for r in out.baselines + out.results if isinstance(r, dict)]
    named = ([("Original (unpruned) FP32", Profile.from_json(out.before), None)] if from_compressed else []) \
        + [("PyTorch FP32", Profile.from_json(out.reference), None)] \
        + [(runtime_name(r), Profile.from_json(r.after), None) for r in refs] \
        + [(runtime_name(r), Profile.from_json(r.after), r) for r in ok]
    base = Profile.from_json(out.reference)
    base_name = "float model" if from_compressed else "original"   # its name in the timing loop
    rows, busy = [], []
    for name, p, r in named:
        lat, acc = p.latency_ms, p.accuracy
        sp = speed_against(p.to_json(), base_name)
        if sp is not None and sp["noisy"]:
            busy.append(f"{name}: {sp['why']}")
        rows.append({
            "model": name, "size (MB)": p.size_bytes / 1e6, "× size": p.size_bytes / base.size_bytes,
            "latency median (ms)": lat.median, "latency p90 (ms)": lat.p90,
            # per-round ratios from one interleaved loop; the baselines' own rows from medians of that loop
            "speed-up vs PyTorch FP32": sp["ratio"] if sp else base.latency_ms.median / lat.median,
            "speed-up 95% interval": f"{sp['ci95'][0]:.2f}–{sp['ci95'][1]:.2f}" + (" ⚠ busy" if sp["noisy"] else "")
            if sp else "",
            "speed-up vs FP32 in its runtime": _same_runtime_speedup(p, sp),
            "top-1 %": None if acc is None else acc.top1,
            "95% CI": "" if acc is None else f"{acc.ci95[0]:.1f}–{acc.ci95[1]:.1f}",
            "same top-1 as FP32 %": 100.0 if r is None and name == "PyTorch FP32" else p.agreement_top1,
            "history run": None if r is None else r.run_id,
            "notes": " ".join(p.notes)})
    variants = [(name, r) for name, _, r in named if r is not None]
    lines = [f"**{name}** against the original: {phrase}." for name, r in variants
             for phrase in [speed_phrase(out.before, r.after)] if phrase]
    return QuantTable(rows, variants, errors, busy_warning(busy) if busy else "", _caption(base, ok), lines)


def rank_layers(model, sets, calibration: int) -> list:
    """Each Conv/Linear layer quantized alone and compared with its float output (SQNR),
    on at most 128 calibration photos of the scoring pool."""
    n = min(calibration, 128)
    return Q.layer_sqnr(model, sets.scoring_batches(n), max_images=n)


def sqnr_sentence(errors: list) -> str:
    """The three layers with the lowest SQNR, and what to do with them."""
    worst = sorted(errors, key=lambda e: e.sqnr_db)[:3]
    return ("Lowest SQNR: " + ", ".join(f"{e.layer} ({e.sqnr_db:.1f} dB)" for e in worst) +
            ". Add them to *Layers to keep in float* and measure again.")
