"""Recipes round-trip through JSON and name a bad field; the history keeps every run,
including failed ones and concurrent writers."""
import json
import multiprocessing as mp

import pytest

from compress.distill import RecoverConfig
from compress.history import History, HistoryError
from compress.prune import StructuredConfig
from compress.quantize import QuantConfig
from compress.recipe import DataRef, ExportRef, ModelRef, Recipe, RecipeError, presets


def _full_recipe() -> Recipe:
    return Recipe(model=ModelRef("resnet18_cifar10"),
                  data=DataRef(path="/data/cifar.tar.gz", limit=200, train_path="/data/cifar.tar.gz", train_limit=500),
                  prune=StructuredConfig(ratio=0.4, protected=("conv1",), layer_ratios=(("layer1.0.conv1", 0.2),),
                                         round_to=8),
                  recover=RecoverConfig(method="distill", epochs=2, alpha=0.7),
                  quantize=QuantConfig(mode="ort-int8", keep_float=("fc",)),
                  export=ExportRef(formats=("onnx", "torchscript"), out_dir="/tmp/x"), name="mine")


def test_recipe_json_round_trip_is_exact():
    r = _full_recipe()
    back = Recipe.from_json(r.to_json())
    assert back == r
    assert back.prune.protected == ("conv1",) and back.prune.layer_ratios == (("layer1.0.conv1", 0.2),)
    assert Recipe.from_json(Recipe().to_json()) == Recipe()


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["prune"].update(ratio="half"), 'prune.ratio: expected a number, got "half"'),
    (lambda d: d["prune"].update(colour=1), "prune.colour: unknown field"),
    (lambda d: d["quantize"].update(keep_float="fc"), "quantize.keep_float: expected a list"),
    (lambda d: d["recover"].update(epochs=2.5), "recover.epochs: expected a whole number"),
    (lambda d: d["export"].update(formats=["gif"]), "export.formats: unknown format 'gif'"),
    (lambda d: d.update(data=[]), "data: expected an object"),
    (lambda d: d["recover"].update(lr=7.0), "recover: The learning rate must be"),
])
def test_malformed_recipe_names_the_field(edit, needle):
    d = _full_recipe().to_dict()
    edit(d)
    with pytest.raises(RecipeError, match=needle):
        Recipe.from_dict(json.loads(json.dumps(d)))


def test_recipe_file_that_is_not_json_or_missing(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{ not json")
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.load(p)
    with pytest.raises(RecipeError, match="does not exist"):
        Recipe.load(tmp_path / "missing.json")


def test_presets_are_valid_recipes_with_a_reason_and_their_measured_result():
    from compress.recipe import validate
    ps = presets(data=DataRef(path="/data/images"))
    assert set(ps) == {"Phone (ARM CPU)", "Edge / server CPU", "Keep accuracy"}
    for name, (recipe, reason) in ps.items():
        assert Recipe.from_json(recipe.to_json()) == recipe
        assert len(reason) > 40 and recipe.name == name
        validate(recipe)
        assert recipe.recover is None
        if recipe.prune is not None:
            assert recipe.prune.bn_images > 0                    # every pruning preset re-estimates BatchNorm
        assert "Measured on resnet18_cifar10 (" in reason        # assets/preset_results.json, from bench/preset_bench.py
    trained = presets(data=DataRef(path="/data/images", train_path="/data/train"))
    for name, (recipe, reason) in trained.items():
        validate(recipe)
        assert (recipe.recover is not None) == (recipe.prune is not None)   # pruning presets distil
        if recipe.recover is not None:
            assert recipe.recover.epochs == 1 and recipe.data.train_limit == 10_000 and "distillation" in reason
    assert "Not measured on mobilenet_v3_large yet" in presets("mobilenet_v3_large")["Keep accuracy"][1]


def test_history_records_done_and_failed_runs_and_deletes(tmp_path):
    h = History(tmp_path / "h.sqlite")
    a = h.start({"x": 1}, name="a", source="test", device="cpu", versions={"torch": "2"})
    b = h.start({"x": 2}, name="b", source="test")
    h.finish(a, {"params": 1}, {"params": 2}, [{"step": "prune"}], {"onnx": "/m.onnx"})
    h.fail(b, "boom")
    runs = h.runs()
    assert [r.id for r in runs] == [b, a]                        # newest first
    assert runs[1].status == "done" and runs[1].after == {"params": 2} and runs[1].artifacts == {"onnx": "/m.onnx"}
    assert runs[0].status == "failed" and runs[0].error == "boom" and runs[0].ended is not None
    assert [r.id for r in h.runs(status="failed")] == [b]
    assert h.delete(b) and not h.delete(b)
    assert [r.id for r in h.runs()] == [a]
    import sqlite3
    with sqlite3.connect(h.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path: str, tag: str, n: int) -> None:
    h = History(path)
    for i in range(n):
        rid = h.start({"writer": tag, "i": i}, name=f"{tag}{i}")
        h.finish(rid, {}, {}, [], {})


def test_two_processes_writing_at_once_both_land(tmp_path):
    path = str(tmp_path / "h.sqlite")
    History(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 40)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    runs = History(path).runs()
    assert len(runs) == 80
    assert sorted(r.name for r in runs) == sorted([f"a{i}" for i in range(40)] + [f"b{i}" for i in range(40)])
    assert all(r.status == "done" for r in runs)


def test_unwritable_history_path_is_a_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="cannot be written"):
        History(blocker / "h.sqlite")                            # a file where a folder should be


def test_export_formats_are_one_registry():
    from compress.export import FORMATS, ExportError, export
    from compress.recipe import validate
    from compress.zoo import build_architecture
    assert list(FORMATS) == ["checkpoint", "torchscript", "onnx", "executorch", "tensorrt"]
    assert {f.suffix for f in FORMATS.values()} == {".pt", ".ts.pt", ".onnx", ".pte", ".trt.ts"}
    assert all(f.description and f.runtime and f.needs and callable(f.handler) for f in FORMATS.values())
    with pytest.raises(ExportError, match="Unknown export format 'gif'.*checkpoint, torchscript"):
        export(build_architecture("resnet18", 10), "gif", "/tmp/x.gif", (3, 32, 32), [])
    validate(Recipe(export=ExportRef(formats=tuple(FORMATS))))          # every registered format is a recipe's
