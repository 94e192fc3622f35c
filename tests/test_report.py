"""compress.report: the tables and sentences every page and the CLI show, from hand-made
Profiles and runs (no model is loaded, nothing is timed)."""
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import pytest
import torch

from compress.distill import RecoverConfig
from compress.history import Run
from compress.images import Prediction
from compress.measure import Accuracy, Profile
from compress.progress import ProgressEvent
from compress.prune import StructuredConfig
from compress.quantize import QuantConfig
from compress.recipe import Recipe
from compress.report import (BUSY, noisy_latency, photo_speed, profile_table, same_run_faster, text_table,
                             timed_together, timing_note)
from compress.report import figures, ladder, photo, pruning, quantizing, recovery, runs
from compress.timing import Latency, Speedup


def lat(median=10.0, p90=11.0, loop="", **kw) -> Latency:
    return Latency(median=median, p90=p90, mean=median, batch=1, device="cpu", threads=2, runs=30, warmup=5,
                   loop=loop, **kw)


def acc(top1=80.0, n=100, top5=95.0, source="") -> Accuracy:
    return Accuracy(top1=top1, top5=top5, n=n, ci95=(top1 - 8, top1 + 7), source=source)


def profile(**kw) -> Profile:
    base = dict(model="resnet18_cifar10", params=11_181_642, nonzero_params=11_000_000, size_bytes=44_800_000,
                size_gzip_bytes=26_400_000, macs=37_000_000, input_size=(3, 32, 32), latency_ms=lat(),
                peak_memory_bytes=130_000, accuracy=acc(), weights="trained")
    base.update(kw)
    return Profile(**base)


def speed(ratio, noisy=False, role="total", base="original", lo=None, hi=None) -> dict:
    return Speedup(base, "compressed", ratio, (lo or ratio * 0.9, hi or ratio * 1.1), (ratio * 0.8, ratio * 1.2),
                   30, noisy, "p90 is 2.0× the median" if noisy else "", role).to_json()


# ---------------------------------------------------------------- one model's profile


def test_profile_table_columns_values_and_how_each_was_measured():
    rows = profile_table(profile(accuracy=acc(source="the bundled sample")))
    assert all(list(r) == ["measure", "value", "how"] for r in rows)
    by = {r["measure"]: r for r in rows}
    assert list(by) == ["Latency, median", "Latency, p90", "Peak activation memory", "Top-1 accuracy",
                        "Top-5 accuracy"]
    assert by["Latency, median"]["value"] == "10.00 ms"
    assert by["Latency, median"]["how"] == "30 timed runs after 5 warm-up; batch 1, cpu, 2 threads"
    assert by["Peak activation memory"]["value"] == "0.13 MB"
    assert by["Top-1 accuracy"]["value"] == "80.00%"
    assert by["Top-1 accuracy"]["how"] == "n = 100 images, 95% interval 72.0–87.0%; the bundled sample"


def test_profile_table_for_the_cli_leads_with_the_counts_and_says_when_accuracy_is_missing():
    rows = profile_table(profile(accuracy=None, macs=None), "give labelled photos", counts=True)
    by = {r["measure"]: r for r in rows}
    assert rows[0] == {"measure": "Model", "value": "resnet18_cifar10", "how": "trained"}
    assert by["Parameters"]["value"] == "11.182 M" and by["Size (file)"]["value"] == "44.80 MB"
    assert by["MACs / image"]["value"] == "n/a"
    assert by["Accuracy"] == {"measure": "Accuracy", "value": "not measured", "how": "give labelled photos"}
    text = text_table(rows).splitlines()
    assert len(text) == len(rows) and text[1].startswith("Parameters") and "11.182 M" in text[1]
    assert len({line.index("11.182 M") for line in text if "11.182 M" in line}) == 1


