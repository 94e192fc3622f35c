"""BatchNorm re-estimation after structured pruning (issue 14): it changes only the BN
statistics, it wins back most of what a prune seemed to lose, on images it never saw, and
every path (engine, pipeline, sensitivity scan, recipe, CLI) uses it by default."""
import copy

import pytest
import torch
from torch import nn

from compress import data as D
from compress import pipeline
from compress import prune as P
from compress.measure import evaluate
from compress.prune.batchnorm import _kept_channels
from compress.recipe import DataRef, MeasureRef, Recipe, RecipeError, validate
from compress.checkpoint import load_model
from compress.zoo import sample_data_path

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cifar_sample(cifar_asset):
    """The trained model and the bundled sample: 300 evaluation images, a 375-image scoring pool."""
    loaded = load_model("resnet18_cifar10")
    path = sample_data_path(loaded.spec)
    sets = D.eval_sets(path, loaded.spec.preprocess.transform(), 10, loaded.spec.name, limit=300, seed=0)
    return loaded, sets, path


def _bn_state(model):
    return {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in model.named_modules()
            if isinstance(m, nn.BatchNorm2d)}


def test_reestimation_changes_only_the_statistics_and_wins_back_accuracy(cifar_sample):
    loaded, sets, _ = cifar_sample
    pruned, _ = P.prune_structured(loaded.model, P.StructuredConfig(ratio=0.5), loaded.spec.input_size)
    weights = {k: v.clone() for k, v in pruned.state_dict().items() if "running" not in k and "num_batches" not in k}
    stats = _bn_state(pruned)
    fixed, n = P.with_reestimated_batchnorm(pruned, sets.scoring_batches(256), 256)
    assert n == 256
    assert _bn_state(pruned).keys() == stats.keys() and all(                      # the caller's copy is untouched
        torch.equal(a[0], b[0]) for a, b in zip(_bn_state(pruned).values(), stats.values()))
    for k, v in fixed.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k                                  # no weight moved
    assert any(not torch.allclose(a[0], b[0]) for a, b in zip(_bn_state(fixed).values(), stats.values()))
    raw = evaluate(pruned, sets.evaluation, CPU).top1
    after = evaluate(fixed, sets.evaluation, CPU).top1
    assert after > raw + 15, (raw, after)      # measured: 22.5% -> 62.9% at ratio 0.5 (docs/pruning.md)


def test_difference_form_keeps_an_unpruned_model_and_beats_few_photos(cifar_sample):
    """With the unpruned model as reference, re-estimation applies only what the photos show
    has changed: on the unpruned model itself that is nothing (to float rounding), while a
    from-scratch estimate on the same 64 photos moves every statistic; on a pruned model the
    kept channels are matched and the result is at least as accurate."""
    loaded, sets, _ = cifar_sample
    model = loaded.model
    same, _ = P.with_reestimated_batchnorm(model, sets.scoring_batches(64), 64, reference=model)
    scratch, _ = P.with_reestimated_batchnorm(model, sets.scoring_batches(64), 64)
    ref = _bn_state(model)
    for n, (mean, var) in _bn_state(same).items():
        assert torch.allclose(mean, ref[n][0], atol=1e-4) and torch.allclose(var, ref[n][1], rtol=1e-3), n
    assert all(not torch.allclose(a[0], ref[n][0], atol=1e-4) for n, a in _bn_state(scratch).items())
    pruned, _ = P.prune_structured(model, P.StructuredConfig(ratio=0.5), loaded.spec.input_size)
    bn = dict(pruned.named_modules())["layer2.0.bn1"]
    idx = _kept_channels(bn, dict(model.named_modules())["layer2.0.bn1"])
    assert idx is not None and len(idx) == bn.num_features == 64 and bool((idx.diff() > 0).all())
    diff, _ = P.with_reestimated_batchnorm(pruned, sets.scoring_batches(256), 256, reference=model)
    plain, _ = P.with_reestimated_batchnorm(pruned, sets.scoring_batches(256), 256)
    a_diff, a_plain = (evaluate(m, sets.evaluation, CPU).top1 for m in (diff, plain))
    assert a_diff >= a_plain - 3, (a_diff, a_plain)
    # a BatchNorm trained since pruning no longer matches: it is estimated from scratch
    with torch.no_grad():
        bn.weight.add_(0.01)
    assert _kept_channels(bn, dict(model.named_modules())["layer2.0.bn1"]) is None


