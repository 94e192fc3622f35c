"""The slider's estimate is computed from channel counts (compress.prune.estimate), and it must
equal what a real prune gives: parameters counted on the pruned model, MACs counted by
thop on it, over a grid of ratios and settings on the three zoo architectures."""
import pytest
import torch
from torch import nn

from compress import prune as P
from compress.prune.estimate import counter_for
from compress.measure import count_macs, count_params
from compress.zoo import build_architecture

GRID = [
    dict(ratio=0.1),
    dict(ratio=0.45, round_to=8),
    dict(ratio=0.8, protected=()),
    dict(ratio=0.3, scope="global"),
    dict(ratio=0.6, scope="global", criterion="l2", round_to=8),
    dict(ratio=0.5, criterion="taylor"),          # uniform scope: counts do not depend on the criterion
]


def _real(model, cfg, input_size):
    pruned, _ = P.prune_structured(model, cfg, input_size)
    return count_params(pruned)[0], count_macs(pruned, input_size)


def _check(model, input_size, grid, extra=()):
    counter = counter_for(model, input_size)
    assert counter.supported, counter.why
    assert (counter.base_params, counter.base_macs) == (count_params(model)[0], count_macs(model, input_size))
    for kw in list(grid) + list(extra):
        cfg = P.StructuredConfig(**kw)
        if cfg.criterion == "taylor":           # a real prune with a data criterion needs images
            est = P.estimate(model, cfg, input_size)
            real = _real(model, P.StructuredConfig(**{**kw, "criterion": "l1"}), input_size)
        else:
            est = P.estimate(model, cfg, input_size)
            real = _real(model, cfg, input_size)
        assert est["exact"] and (est["params"], est["macs"]) == real, kw


def test_resnet18_estimates_equal_real_prunes():
    torch.manual_seed(0)
    model = build_architecture("resnet18", 1000).eval()
    _check(model, (3, 64, 64), GRID, extra=[dict(ratio=0.5, layer_ratios=(("layer2.0.conv1", 0.7),)),
                                            dict(ratio=0.6, only_layers=("layer3.1.conv1",))])


def test_efficientnet_lite0_estimates_equal_real_prunes(lite0):
    # depthwise network: projection convs protected by default, same-padding conv subclasses
    _check(lite0.model, lite0.spec.input_size, GRID[:5])


def test_mobilenet_v3_large_estimates_equal_real_prunes():
    torch.manual_seed(0)
    model = build_architecture("mobilenet_v3_large", 1000).eval()
    _check(model, (3, 160, 160), GRID[:5])


def test_target_search_uses_the_counts_and_reaches_the_target():
    torch.manual_seed(0)
    model = build_architecture("resnet18", 10).eval()
    cfg = P.StructuredConfig(ratio=None, target="macs", target_reduction=0.6)
    found = P.search_ratio(model, cfg, (3, 32, 32))
    params, macs = _real(model, found, (3, 32, 32))
    assert abs((1 - macs / count_macs(model, (3, 32, 32))) - 0.6) <= 0.02
    est = P.estimate(model, cfg, (3, 32, 32))
    assert est["ratio"] == found.ratio and est["macs"] == macs


def test_a_layer_the_arithmetic_does_not_know_falls_back_to_a_real_prune():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.PReLU(16), nn.Conv2d(16, 32, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()
    counter = counter_for(model, (3, 16, 16))
    assert not counter.supported and "PReLU" in counter.why
    cfg = P.StructuredConfig(ratio=0.5, protected=())
    est = P.estimate(model, cfg, (3, 16, 16))
    assert (est["params"], est["macs"]) == _real(model, cfg, (3, 16, 16))


def test_an_estimate_that_removes_nothing_is_a_message():
    model = build_architecture("resnet18", 10).eval()
    with pytest.raises(P.PruneError, match="Nothing to prune"):
        P.estimate(model, P.StructuredConfig(ratio=0.5, protected=tuple(P.prunable_layers(model))), (3, 32, 32))