def test_busy_and_clean_timings_read_differently():
    assert noisy_latency(lat(10.0, 11.0)) == ""
    busy = noisy_latency(lat(10.0, 20.0))
    assert busy.startswith("⚠ The slowest runs (p90) took 2.0× the median") and BUSY in busy
    before = profile().to_json()
    clean = profile(speed=[speed(2.0)]).to_json()
    noisy = profile(speed=[speed(2.0, noisy=True)]).to_json()
    assert same_run_faster(before, clean) == 2.0
    assert timing_note(before, clean) == "in turn, 95% ×1.80–×2.20"
    assert timing_note(before, noisy) == "⚠ busy machine: unreliable; in turn, 95% ×1.80–×2.20"
    assert timing_note(profile(latency_ms=None).to_json(), profile(latency_ms=None).to_json()) == ""
    sp = Speedup("Original", "Compressed", 1.5, (1.4, 1.6), (1.2, 1.8), 15, False)
    assert "ran 1.5× faster than the original (95% interval ×1.40–×1.60 over 15 rounds" in photo_speed(sp)
    assert photo_speed(replace(sp, noisy=True, why="p90 high")) == f" Speed is not stated: {BUSY} (p90 high)."
    assert photo_speed(None) == ""


def test_timed_together_only_for_one_loop():
    a, b = profile(latency_ms=lat(loop="L1")).to_json(), profile(latency_ms=lat(loop="L1")).to_json()
    assert timed_together(a, b) and timed_together(a, a)
    assert not timed_together(a, profile(latency_ms=lat(loop="L2")).to_json())
    assert not timed_together(profile().to_json(), profile().to_json())      # no loop id: separate loops


# ---------------------------------------------------------------- static figures and the prune page


def test_static_metrics_of_a_small_model_and_the_gzip_figure_filled_last():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    f = figures.static_figures(model, (3, 8, 8))
    assert f.params == 3 * 8 * 9 + 8 + 288 * 10 + 10 and f.macs == sum(r.macs for r in f.layers) > 0
    labels = [m["label"] for m in figures.static_metrics(f, (3, 8, 8))]
    assert labels == ["Parameters", "Nonzero parameters", "Size (torch.save)", "Size (gzip)", "MACs / image"]
    assert figures.static_metrics(f, (3, 8, 8))[3]["value"] == "…"
    assert figures.static_metrics(f, (3, 8, 8), gzip=2_500_000)[3]["value"] == "2.50 MB"
    assert figures.static_metrics(f, (3, 8, 8))[4]["help"].startswith("Multiply-accumulates at 8×8")
    assert [r["name"] for r in figures.layer_rows(f.layers)] == ["0", "3"]


def test_prune_estimate_metrics_and_caption():
    est = {"params": 2_860_000, "macs": 10_000_000, "ratio": 0.5, "exact": True}
    m = pruning.estimate_metrics(est, 11_180_000, 37_000_000)
    assert [x["value"] for x in m] == ["2.86 M", "0.010 G", "0.500"]
    assert m[0]["delta"] == "×0.26 of 11.18 M" and m[2]["delta"] is None
    assert "L1" not in pruning.estimate_caption(est, "taylor")
    assert "Global ranking with the taylor criterion" in pruning.estimate_caption({**est, "exact": False}, "taylor")


def test_pruned_table_adds_the_accuracy_before_batchnorm_reestimation():
    before, after = profile(), profile(params=2_000_000, accuracy=acc(70.0))
    report = SimpleNamespace(accuracy_as_pruned={"top1": 30.0, "ci95": [21.0, 40.0], "n": 100}, ratio=0.5,
                             criterion="l1", bn_images=512)
    rows = pruning.pruned_table(before, after, report)
    names = [r["measure"] for r in rows]
    i = names.index("Top-1 accuracy")
    assert names[i + 1] == "Top-1 as pruned, before BatchNorm re-estimation"
    assert rows[i + 1]["change"] == "-50.00 pts" and "the same 100 images" in rows[i + 1]["how"]
    head, bn = pruning.pruned_captions(7, report, after)
    assert "(#7 in the history)" in head and "ratio 0.500" in head and "512 scoring photos" in bn
    assert len(pruning.pruned_table(before, after, replace_ns(report, accuracy_as_pruned=None))) == len(rows) - 1
    assert pruning.pruned_captions(7, replace_ns(report, bn_images=0), after)[1].startswith("BatchNorm statistics")


