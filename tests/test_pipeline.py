"""The pipeline runs a recipe end to end and records it; every export loads back in its
runtime and agrees with the model it came from."""
import json

import pytest
import torch

from compress import data as D
from compress import pipeline
from compress.distill import RecoverConfig
from compress.errors import CompressError
from compress.export import ExportError, export
from compress.history import History
from compress.prune import StructuredConfig, prune_structured
from compress.quantize import QuantConfig, quantize
from compress.recipe import DataRef, ExportRef, MeasureRef, Recipe
from compress.checkpoint import load_model
from test_cli import run_cli

FAST = MeasureRef(device="cpu", runs=3, warmup=1)


@pytest.fixture(scope="module")
def cifar(cifar_asset, cifar_tar):
    loaded = load_model("resnet18_cifar10")
    sets = D.eval_sets(cifar_tar, loaded.spec.preprocess.transform(), 10, loaded.spec.name, limit=64,
                       seed=0, n_scoring=32)
    return loaded, sets


def test_pipeline_end_to_end_is_recorded_with_exports_and_a_model_card(cifar, cifar_tar, tmp_path):
    loaded, _ = cifar
    h = History(tmp_path / "h.sqlite")
    recipe = Recipe(data=DataRef(path=str(cifar_tar), limit=64, train_path=str(cifar_tar), train_limit=64),
                    measure=FAST, prune=StructuredConfig(ratio=0.5),
                    recover=RecoverConfig(method="distill", epochs=1, batch_size=32),
                    quantize=QuantConfig(mode="ort-int8", calibration=32),
                    export=ExportRef(formats=("onnx",), out_dir=str(tmp_path / "out")), name="e2e")
    events = []
    res = pipeline.run(recipe, on_progress=events.append, history=h, source="test")
    assert [s["step"] for s in res.steps] == ["prune_structured", "distill", "quantize", "export"]
    assert res.before["macs"] > 2.5 * res.after["macs"]
    assert res.after["runtime"].startswith("ONNX Runtime") and res.after["accuracy"]["n"] == 64
    assert res.data["n_eval"] == 64
    onnx_export = res.exports["onnx"]
    assert onnx_export["agreement_top1"] == 100.0 and onnx_export["max_abs_diff"] < 1e-5
    card = open(res.artifacts["model_card"]).read()
    assert "Before and after" in card and '"ratio": 0.5' in card and "onnx" in card
    run = h.get(res.run_id)
    assert run.status == "done" and run.name == "e2e" and run.artifacts == res.artifacts
    assert run.after == res.after and Recipe.from_dict(run.recipe) == recipe
    assert run.versions["torch"] == torch.__version__
    assert any(e.stage.startswith("recover") for e in events)
    # the original, the compressed model and the original's ONNX Runtime FP32 twin were timed
    # in one interleaved loop; the speed-up splits into runtime switch and compression
    roles = {s["role"]: s for s in res.after["speed"]}
    assert set(roles) == {"total", "runtime", "compression"}
    assert (roles["total"]["base"], roles["total"]["other"]) == ("original", "compressed")
    assert roles["compression"]["base"] == roles["runtime"]["other"] == "original in ONNX Runtime FP32"
    for s in roles.values():
        assert s["pairs"] == FAST.runs and s["ci95"][0] <= s["ratio"] <= s["ci95"][1]
    assert set(res.before["latency_ms"]["interleaved_with"]) == {"compressed", "original in ONNX Runtime FP32"}
    assert res.after["latency_ms"]["runs"] == res.before["latency_ms"]["runs"] == FAST.runs


def test_a_failed_run_is_recorded_with_its_error(cifar, tmp_path):
    h = History(tmp_path / "h.sqlite")
    recipe = Recipe(measure=FAST, prune=StructuredConfig(only_layers=("layer9.conv",)))
    with pytest.raises(CompressError, match="layer9.conv"):
        pipeline.run(recipe, history=h, source="test")
    run = h.runs()[0]
    assert run.status == "failed" and "layer9.conv" in run.error and run.after is None


def _check(e, n=64, tol=1e-4):
    assert e.n == n and e.agreement_top1 == 100.0 and e.max_abs_diff < tol, e
    assert e.bytes > 0


def test_float_and_pruned_exports_load_back_and_agree(cifar, tmp_path):
    loaded, sets = cifar
    batches = list(sets.evaluation)
    pruned, _ = prune_structured(loaded.model, StructuredConfig(ratio=0.5), (3, 32, 32))
    for fmt in ("checkpoint", "torchscript", "onnx", "executorch"):
        e = export(pruned, fmt, tmp_path / f"m.{fmt}", (3, 32, 32), batches, loaded=loaded)
        _check(e)
    back = load_model("resnet18_cifar10")       # the zoo loads the project checkpoint back
    from compress.checkpoint import load_checkpoint
    assert sum(p.numel() for p in load_checkpoint(str(tmp_path / "m.checkpoint")).model.parameters()) == \
        sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in back.model.parameters())


