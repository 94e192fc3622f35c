"""The pipeline as the session's truth: starting from a point, variants against one
baseline, saved models that load back, a history that cannot be written, runs whose
process died, one evaluation set for every caller."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress import data as D
from compress import pipeline
from compress.errors import CompressError
from compress.history import History
from compress.prune import StructuredConfig, UnstructuredConfig
from compress.quantize import QuantConfig
from compress.recipe import DataRef, MeasureRef, Recipe
from compress.checkpoint import load_model
from conftest import ROOT
from test_cli import run_cli

FAST = MeasureRef(device="cpu", runs=3, warmup=1)


@pytest.fixture(scope="module")
def cifar(cifar_asset, cifar_tar):
    loaded = load_model("resnet18_cifar10")
    sets = D.eval_sets(cifar_tar, loaded.spec.preprocess.transform(), 10, loaded.spec.name, limit=48, seed=0)
    return loaded, sets


def test_evaluation_images_do_not_depend_on_how_many_calibration_photos_are_asked(cifar_tar):
    spec = load_model("resnet18_cifar10", pretrained=False).spec
    a = D.eval_sets(cifar_tar, spec.preprocess.transform(), 10, spec.name, limit=40, seed=3, n_scoring=16)
    b = D.eval_sets(cifar_tar, spec.preprocess.transform(), 10, spec.name, limit=40, seed=3, n_scoring=512)
    assert a.n_eval == b.n_eval == 40
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a.evaluation, b.evaluation))
    # the calibration pool is fixed and disjoint from the evaluation images
    ev = {tuple(x.flatten()[:64].tolist()) for xb, _ in a.evaluation for x in xb}
    pool = [x for xb, _ in b.scoring_batches(300) for x in xb]
    assert len(pool) == 300 and not any(tuple(x.flatten()[:64].tolist()) in ev for x in pool)
    assert torch.equal(a.scoring_batches(16)[0][0], b.scoring_batches(16)[0][0])   # the first n of one pool


def test_a_run_from_a_point_skips_the_done_steps_and_measures_the_start(cifar, tmp_path):
    loaded, sets = cifar
    h = History(tmp_path / "h.sqlite")
    data = DataRef(path=str(sets.source), limit=48)
    pruned = pipeline.run(Recipe(data=data, measure=FAST, prune=StructuredConfig(ratio=0.5)), history=h,
                          loaded=loaded, sets=sets)
    point = pruned.point
    assert point.run_id == pruned.run_id and point.steps == ["prune"]
    zeroed = pipeline.run(point.recipe.with_step("unstructured", UnstructuredConfig(amount=0.5)), history=h,
                          loaded=loaded, sets=sets, start=point)
    assert [s["step"] for s in zeroed.steps] == ["prune_unstructured"]         # prune was not redone
    assert zeroed.start_run == pruned.run_id
    assert zeroed.start_profile["params"] == pruned.after["params"]            # the start, measured again
    assert zeroed.before["accuracy"] == pruned.before["accuracy"]              # the same original, same images
    assert zeroed.after["nonzero_params"] < 0.6 * zeroed.after["params"]
    # a recipe that does not repeat the start's steps cannot start from it
    with pytest.raises(pipeline.PipelineError, match="does not repeat"):
        pipeline.run(Recipe(data=data, measure=FAST, prune=StructuredConfig(ratio=0.25)), loaded=loaded,
                     sets=sets, start=point)
    # a quantized point is final
    q = pipeline.run(point.recipe.with_step("quantize", QuantConfig(mode="dynamic")), loaded=loaded, sets=sets,
                     start=point)
    with pytest.raises(pipeline.PipelineError, match="final"):
        pipeline.run(q.recipe.with_step("unstructured", UnstructuredConfig(amount=0.5)), loaded=loaded,
                     sets=sets, start=q.point)


def test_a_quantized_model_leads_back_to_the_float_model_it_came_from(cifar, tmp_path):
    """Recover after quantizing: the float pruned model a quantized point started from comes
    back from the history, with its weights; one that was never kept is a message."""
    loaded, sets = cifar
    h = History(tmp_path / "h.sqlite")
    data = DataRef(path=str(sets.source), limit=48)
    pruned = pipeline.run(Recipe(data=data, measure=FAST, prune=StructuredConfig(ratio=0.5)), history=h,
                          loaded=loaded, sets=sets)
    q = pipeline.run(pruned.recipe.with_step("quantize", QuantConfig(mode="ort-int8", calibration=16)), history=h,
                     loaded=loaded, sets=sets, start=pruned.point)
    origin = pipeline.float_origin(q.point, h)
    assert origin.run_id == pruned.run_id and not origin.quantized and origin.steps == ["prune"]
    x = sets.evaluation[0][0]
    with torch.no_grad():
        assert torch.allclose(origin.module(x), pruned.model(x), atol=1e-5)
    with pytest.raises(pipeline.PipelineError, match="not quantized"):
        pipeline.float_origin(pruned.point, h)
    both = pipeline.run(Recipe(data=data, measure=FAST, prune=StructuredConfig(ratio=0.5),
                               quantize=QuantConfig(mode="dynamic")), history=h, loaded=loaded, sets=sets)
    with pytest.raises(pipeline.PipelineError, match="made and quantized in one run"):
        pipeline.float_origin(both.point, h)
    h.delete(pruned.run_id)
    with pytest.raises(pipeline.PipelineError, match="deleted"):
        pipeline.float_origin(q.point, h)


def test_variants_share_one_baseline_and_each_is_a_run_with_its_model(cifar, tmp_path):
    loaded, sets = cifar
    h = History(tmp_path / "h.sqlite")
    recipe = Recipe(data=DataRef(path=str(sets.source), limit=48), measure=FAST)
    if not torch.cuda.is_available():          # a variant that cannot run stops everything before measuring
        with pytest.raises(CompressError, match="Nothing was measured: fp16: .*CUDA"):
            pipeline.run_variants(recipe, [QuantConfig(mode="ort-int8"), QuantConfig(mode="fp16")], history=h,
                                  loaded=loaded, sets=sets)
        assert not h.runs()                    # nothing was recorded either
    out = pipeline.run_variants(recipe, [QuantConfig(mode="ort-fp32"), QuantConfig(mode="ort-int8", calibration=32)],
                                history=h, loaded=loaded, sets=sets)
    ok = [r for r in out.results if not isinstance(r, dict)]
    assert [r.recipe.quantize.mode for r in ok] == ["ort-fp32", "ort-int8"]
    assert out.reference is out.before                 # no float steps: the original is the reference
    assert all(r.before is out.before for r in ok)     # measured once, shared
    assert not [r for r in out.results if isinstance(r, dict)]
    for r in ok:
        run = h.get(r.run_id)
        assert run.status == "done" and run.artifacts["model"].endswith("model.onnx")
        back = pipeline.point_of_run(run)           # reload the run's model as a session point
        assert back.quantized and back.run_id == r.run_id
        x = sets.evaluation[0][0]
        assert torch.equal(back.module(x).argmax(1), r.model.model(x).argmax(1))


def test_cli_history_lists_each_model_and_checkpoint_reload_gives_the_recorded_top1(cifar_asset, cifar_tar,
                                                                                     tmp_path):
    hist = str(tmp_path / "h.sqlite")
    common = ["--data", str(cifar_tar), "--limit", "60", "--runs", "3", "--warmup", "1", "--history", hist]
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--json", *common)
    assert r.returncode == 0, r.stderr
    r = run_cli("run", "--from-run", "1", "--quantize", "ort-int8", "--calib", "32", "--json", *common)
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["start_run"] == 1 and [s["step"] for s in second["steps"]] == ["quantize"]
    r = run_cli("history", "--history", hist, "--json")
    runs = {x["id"]: x for x in json.loads(r.stdout)}
    assert set(runs) == {1, 2}
    for run_id, run in runs.items():
        model = run["artifacts"]["model"]
        assert Path(model).is_file()
        p = run_cli("profile", "--checkpoint", model, "--data", str(cifar_tar), "--limit", "60", "--runs", "3",
                    "--warmup", "1", "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["accuracy"]["top1"] == run["after"]["accuracy"]["top1"], run_id


def break_history_after_start(monkeypatch):
    """Once a run is recorded as started, the history file becomes unwritable for real:
    the file (and its WAL) is replaced by a directory, which SQLite cannot open."""
    real = History.start

    def start(self, *a, **k):
        rid = real(self, *a, **k)
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                p.unlink()
        self.path.mkdir()
        return rid
    monkeypatch.setattr(History, "start", start)


def test_cli_with_a_history_that_breaks_mid_run_prints_the_result_and_exits_0(cifar_asset, cifar_tar, tmp_path,
                                                                               monkeypatch, capsys):
    from compress.__main__ import main
    break_history_after_start(monkeypatch)
    hist = tmp_path / "h.sqlite"
    code = main(["run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--data", str(cifar_tar),
                 "--limit", "32", "--runs", "3", "--warmup", "1", "--history", str(hist), "--json"])
    out = capsys.readouterr()
    assert code == 0
    result = json.loads(out.out)                                  # the full result, figures included
    assert result["after"]["accuracy"]["n"] == 32 and result["after"]["params"] < result["before"]["params"]
    assert "warning:" in out.err and str(hist) in out.err and "--no-history" in out.err
    assert result["warnings"] and "Traceback" not in out.err


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path):
    h = History(tmp_path / "h.sqlite")
    rid = h.start({"model": {}}, name="left behind")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()                                                  # a pid that is certainly dead now
    import sqlite3
    with sqlite3.connect(h.path) as db:
        db.execute("UPDATE runs SET pid=? WHERE id=?", (child.pid, rid))
    assert h.get(rid).status == "interrupted"
    assert [r.id for r in h.runs(status="interrupted")] == [rid]
    mine = h.start({"model": {}}, name="alive")                   # this process is alive: still running
    assert h.get(mine).status == "running"


def test_history_delete_removes_the_run_model(cifar, tmp_path):
    loaded, sets = cifar
    h = History(tmp_path / "h.sqlite")
    res = pipeline.run(Recipe(data=DataRef(path=str(sets.source), limit=48), measure=FAST,
                              prune=StructuredConfig(ratio=0.25)), history=h, loaded=loaded, sets=sets)
    folder = Path(res.artifacts["model"]).parent
    assert folder.is_dir()
    assert h.delete(res.run_id) and not folder.exists()


def test_one_background_job_per_session():
    import threading
    from views.jobs import Workspace
    ws = Workspace("t")
    release = threading.Event()
    job = ws.start("distill", lambda on_progress, cancel: release.wait(10))
    with pytest.raises(CompressError, match="already running"):
        ws.start("distill", lambda on_progress, cancel: None)
    release.set()
    job.thread.join(10)
    assert job.status == "done"
    landed = []
    ws.start("distill", lambda on_progress, cancel: 42, on_done=landed.append).thread.join(10)
    assert landed == [42]                                          # the result lands without a page watching


def test_no_page_measures_or_writes_the_history_itself():
    """Thin pages: runs go through views.common.run_pipeline/run_variants (or pipeline.run in
    a background job); no file in views/ measures a model or writes the history."""
    for f in (ROOT / "views").glob("*.py"):
        text = f.read_text()
        for forbidden in ("profile_model(", "profile_quantized(", ".finish(", "history.start(", "Q.quantize(",
                          "prune_structured(", "prune_unstructured(", "K.recover("):
            assert forbidden not in text, f"{f.name} calls {forbidden}"


def test_a_run_stopped_from_outside_is_recorded_in_plain_words(cifar, tmp_path):
    """A reload stops a page's script with a BaseException (Streamlit's StopException; here
    one like it): the row says it was stopped, not an exception class name. (Ctrl-C's
    KeyboardInterrupt is the user's cancel: tests/test_faults.py.)"""
    loaded, sets = cifar
    h = History(tmp_path / "h.sqlite")

    class StopException(BaseException):
        pass

    def stop(ev):
        raise StopException
    with pytest.raises(StopException):
        pipeline.run(Recipe(data=DataRef(path=str(sets.source), limit=48), measure=FAST,
                            prune=StructuredConfig(ratio=0.25)), history=h, loaded=loaded, sets=sets, on_progress=stop)
    run = h.runs()[0]
    assert run.status == "failed" and run.error.startswith("stopped before it finished")
