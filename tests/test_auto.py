"""The autopilot on a small real subset: a non-dominated frontier, a chosen model that
meets its accuracy budget, every measured candidate in the history, cancel and resume."""
import json
import threading

import pytest

from compress import auto
from compress.history import History
from compress.progress import Cancelled
from compress.recipe import DataRef, MeasureRef, Recipe
from compress.zoo import get_spec, sample_data_path
from test_cli import run_cli


@pytest.fixture(scope="module")
def base(cifar_asset):
    return Recipe(data=DataRef(path=str(sample_data_path(get_spec("resnet18_cifar10"))), limit=120),
                  measure=MeasureRef(device="cpu", runs=5, warmup=1))


CFG = auto.AutoConfig(max_drop=2.0, objective="size", runtime="ort", budget_minutes=20, screen_images=60,
                      ratios=(0.5,))


def test_cancel_then_resume_reuses_the_history_and_returns_a_valid_frontier(base, tmp_path):
    h = History(tmp_path / "h.sqlite")
    stop, seen = threading.Event(), []

    def progress(ev):
        seen.append(ev)
        if len(seen) == 3:                    # two candidates screened, the third about to start
            stop.set()
    with pytest.raises(Cancelled):
        auto.search(base, CFG, history=h, on_progress=progress, cancel=stop)
    assert len(h.runs(status="done")) == 2
    res = auto.search(base, CFG, history=h)
    runs = h.runs(status="done")
    assert all(r.source == "auto" for r in runs)
    # 6 candidates screened (2 reused) + the survivors measured in full
    measured = [c for c in res.candidates if c.stage == "measured"]
    assert len(runs) == 6 + len(measured) and measured
    assert {c.run["run_id"] for c in measured} <= {r.id for r in runs}
    # the chosen point keeps the budget on all the images, and is the smallest that does
    ch = res.chosen
    assert ch is not None
    drop = ch["before"]["accuracy"]["top1"] - ch["after"]["accuracy"]["top1"]
    assert drop <= CFG.max_drop and ch["after"]["accuracy"]["n"] == 120
    ok = [c.run for c in measured if c.run["before"]["accuracy"]["top1"] - c.run["after"]["accuracy"]["top1"]
          <= CFG.max_drop]
    assert ch["after"]["size_bytes"] == min(p["after"]["size_bytes"] for p in ok)
    # the frontier is non-dominated: no point is both at least as accurate and at least as small as another
    f = res.frontier
    assert f and any(p["run_id"] == ch["run_id"] for p in f)
    for p in f:
        for q in f:
            if p is not q:
                assert not (q["after"]["accuracy"]["top1"] >= p["after"]["accuracy"]["top1"]
                            and q["after"]["size_bytes"] <= p["after"]["size_bytes"]
                            and (q["after"]["accuracy"]["top1"], q["after"]["size_bytes"])
                            != (p["after"]["accuracy"]["top1"], p["after"]["size_bytes"]))
    assert all(c.why for c in res.candidates)            # every candidate says why it won or lost
    again = auto.search(base, CFG, history=h)           # everything measured: nothing new is run
    assert len(h.runs(status="done")) == len(runs) and again.chosen["run_id"] == ch["run_id"]
    # the CLI prints the same search as one JSON object (reusing the history: seconds)
    r = run_cli("auto", "--data", base.data.path, "--limit", "120", "--runs", "5", "--warmup", "1",
                "--screen-images", "60", "--ratios", "0.5", "--max-drop", "2", "--objective", "size",
                "--history", str(h.path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"frontier", "chosen", "candidates"} and out["chosen"]["run_id"] == ch["run_id"]
    assert {"recipe", "before", "after"} <= set(out["chosen"])
    # a ratio that failed screening in every form ends the screening of larger ones (read from
    # the history here: measure=False runs nothing)
    from dataclasses import replace
    wider = auto.search(base, replace(CFG, ratios=(0.5, 0.65)), history=h, measure=False)
    at_05 = [c for c in wider.candidates if c.recipe.prune is not None and c.recipe.prune.ratio == 0.5]
    at_065 = [c for c in wider.candidates if c.recipe.prune is not None and c.recipe.prune.ratio == 0.65]
    assert at_05 and all(c.screen is not None and c.why for c in at_05)   # 0.5 without training fails
    assert at_065 and all(c.stage == "skipped" and "prune 0.5 already lost" in c.why for c in at_065)


def test_bad_settings_are_messages():
    with pytest.raises(auto.AutoError, match="not searched yet"):
        auto.validate(auto.AutoConfig(runtime="tflite"))
    with pytest.raises(auto.AutoError, match="Unknown objective"):
        auto.validate(auto.AutoConfig(objective="energy"))
    r = run_cli("auto", "--data", "none")
    assert r.returncode == 2 and "needs labelled evaluation images" in r.stderr
    r = run_cli("auto", "--ratios", "0.5,abc")
    assert r.returncode == 2 and "separated by commas" in r.stderr


def test_prunes_that_fail_untrained_are_trained_back_once_then_screened_in_every_form(base, cifar_tar, tmp_path):
    """With training photos, a ratio that loses too much untrained is distilled back (one
    training run), and its runtime forms are screened from that one trained model."""
    from dataclasses import replace
    h = History(tmp_path / "h.sqlite")
    b = replace(base, data=replace(base.data, train_path=str(cifar_tar), train_limit=256))
    cfg = replace(CFG, distill_epochs=1)
    res = auto.search(b, cfg, history=h)
    runs = h.runs(status="done")
    trainings = [r for r in runs if r.recipe.get("recover") and not r.recipe.get("quantize")]
    assert len(trainings) == 1, [r.recipe.get("recover") for r in runs]     # prune 0.5, trained once
    t = trainings[0]
    assert t.recipe["recover"]["epochs"] == 1 and t.recipe["prune"]["ratio"] == 0.5
    trained = [c for c in res.candidates if c.trained is not None]
    assert len(trained) == 3 and {c.trained for c in trained} == {t.id}
    assert all("recovered 1 ep" in c.label and c.screen is not None for c in trained)
    # every form started from the trained model: each screening run records a start step at the training run
    for c in trained:
        steps = h.get(c.screen["run_id"]).steps or []
        assert any(s.get("step") == "start" and s["config"]["run"] == t.id for s in steps), steps
        assert not any(s.get("step") == "recover" for s in steps)           # not trained again
    assert all(c.why for c in res.candidates)
    # the same search again runs nothing new, and the page's history-only view sees the same candidates
    again = auto.search(b, cfg, history=h)
    assert len(h.runs(status="done")) == len(runs)
    assert [c.label for c in again.candidates] == [c.label for c in res.candidates]
    seen = auto.search(b, cfg, history=h, measure=False)
    assert [c.screen for c in seen.candidates if c.trained] == [c.screen for c in trained]