def test_int8_exports_where_the_runtime_supports_them(cifar, tmp_path):
    loaded, sets = cifar
    batches = list(sets.evaluation)
    static = quantize(loaded.model, QuantConfig(mode="static", calibration=32), (3, 32, 32), sets.scoring,
                      torch.device("cpu"))
    _check(export(static, "torchscript", tmp_path / "q.ts", (3, 32, 32), batches), tol=1e-3)
    e = export(static, "onnx", tmp_path / "q.onnx", (3, 32, 32), batches)   # QDQ ONNX from torch.ao
    assert e.n == 64 and e.agreement_top1 >= 95.0
    dynamic = quantize(loaded.model, QuantConfig(mode="dynamic"), (3, 32, 32), None, torch.device("cpu"))
    with pytest.raises(ExportError, match="operator quantized::linear_dynamic has no ONNX form"):
        export(dynamic, "onnx", tmp_path / "d.onnx", (3, 32, 32), batches)
    with pytest.raises(ExportError, match="float"):
        export(static, "executorch", tmp_path / "q.pte", (3, 32, 32), batches)
    ort = quantize(loaded.model, QuantConfig(mode="ort-int8", calibration=32), (3, 32, 32), sets.scoring,
                   torch.device("cpu"))
    e = export(ort, "onnx", tmp_path / "o.onnx", (3, 32, 32), batches)
    _check(e, tol=1e-6)
    assert e.bytes < 0.3 * sum(p.numel() * 4 for p in loaded.model.parameters())


def test_tensorrt_without_a_gpu_says_it_needs_one(cifar, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    loaded, sets = cifar
    with pytest.raises(ExportError, match="needs an NVIDIA GPU"):
        export(loaded.model, "tensorrt", tmp_path / "m.trt", (3, 32, 32), list(sets.evaluation))


def test_cli_runs_a_recipe_file_and_lists_it_in_history(cifar, cifar_tar, tmp_path):
    recipe = Recipe(data=DataRef(path=str(cifar_tar), limit=32), measure=FAST,
                    prune=StructuredConfig(ratio=0.25), name="from a file")
    path = tmp_path / "recipe.json"
    path.write_text(recipe.to_json())
    hist = str(tmp_path / "h.sqlite")
    r = run_cli("run", str(path), "--json", "--history", hist, "--export", "torchscript",
                "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["recipe"]["name"] == "from a file" and out["after"]["params"] < out["before"]["params"]
    assert out["artifacts"]["torchscript"].endswith(".ts.pt")
    torch.jit.load(out["artifacts"]["torchscript"])
    r = run_cli("history", "--json", "--history", hist)
    runs = json.loads(r.stdout)
    assert [(x["id"], x["status"], x["name"]) for x in runs] == [(out["run_id"], "done", "from a file")]
    assert runs[0]["artifacts"] == out["artifacts"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prune": {"ratio": "half"}}))
    r = run_cli("run", str(bad), "--history", hist)
    assert r.returncode == 2 and 'prune.ratio: expected a number, got "half"' in r.stderr
    r = run_cli("run", "--model", "nope", "--history", hist)
    assert r.returncode == 2 and "Unknown model" in r.stderr


def test_a_pickled_model_in_a_recipe_needs_the_users_consent(tmp_path):
    from compress.errors import UntrustedPickle
    from compress.recipe import ModelRef
    from compress.zoo import build_architecture
    path = tmp_path / "full.pt"
    torch.save(build_architecture("resnet18", 10), path)           # a whole pickled model
    recipe = Recipe(model=ModelRef(name="resnet18_cifar10", checkpoint=str(path)))
    with pytest.raises(UntrustedPickle):
        pipeline.load(recipe)
    trusted = Recipe.from_json(Recipe(model=ModelRef(name="resnet18_cifar10", checkpoint=str(path),
                                                     trust_pickle=True)).to_json())
    assert sum(p.numel() for p in pipeline.load(trusted).model.parameters()) == 11_181_642


def test_a_result_near_chance_is_a_warning_not_a_headline(cifar, tmp_path):
    from compress.report import summary
    loaded, sets = cifar
    # ratio 0.9 without BatchNorm re-estimation: a destroyed model (re-estimation lifts it to ~20%)
    recipe = Recipe(measure=FAST, prune=StructuredConfig(ratio=0.9, bn_images=0), name="destroyed")
    res = pipeline.run(recipe, loaded=loaded, sets=sets)
    assert res.after["accuracy"]["top1"] < 20 <= res.before["accuracy"]["top1"]   # 10 classes: chance is 10%
    assert any("near chance" in w and "no longer works" in w for w in res.warnings), res.warnings
    text = summary(res.before, res.after, 10)
    assert "accuracy not stated" in text and "points less accurate" not in text