def replace_ns(ns, **kw):
    return SimpleNamespace(**{**vars(ns), **kw})


# ---------------------------------------------------------------- the quantize page


@dataclass
class FakeResult:
    after: dict
    recipe: Recipe
    model: SimpleNamespace
    run_id: int = None
    device: str = "cpu"
    steps: list = field(default_factory=list)


def test_quantize_table_rows_speed_ups_and_the_busy_warning():
    before = profile(latency_ms=lat(10.0)).to_json()
    ort32 = profile(latency_ms=lat(8.0), runtime="ONNX Runtime FP32", speed=[speed(1.25, base="original")])
    int8 = profile(latency_ms=lat(4.0), size_bytes=11_200_000, runtime="ONNX Runtime INT8 (QDQ)",
                   agreement_top1=98.0, speed=[speed(2.5, base="original", noisy=True),
                                               speed(2.0, role="compression", base="ort-fp32")])
    rec = lambda mode: Recipe(quantize=QuantConfig(mode=mode))      # noqa: E731
    out = SimpleNamespace(
        before=before, reference=before,
        baselines=[FakeResult(ort32.to_json(), rec("ort-fp32"), SimpleNamespace(runtime="ONNX Runtime FP32"))],
        results=[FakeResult(int8.to_json(), rec("ort-int8"), SimpleNamespace(runtime="ONNX Runtime INT8 (QDQ)"),
                            run_id=3, steps=[{"step": "quantize", "report": {"calibration_images": 64}}]),
                 {"config": QuantConfig(mode="fp16"), "error": "needs CUDA"}])
    t = quantizing.quantize_table(out, from_compressed=False)
    assert [r["model"] for r in t.rows] == ["PyTorch FP32", "ONNX Runtime FP32", "ONNX Runtime INT8 (QDQ)"]
    assert list(t.rows[0]) == ["model", "size (MB)", "× size", "latency median (ms)", "latency p90 (ms)",
                               "speed-up vs PyTorch FP32", "speed-up 95% interval",
                               "speed-up vs FP32 in its runtime", "top-1 %", "95% CI", "same top-1 as FP32 %",
                               "history run", "notes"]
    fp32, ort, q = t.rows
    assert fp32["speed-up vs PyTorch FP32"] == 1.0 and fp32["same top-1 as FP32 %"] == 100.0
    assert ort["speed-up vs PyTorch FP32"] == 1.25 and ort["speed-up vs FP32 in its runtime"] is None
    assert q["× size"] == 0.25 and q["speed-up vs FP32 in its runtime"] == 2.0 and q["history run"] == 3
    assert q["speed-up 95% interval"] == "2.25–2.75 ⚠ busy" and q["same top-1 as FP32 %"] == 98.0
    assert t.errors == ["fp16: needs CUDA"] and [n for n, _ in t.variants] == ["ONNX Runtime INT8 (QDQ)"]
    assert t.busy.startswith("⚠ The machine was busy") and "ONNX Runtime INT8 (QDQ): p90 is 2.0×" in t.busy
    assert "(64 other images" in t.caption and "the same 100 images for every row" in t.caption
    # a noisy speed-up is never stated as a figure
    assert t.speed_lines == [f"**ONNX Runtime INT8 (QDQ)** against the original: speed not stated: {BUSY} "
                             "(p90 is 2.0× the median)."]


def test_sqnr_sentence_names_the_three_worst_layers():
    errs = [SimpleNamespace(layer=f"l{i}", sqnr_db=float(d)) for i, d in enumerate([30, 12, 25, 8, 40])]
    assert quantizing.sqnr_sentence(errs).startswith("Lowest SQNR: l3 (8.0 dB), l1 (12.0 dB), l2 (25.0 dB).")


# ---------------------------------------------------------------- the compare page


def run(i, before, after, status="done", name="r", model=None) -> Run:
    return Run(i, name, status, "app", {"model": model or {"name": "m"}}, before, after, [], {}, "cpu", {}, None,
               1.7e9 + i, None)