def test_too_few_photos_or_no_batchnorm_change_nothing():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    before = copy.deepcopy(m.state_dict())
    assert P.reestimate_batchnorm(m, [(torch.randn(1, 3, 8, 8), torch.zeros(1))]) == 0
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert P.reestimate_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3)), [torch.randn(8, 3, 8, 8)]) == 0
    assert P.reestimate_batchnorm(m, [torch.randn(8, 3, 8, 8)], max_images=5) == 5

    class WithUnused(nn.Module):              # a BatchNorm the forward never calls
        def __init__(self):
            super().__init__()
            self.body, self.unused = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.body(x)
    w = WithUnused()
    assert P.reestimate_batchnorm(w, [torch.randn(8, 3, 8, 8) + 3]) == 8          # no error
    assert torch.equal(w.unused.running_mean, torch.zeros(4)) and torch.equal(w.unused.running_var, torch.ones(4))
    assert not torch.equal(w.body[1].running_mean, torch.zeros(4))                 # the used one changed


def test_pipeline_reports_accuracy_before_and_after_reestimation_on_the_same_images(cifar_sample):
    loaded, sets, path = cifar_sample
    recipe = Recipe(data=DataRef(path=str(path), limit=300), measure=MeasureRef(device="cpu", runs=3, warmup=1),
                    prune=P.StructuredConfig(ratio=0.5, bn_images=200))
    res = pipeline.run(recipe, loaded=loaded, sets=sets)
    rep = res.steps[0]["report"][-1]
    assert rep["bn_images"] == 200
    assert rep["accuracy_as_pruned"]["n"] == res.after["accuracy"]["n"] == 300
    assert res.after["accuracy"]["top1"] > rep["accuracy_as_pruned"]["top1"] + 15
    off = pipeline.run(recipe.with_step("prune", P.StructuredConfig(ratio=0.5, bn_images=0)), loaded=loaded,
                       sets=sets)
    rep0 = off.steps[0]["report"][-1]
    assert rep0["bn_images"] == 0 and rep0["accuracy_as_pruned"] is None
    assert off.after["accuracy"]["top1"] == pytest.approx(rep["accuracy_as_pruned"]["top1"])


def test_sensitivity_scan_reestimates_by_default(cifar_sample, tmp_path):
    loaded, sets, _ = cifar_sample
    batches = sets.scoring_batches(128)
    kw = dict(unit="stage", ratios=(0.5,), device=CPU)
    with_bn = P.sensitivity(loaded.model, loaded.spec.input_size, batches, **kw)
    raw = P.sensitivity(loaded.model, loaded.spec.input_size, batches, reestimate_bn=False, **kw)
    assert with_bn.reestimate_bn and not raw.reestimate_bn
    gain = [a.top1 - b.top1 for a, b in zip(with_bn.rows, raw.rows)]
    assert max(gain) > 5 and sum(gain) > 0, gain


def test_recipe_and_cli_carry_the_setting():
    r = Recipe(prune=P.StructuredConfig(ratio=0.5, bn_images=64))
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe(prune=P.StructuredConfig(ratio=0.5)).prune.bn_images == 512       # on by default
    with pytest.raises(RecipeError, match="prune.bn_images"):
        validate(Recipe(prune=P.StructuredConfig(ratio=0.5, bn_images=-1)))
    from test_cli import run_cli
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--bn-images", "-3")
    assert r.returncode == 2 and "--bn-images" in r.stderr and "out of range" in r.stderr


def test_prune_steps_with_recovery_between_them(cifar_sample, cifar_tar):
    from compress.distill import RecoverConfig
    loaded, sets, path = cifar_sample
    recipe = Recipe(data=DataRef(path=str(path), limit=300, train_path=str(cifar_tar), train_limit=64),
                    measure=MeasureRef(device="cpu", runs=2, warmup=1), prune=P.StructuredConfig(ratio=0.5),
                    prune_steps=2, recover=RecoverConfig(method="distill", epochs=1, batch_size=32))
    res = pipeline.run(recipe, loaded=loaded, sets=sets)
    assert [s["step"] for s in res.steps] == ["prune_structured", "distill"]
    prune_reports, recovery = res.steps[0]["report"], res.steps[1]["report"]
    assert [r["step"] for r in prune_reports] == [1, 2] and all(r["bn_images"] > 0 for r in prune_reports)
    assert [h["prune_step"] for h in recovery["history"]] == [1, 2]           # one epoch after each step
    assert recovery["between_prune_steps"] == 2 and recovery["train_images"] == 48   # 16 of 64 held out
    assert res.after["macs"] < 0.5 * res.before["macs"]
