"""Pruning engine: real structural removal, reports that match, clear errors."""
import pytest
import torch
import torchvision
from torch import nn

from compress.measure import count_macs, count_params
from compress.prune import (PruneError, StructuredConfig, UnstructuredConfig, importance_report,
                            prune_structured, prune_unstructured)
from compress.zoo import build_architecture


@pytest.fixture(scope="module")
def r18():
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("resnet50", 64), ("mobilenet_v3_large", 64),
                                       ("efficientnet_lite0", 64)])
def test_forward_works_and_output_shape_is_unchanged(arch, size):
    m = build_architecture(arch, 10).eval()
    x = torch.randn(2, 3, size, size)
    for ratio in (0.25, 0.5):
        p, rep = prune_structured(m, StructuredConfig(ratio=ratio), (3, size, size))
        assert p(x).shape == (2, 10)
        assert count_params(p)[0] < count_params(m)[0]
        assert any(g.channels_after < g.channels_before for g in rep.groups)


def test_macs_fall_monotonically_and_caller_model_is_untouched(r18):
    before = count_params(r18)[0]
    macs = [count_macs(prune_structured(r18, StructuredConfig(ratio=r), (3, 32, 32))[0], (3, 32, 32))
            for r in (0.0, 0.25, 0.5, 0.75)]
    assert macs == sorted(macs, reverse=True) and macs[0] > macs[-1]
    assert count_params(r18)[0] == before


def test_protected_layers_keep_their_channels(r18):
    p, rep = prune_structured(r18, StructuredConfig(ratio=0.5, protected=("conv1", "fc", "layer3.0.conv1")),
                              (3, 32, 32))
    assert p.conv1.out_channels == 64 and p.layer3[0].conv1.out_channels == 256 and p.fc.out_features == 10
    assert p.layer2[0].conv1.out_channels == 64


def test_single_layer_mode_prunes_only_that_layer(r18):
    p, rep = prune_structured(r18, StructuredConfig(ratio=0.5, only_layers=("layer2.0.conv1",)), (3, 32, 32))
    changed = [g.root for g in rep.groups if g.channels_after < g.channels_before]
    assert changed == ["layer2.0.conv1"]
    assert p.layer2[0].conv1.out_channels == 64 and p.layer2[0].conv2.in_channels == 64
    assert p.layer2[0].conv2.out_channels == 128


def test_report_agrees_with_removed_channels_and_does_not_prune(r18):
    cfg = StructuredConfig(ratio=0.5, only_layers=("layer1.0.conv1",))
    rep = importance_report(r18, cfg, (3, 32, 32))
    g = rep.by_root()["layer1.0.conv1"]
    assert r18.layer1[0].conv1.out_channels == 64       # reporting did not prune
    assert g.channels_before == 64 and g.channels_after == 32 and len(g.removed) == 32
    assert "layer1.0.bn1" in g.coupled and "layer1.0.conv2" in g.coupled
    # L1 criterion: the removed channels are exactly the 32 with the smallest L1 norms
    l1 = r18.layer1[0].conv1.weight.abs().sum(dim=(1, 2, 3))
    assert sorted(g.removed) == sorted(l1.argsort()[:32].tolist()) or \
        max(g.scores[i] for i in g.removed) <= min(g.scores[i] for i in range(64) if i not in g.removed)
    p, _ = prune_structured(r18, cfg, (3, 32, 32))
    kept = [i for i in range(64) if i not in g.removed]
    assert torch.equal(p.layer1[0].conv1.weight, r18.layer1[0].conv1.weight[kept])


@pytest.mark.parametrize("ratio", [-0.1, 0.95, 1.0])
def test_ratio_out_of_range(r18, ratio):
    with pytest.raises(PruneError, match="out of range"):
        prune_structured(r18, StructuredConfig(ratio=ratio), (3, 32, 32))


def test_layer_errors_name_the_layer(r18):
    with pytest.raises(PruneError, match="'layer9.conv' does not exist"):
        prune_structured(r18, StructuredConfig(only_layers=("layer9.conv",)), (3, 32, 32))
    with pytest.raises(PruneError, match="layer1.0.bn1 is a BatchNorm2d"):
        prune_structured(r18, StructuredConfig(only_layers=("layer1.0.bn1",)), (3, 32, 32))
    with pytest.raises(PruneError, match="remove every channel"):
        prune_structured(r18, StructuredConfig(layer_ratios=(("layer1.0.conv1", 1.0),)), (3, 32, 32))


def test_nothing_prunable():
    with pytest.raises(PruneError, match="nothing to prune"):
        prune_structured(nn.Sequential(nn.ReLU()), StructuredConfig(), (3, 8, 8))


def test_data_criteria_need_data_and_run_on_batches(r18):
    with pytest.raises(PruneError, match="real images"):
        prune_structured(r18, StructuredConfig(criterion="taylor"), (3, 32, 32))
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(2)]
    for crit in ("taylor", "activation"):
        p, rep = prune_structured(r18, StructuredConfig(ratio=0.3, criterion=crit), (3, 32, 32), batches)
        assert p(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("amount,scope", [(0.3, "global"), (0.7, "layer")])
def test_unstructured_sparsity_matches_request(r18, amount, scope):
    p, rep = prune_unstructured(r18, UnstructuredConfig(amount=amount, scope=scope))
    assert abs(rep.global_sparsity - amount) < 0.01
    assert count_params(p)[0] == count_params(r18)[0]          # dense shapes unchanged
    assert not any(n.endswith("_mask") for n, _ in p.named_buffers())   # permanent
    assert count_params(r18)[1] > count_params(p)[1]


@pytest.mark.parametrize("what", ["macs", "params"])
def test_target_reduction_is_hit_within_two_points(r18, what):
    from compress.prune import _cost
    p, _ = prune_structured(r18, StructuredConfig(target=what, target_reduction=0.4), (3, 32, 32))
    red = 1 - _cost(p, what, (3, 32, 32)) / _cost(r18, what, (3, 32, 32))
    assert abs(red - 0.4) <= 0.02, red


def test_unreachable_target_says_so(r18):
    with pytest.raises(PruneError, match="out of reach"):
        prune_structured(r18, StructuredConfig(target="macs", target_reduction=0.99), (3, 32, 32))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_large", "efficientnet_lite0"])
def test_pruned_model_saves_and_loads_back_identically(tmp_path, arch):
    from compress import zoo
    m = build_architecture(arch, 10).eval()
    p, _ = prune_structured(m, StructuredConfig(ratio=0.4), (3, 64, 64))
    spec = zoo.ModelSpec(name="t", description="", arch=arch, num_classes=10,
                         preprocess=zoo.ZOO["resnet18"].preprocess, weights_source="test",
                         categories=tuple(str(i) for i in range(10)))
    path = zoo.save_artifact(zoo.LoadedModel(p, spec, "test"), tmp_path / "pruned.pt")
    back = zoo.load_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    assert count_params(back.model)[0] == count_params(p)[0] < count_params(m)[0]
    assert torch.equal(back.model(x), p(x))