def test_runs_table_split_and_pareto_series():
    b = profile().to_json()
    a1 = profile(size_bytes=11_200_000, accuracy=acc(78.0), speed=[speed(2.0)]).to_json()
    a2 = profile(size_bytes=22_400_000, accuracy=acc(79.5), speed=[speed(1.5, noisy=True)]).to_json()
    every = [run(2, b, a2), run(1, b, a1), run(3, None, None, status="interrupted"),
             run(4, b, a1, model={"name": "other"})]
    done, unfinished = runs.split_runs(every, {"name": "m"})
    assert [r.id for r in done] == [2, 1] and [r.id for r in unfinished] == [3]
    assert len(runs.split_runs(every)[0]) == 3
    rows = runs.runs_table(done)
    assert rows[1]["× smaller"] == 4.0 and rows[1]["× faster (same run)"] == 2.0
    assert rows[1]["Δ top-1 (points)"] == -2.0 and rows[1]["n"] == 100
    assert rows[0]["speed timing"].startswith("⚠ busy machine")
    assert runs.unfinished_table(unfinished)[0]["error"] == "its process ended before it finished"
    s = runs.pareto_series(done)
    assert s["names"] == ["original", "#2 ⚠", "#1"] and s["latency_ms"] == [1.0, 1 / 1.5, 0.5]
    assert s["top1"] == [80.0, 79.5, 78.0] and s["hover"][0] == "original (accuracy as measured in run #2)"
    assert runs.pareto_series([run(5, b, profile(accuracy=None).to_json())]) is None


def test_side_by_side_names_the_columns_and_marks_separate_loops():
    b = profile().to_json()
    ra = run(1, b, profile(latency_ms=lat(loop="L1")).to_json())
    rb = run(2, b, profile(latency_ms=lat(5.0, 5.5, loop="L2")).to_json())
    rows, together = runs.side_by_side(ra, rb)
    assert not together and {"measure", "A: #1", "B: #2", "B / A", "how"} == set(rows[0])
    median = next(r for r in rows if r["measure"] == "Latency, median")
    assert median["B / A"] == "×0.50, different runs"
    assert runs.side_by_side(ra, ra)[1]


# ---------------------------------------------------------------- the explore page


def test_ladder_names_budget_and_metrics():
    b = profile().to_json()
    ok = {"run_id": 4, "before": b, "after": profile(accuracy=acc(79.0)).to_json(),
          "recipe": Recipe(prune=StructuredConfig(ratio=0.5)).to_dict()}
    over = {**ok, "run_id": 5, "after": profile(accuracy=acc(70.0), size_bytes=4_480_000).to_json()}
    assert ladder.rung_names([ok, over], 2.0) == ["original", "#4: prune ratio 0.5 (l1)",
                                                  "#5: prune ratio 0.5 (l1) (over the budget)"]
    m = ladder.rung_metrics(b, over["after"], is_original=False)
    assert [x["label"] for x in m] == ["Top-1", "File size", "Latency (median)"]
    assert m[0]["delta"] == "-10.00 points" and m[1]["delta"] == "×10.0 smaller"
    assert ladder.rung_metrics(b, b, is_original=True)[0]["delta"] is None
    notes = ladder.rung_notes(b, over["after"], over, 2.0)
    assert "loses more than the 2 points" in notes["warning"] and notes["against"].startswith("Against the original")
    assert ladder.rung_notes(b, b, None, 2.0)["warning"] == ""


# ---------------------------------------------------------------- the distill page


def point(prune=True, quantized=False, unstructured=None, recover=None, label="p", run_id=None):
    recipe = SimpleNamespace(prune=StructuredConfig() if prune else None, unstructured=unstructured,
                             recover=recover, quantize=QuantConfig() if quantized else None)
    return SimpleNamespace(recipe=recipe, quantized=quantized, label=label, run_id=run_id)


