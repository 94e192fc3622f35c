"""The quick demo (compress/demo.py): the compressed variants of resnet18_cifar10 that ship
in assets/ladder/, measured live with their runtime forms; the frontier is the ladder."""
import json

import pytest

from compress import demo
from compress.checkpoint import load_checkpoint
from compress.history import History
from compress.measure import count_macs
from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
from compress.zoo import get_spec, sample_data_path
from test_cli import run_cli


def test_shipped_variants_are_small_pruned_and_say_how_they_were_made(cifar_asset):
    shipped = demo.variants("resnet18_cifar10")
    assert len(shipped) >= 2
    assert sum(v.path.stat().st_size for v in shipped) < 8_000_000          # a few MB in all (float16)
    original = load_checkpoint(str(cifar_asset), like="resnet18_cifar10").model
    full = count_macs(original, (3, 32, 32))
    for v in shipped:
        assert v.sidecar["command"].startswith("bench/recover_bench.py") and v.recover is not None
        assert v.recover.planned and v.sidecar["training_photos"] >= 1000
        model = load_checkpoint(str(v.path), like="resnet18_cifar10").model
        assert count_macs(model, (3, 32, 32)) < full / 3                      # really pruned
        assert any(v.path.name in line and "bench/recover_bench.py" in line for line in demo.made_notes(shipped))


def test_the_demo_measures_every_rung_now_and_reopens_from_the_history(cifar_asset, tmp_path):
    hist = tmp_path / "h.sqlite"
    r = run_cli("auto", "--demo", "--json", "--limit", "100", "--runs", "5", "--warmup", "1", "--objective", "size",
                "--history", str(hist))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    runs = {x.id: x for x in History(hist).runs(status="done")}
    cands = out["candidates"]
    assert len(cands) == 2 * (1 + len(demo.variants("resnet18_cifar10")))   # ORT FP32 and INT8 of each model
    assert all(c["stage"] == "measured" and c["run_id"] in runs for c in cands)
    assert all(runs[c["run_id"]].source == "demo" for c in cands)
    # the ladder: non-dominated on (top-1, bytes), the original's INT8 and the shipped models' rungs
    front = out["frontier"]
    label_of = {c["run_id"]: c["label"] for c in cands}
    assert len(front) >= 3 and any(label_of[p["run_id"]].startswith("shipped") for p in front)
    for p in front:
        assert p["after"]["accuracy"]["n"] == 100
        assert not any(q["after"]["accuracy"]["top1"] >= p["after"]["accuracy"]["top1"]
                       and q["after"]["size_bytes"] < p["after"]["size_bytes"] for q in front if q is not p)
    by_label = {c["label"]: runs[c["run_id"]] for c in cands}
    for label, run in by_label.items():           # the INT8 form of each model is smaller than its float form
        if label.endswith("ort-int8"):
            assert run.after["size_bytes"] < by_label[label.replace("ort-int8", "ort-fp32")].after["size_bytes"] / 3
    ch = out["chosen"]
    assert ch["before"]["accuracy"]["top1"] - ch["after"]["accuracy"]["top1"] <= 1.0     # --max-drop's default
    assert ch["after"]["size_bytes"] == min(runs[c["run_id"]].after["size_bytes"] for c in cands
                                            if runs[c["run_id"]].before["accuracy"]["top1"]
                                            - runs[c["run_id"]].after["accuracy"]["top1"] <= 1.0)
    # a shipped model's run records the steps that made it, and trains nothing now
    variant_runs = [runs[c["run_id"]] for c in cands if c["label"].startswith("shipped")]
    assert variant_runs and all(v.recipe["recover"] is not None for v in variant_runs)
    assert all(not any(s.get("step") == "recover" for s in (v.steps or [])) for v in variant_runs)
    # a second visit reads the same ladder from the history, measuring nothing
    base = Recipe(data=DataRef(path=str(sample_data_path(get_spec("resnet18_cifar10"))), limit=100),
                  measure=MeasureRef(device="cpu", runs=5, warmup=1))        # the CLI's settings above
    again = demo.run(base, objective="size", history=History(hist), measure=False)
    assert [p["run_id"] for p in again.frontier] == [p["run_id"] for p in out["frontier"]]
    assert len(History(hist).runs()) == len(runs)


def test_a_model_without_shipped_variants_gets_a_message(tmp_path):
    with pytest.raises(demo.DemoError, match="No compressed variants of resnet18 ship"):
        demo.run(Recipe(model=ModelRef("resnet18"), data=DataRef(path=str(tmp_path))), measure=False)