def test_which_models_can_be_recovered_and_why_not():
    assert recovery.recoverable(point()) and recovery.not_recoverable(point()) is None
    assert recovery.not_recoverable(None)[1].endswith("Prune one on the Prune page first.")
    assert "quantized" in recovery.not_recoverable(point(quantized=True))[1]
    assert recovery.not_recoverable(point(unstructured=object()))[0] == "warning"
    assert "already recovered (run #3)" in recovery.not_recoverable(point(recover=RecoverConfig(), run_id=3))[1]
    assert recovery.through_float_origin(point(quantized=True))
    assert not recovery.through_float_origin(point(quantized=True, recover=RecoverConfig()))


def test_weights_are_zeroed_from_a_float_model_without_zeroed_weights():
    p = point()
    assert pruning.zeroing_start(p) is p and pruning.zeroing_start(None) is None
    assert pruning.zeroing_start(point(quantized=True)) is None
    assert pruning.zeroing_start(point(unstructured=object())) is None


def test_label_free_rule():
    assert recovery.label_rule("distill", 0.9, has_labels=True) == (0.9, "", "")
    assert recovery.label_rule("distill", 0.9, has_labels=False) == (
        1.0, "", "These photos have no labels: training runs label-free (α = 1).")
    alpha, error, _ = recovery.label_rule("finetune", 0.0, has_labels=False)
    assert "fine-tuning needs labels" in error


def test_durations_epoch_table_and_stage_relay():
    assert [recovery.duration(s) for s in (45, 750, 9000)] == ["45 s", "12.5 min", "2.5 h"]
    rows = recovery.epoch_table([{"epoch": 1, "train_loss": 1.23456, "val_acc": None, "lr": 0.01}])
    assert rows == [{"epoch": 1, "training loss": 1.235, "validation top-1 %": "–", "last lr": 0.01}]
    seen = []
    relay = recovery.training_events(seen.append)
    relay(ProgressEvent("recover: train", 0.5, "step 3", {"loss": 1.0}))
    relay(ProgressEvent("original: latency", 0.9, "timing"))
    assert [(e.stage, e.message) for e in seen] == [("train", "step 3"), ("measure", "original: timing")]
    fraction, text, caption = recovery.training_progress(
        [ProgressEvent("train", 0.25, "epoch 1", {"eta_s": 120.0, "samples_per_s": 50.0})], started=0.0)
    assert fraction == 0.25 and text == "epoch 1 · 50 photos/s · about 2.0 min left"


def test_won_back_sentence_uses_the_methods_name():
    profs = {"original": profile(), "pruned, before recovery": profile(accuracy=acc(40.0)),
             "recovered": profile(accuracy=acc(75.0))}
    text = recovery.won_back_sentence(profs, RecoverConfig(method="finetune", epochs=2))
    assert text.startswith("Pruning cost **40.0 points** of top-1; 2 epoch(s) of fine-tuning won back **35.0**")
    assert recovery.won_back_sentence({**profs, "recovered": profile(accuracy=None)}, RecoverConfig()) == ""


# ---------------------------------------------------------------- one photo


def test_verdict_and_where_each_model_runs():
    a = Prediction(["cat", "dog"], [0.9, 0.1], [3, 5], 2.0, "cpu")
    b = Prediction(["dog", "cat"], [0.6, 0.4], [5, 3], 1.0, "cpu")
    assert photo.verdict(a, a, None) == (True, "Both models say **cat**.")
    agree, text = photo.verdict(a, b, None)
    assert not agree and "the compressed model says **dog**" in text
    net = torch.nn.Linear(2, 2)
    quantized = SimpleNamespace(label="q", module=net, quantized=True, model=SimpleNamespace(device=torch.device("cpu")))
    models = photo.photo_models(net, quantized, torch.device("meta"))
    assert [(t, str(d)) for t, _, d in models] == [("Original", "meta"), ("Compressed: q", "cpu")]
    assert photo.device_of(net) == torch.device("cpu")
    assert [(t, str(d)) for t, _, d in photo.run_and_original(net, "#4", net)] == [("Original", "cpu"), ("#4", "cpu")]
    assert photo.answer("could not run") == "could not run" and photo.answer(a) == "**cat** (90.0%), 2.00 ms"


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
