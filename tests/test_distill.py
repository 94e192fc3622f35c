"""Knowledge distillation: the loss is the formula, training on real images learns, label-free
mode needs no labels, cancel stops within one step, selective unfreezing picks the right parts."""
import math
import threading

import pytest
import torch

from compress import data as D
from compress.distill import (DistillError, TrainConfig, distill, kd_loss,
                              set_trainable)
from compress.progress import Cancelled
from compress.zoo import ZOO, build_architecture
from compress import recovery as RV

SPEC = ZOO["resnet18_cifar10"]


def test_kd_loss_equals_a_hand_computation():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    t = torch.tensor([[1.0, 0.5, 0.0], [0.0, 3.0, -2.0]])
    y = torch.tensor([0, 1])
    T, a = 2.0, 0.7

    def softmax(v):
        e = [math.exp(z) for z in v]
        return [z / sum(e) for z in e]
    kl = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        ps, pt = softmax([z / T for z in si]), softmax([z / T for z in ti])
        kl += sum(q * math.log(q / p) for q, p in zip(pt, ps))
    kl = kl / 2 * T * T
    ce = -(math.log(softmax(s[0].tolist())[0]) + math.log(softmax(s[1].tolist())[1])) / 2
    expected = a * kl + (1 - a) * ce
    assert abs(float(kd_loss(s, t, y, T, a)) - expected) < 1e-6
    assert abs(float(kd_loss(s, t, torch.tensor([-1, -1]), T, 1.0)) - kl) < 1e-6   # label-free


@pytest.fixture(scope="module")
def tiny(cifar_tar):
    images = D.open_labelled(cifar_tar).subset(D.subset_indices(10_000, 192, seed=3))
    x, y = D.decode_to_tensor(images, 32)
    return x, y


def _batches(x, y, seed=0):
    return D.TensorBatches(x, y, 64, SPEC.preprocess.mean, SPEC.preprocess.std, shuffle=True, seed=seed)


def test_distillation_on_real_images_lowers_the_loss(cifar_asset, tiny):
    from compress.checkpoint import load_model
    from compress.prune import StructuredConfig, prune_structured
    teacher = load_model("resnet18_cifar10").model
    student, _ = prune_structured(teacher, StructuredConfig(ratio=0.5), (3, 32, 32))
    x, y = tiny
    cfg = TrainConfig(epochs=3, lr=0.01, warmup_epochs=0.0, channels_last=False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    frozen = []
    res = distill(student, teacher, _batches(x, y), cfg, torch.device("cpu"), temperature=4.0, alpha=0.9,
                  on_progress=lambda ev: frozen.append(not any(p.requires_grad for p in teacher.parameters())))
    losses = [r.train_loss for r in res.history]
    assert losses[-1] < losses[0]
    assert frozen and all(frozen)                                   # frozen while teaching
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())       # the caller's model is given back


def test_label_free_mode_trains_on_an_unlabelled_folder(cifar_asset, tiny, tmp_path):
    from PIL import Image
    from compress.checkpoint import load_model
    x, _ = tiny
    for i in range(24):
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(tmp_path / f"photo{i}.png")
    images = D.scan_folder(tmp_path, allow_unlabelled=True)
    assert images.labels is None
    loader = D.make_loader(D.ImageListDataset(images, SPEC.preprocess.transform()), batch_size=8, shuffle=True)
    teacher = load_model("resnet18_cifar10").model
    student = build_architecture("resnet18", 10)
    cfg = TrainConfig(epochs=2, lr=0.01, warmup_epochs=0.0, channels_last=False)
    res = distill(student, teacher, loader, cfg, torch.device("cpu"), temperature=4.0, alpha=1.0)
    assert len(res.history) == 2 and res.history[-1].train_loss < res.history[0].train_loss
    with pytest.raises(DistillError, match="label-free"):
        distill(build_architecture("resnet18", 10), teacher, loader, cfg, torch.device("cpu"),
                temperature=4.0, alpha=0.5)


def test_cancel_stops_within_one_step(tiny):
    x, y = tiny
    flag = threading.Event()
    steps = []

    def on_progress(ev):
        if ev.stage == "train":
            steps.append(ev.metrics["step"])
            flag.set()                       # the user presses Cancel after the first step
    teacher = build_architecture("resnet18", 10)
    cfg = TrainConfig(epochs=5, lr=0.01, warmup_epochs=0.0, channels_last=False)
    with pytest.raises(Cancelled, match="step 1"):
        distill(build_architecture("resnet18", 10), teacher, _batches(x, y), cfg,
                torch.device("cpu"), on_progress=on_progress, cancel=flag)
    assert steps == [1]


def test_selective_unfreeze_trains_pruned_layers_bn_and_classifier():
    m = build_architecture("resnet18", 10)
    n = set_trainable(m, "pruned", ["layer2.0.conv1"])
    trainable = {name for name, p in m.named_parameters() if p.requires_grad}
    assert "layer2.0.conv1.weight" in trainable and "fc.weight" in trainable
    assert "layer1.0.bn1.weight" in trainable
    assert "layer1.0.conv1.weight" not in trainable and "conv1.weight" not in trainable
    assert n < sum(p.numel() for p in m.parameters()) == set_trainable(m, "all")
    with pytest.raises(DistillError, match="Unknown unfreeze"):
        set_trainable(m, "some")


@pytest.mark.parametrize("T,alpha,needle", [(0.0, 0.5, "Temperature"), (4.0, 1.5, "between 0 and 1")])
def test_bad_distillation_settings(T, alpha, needle):
    m = build_architecture("resnet18", 10)
    with pytest.raises(DistillError, match=needle):
        distill(m, m, [], TrainConfig(epochs=1), torch.device("cpu"), temperature=T, alpha=alpha)


def test_ddp_world_size_2_matches_one_process_on_the_full_batch(cifar_tar, tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank trains on half of every batch; the
    averaged gradients must give the same weights, and the all-reduced loss/accuracy the
    same figures, as one process on the whole batch."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from compress import data as D
    from compress.data import TensorBatches
    from compress.train import TrainConfig, fit
    from tests.ddp_model import GLOBAL_BATCH, MEAN, STD, small_net

    images = D.open_labelled(cifar_tar).subset(D.subset_indices(10_000, 2 * GLOBAL_BATCH, seed=3))
    x, y = D.decode_to_tensor(images, 32)
    torch.save({"x": x, "y": y}, tmp_path / "images.pt")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(root / "tests" / "ddp_worker.py"),
                           str(tmp_path / "images.pt"), str(tmp_path / "ddp.pt")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert ddp["world"] == 2

    single = small_net()
    events = []
    fit(single, TensorBatches(x, y, GLOBAL_BATCH, MEAN, STD),
        TrainConfig(epochs=1, lr=0.05, warmup_epochs=0.0, channels_last=False),
        torch.device("cpu"), on_progress=events.append)
    start = small_net().state_dict()
    for name, value in single.state_dict().items():
        assert not torch.allclose(value, start[name]), f"{name} did not train"
        torch.testing.assert_close(ddp["state"][name], value, rtol=1e-4, atol=1e-5)
    epoch = [e for e in events if e.stage == "epoch"][-1].metrics
    assert abs(ddp["train_loss"] - epoch["train_loss"]) < 1e-4
    assert abs(ddp["train_acc"] - epoch["train_acc"]) < 1e-6


def test_renormalize_gives_the_teacher_its_own_normalisation():
    from compress.distill import Renormalize
    from compress.zoo import ZOO
    s_pre, t_pre = ZOO["efficientnet_lite0"].preprocess, ZOO["resnet50"].preprocess
    raw = torch.rand(2, 3, 8, 8)                       # pixels in [0, 1]
    v = lambda t: torch.tensor(t).view(1, 3, 1, 1)    # noqa: E731
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.mean((2, 3))
    Renormalize(Spy(), s_pre, t_pre)((raw - v(s_pre.mean)) / v(s_pre.std))
    torch.testing.assert_close(seen["x"], (raw - v(t_pre.mean)) / v(t_pre.std))


def test_teacher_for_another_task_or_without_weights_is_a_message():
    from compress.distill import load_teacher
    from compress.errors import WeightsUnavailable
    from compress.zoo import ZOO
    with pytest.raises(DistillError, match="same task"):
        load_teacher("resnet18_cifar10", ZOO["efficientnet_lite0"])
    with pytest.raises(WeightsUnavailable, match="resnet50-"):
        load_teacher("resnet50", ZOO["efficientnet_lite0"])


def test_recover_trains_only_what_pruning_changed_and_returns_a_new_model(cifar_asset, tiny):
    from compress.distill import RecoverConfig, changed_layers, recover
    from compress.prune import StructuredConfig, prune_structured
    from compress.checkpoint import load_model
    original = load_model("resnet18_cifar10").model
    pruned, _ = prune_structured(original, StructuredConfig(ratio=0.5, only_layers=("layer3.0.conv1",)),
                                 (3, 32, 32))
    assert changed_layers(original, pruned) == ["layer3.0.conv1", "layer3.0.bn1", "layer3.0.conv2"]
    snapshot = {k: v.clone() for k, v in pruned.state_dict().items()}
    x, y = tiny
    cfg = RV.plan(RecoverConfig(method="finetune", epochs=1, unfreeze="pruned", holdout=0), len(x), True).config
    recovered, res = recover(pruned, original, cfg, _batches(x, y), torch.device("cpu"))
    assert len(res.history) == 1 and recovered is not pruned
    after = recovered.state_dict()
    for k, v in pruned.state_dict().items():                     # the input is untouched
        assert torch.equal(v, snapshot[k])
    assert not torch.equal(after["layer3.0.conv1.weight"], snapshot["layer3.0.conv1.weight"])
    assert not torch.equal(after["fc.weight"], snapshot["fc.weight"])          # classifier trains
    assert torch.equal(after["layer2.0.conv1.weight"], snapshot["layer2.0.conv1.weight"])  # frozen
    assert all(p.requires_grad for p in recovered.parameters())
    # trained in channels-last for speed, handed back in the standard layout, so ExecuTorch
    # takes it (its ChannelsLastTaggedReshapePass failed on pruned + distilled models, issue 32)
    assert all(p.is_contiguous() for p in recovered.parameters())
    from compress.quantize import QuantConfig, quantize
    q = quantize(recovered, QuantConfig(mode="et-fp32"), (3, 32, 32), None, torch.device("cpu"))
    assert q.pte is not None and q.model(x[:2]).shape == (2, 10)


@pytest.mark.parametrize("field,value,needle", [
    ("lr", 3.0, "learning rate"), ("epochs", 0, "Epochs"), ("batch_size", 0, "batch size"),
    ("unfreeze", "some", "unfreeze"), ("method", "magic", "Unknown recovery")])
def test_bad_recovery_settings(field, value, needle):
    from dataclasses import replace
    from compress.distill import RecoverConfig, validate_recover
    with pytest.raises(DistillError, match=needle):
        validate_recover(replace(RecoverConfig(), **{field: value}))


def test_fine_tuning_on_unlabelled_photos_is_a_message(tiny, tmp_path):
    from compress.distill import RecoverConfig, recover
    x, _ = tiny
    model = build_architecture("resnet18", 10)
    unlabelled = D.TensorBatches(x, torch.full((len(x),), -1), 64, SPEC.preprocess.mean, SPEC.preprocess.std)
    with pytest.raises(DistillError, match="label-free"):
        recover(model, model, RV.plan(RecoverConfig(method="finetune", epochs=1), len(x), True).config, unlabelled,
                torch.device("cpu"))


def test_empty_training_folder_is_a_message(tmp_path):
    from compress.errors import DataError
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match="No images"):
        D.open_training(tmp_path / "photos")


def test_stage_ends_are_the_blocks_that_end_each_resolution():
    from compress.distill import stage_ends
    from torchvision.models import mobilenet_v3_small
    resnet = build_architecture("resnet18", 10)
    # 32x32: the stem's ReLU is 16x16, then each stage halves; layer4 is 1x1 and carries no map
    assert stage_ends(resnet, (3, 32, 32)) == ["relu", "layer1.1", "layer2.1", "layer3.1"]
    assert stage_ends(resnet, (3, 224, 224)) == ["relu", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    ends = stage_ends(mobilenet_v3_small(), (3, 224, 224))
    assert all(e.startswith("features.") for e in ends) and len(ends) == 5     # 112, 56, 28, 14, 7


def test_attention_map_ignores_the_channel_count_and_is_unit_length():
    from compress.distill import attention_map
    f = torch.randn(3, 16, 8, 8)
    a = attention_map(f)
    assert a.shape == (3, 64)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    # the same spatial energy spread over twice the channels gives the same map
    assert torch.allclose(attention_map(torch.cat([f, f], 1)), a, atol=1e-6)


def test_attention_transfer_pulls_the_stage_maps_towards_the_teacher(cifar_asset, tiny):
    """Two distillations from the same pruned start, seed and images, one with attention
    transfer: the one with it ends with stage attention maps closer to the teacher's,
    measured through the same hooks the trainer uses; the hooks are removed afterwards."""
    import copy
    from compress.distill import _StageRecorder, attention_map, stage_ends
    from compress.prune import StructuredConfig, prune_structured
    from compress.checkpoint import load_model
    teacher = load_model("resnet18_cifar10").model
    start, _ = prune_structured(teacher, StructuredConfig(ratio=0.5, protected=("fc",)), (3, 32, 32))
    x, y = tiny
    names = stage_ends(start, (3, 32, 32))
    batch = next(iter(D.TensorBatches(x, y, 192, SPEC.preprocess.mean, SPEC.preprocess.std)))[0]

    def at_term(model):
        recs = [_StageRecorder(model, names), _StageRecorder(teacher, names)]
        with torch.no_grad():
            model.eval()(batch)
            teacher.eval()(batch)
        s, t = recs[0].out, recs[1].out
        for r in recs:
            r.remove()
        return float(sum((attention_map(s[n]) - attention_map(t[n])).pow(2).mean() for n in names))
    terms = {}
    for beta in (0.0, 200.0):
        student = copy.deepcopy(start)
        cfg = TrainConfig(epochs=3, lr=0.01, warmup_epochs=0.0, channels_last=False)
        distill(student, teacher, _batches(x, y), cfg, torch.device("cpu"), temperature=2.0, alpha=0.5,
                attention=beta, input_size=(3, 32, 32))
        terms[beta] = at_term(student)
        assert not any(m._forward_hooks for m in student.modules())
    assert terms[200.0] < 0.8 * terms[0.0]
    assert not any(m._forward_hooks for m in teacher.modules())


def test_attention_transfer_needs_the_original_as_teacher():
    from dataclasses import replace
    from compress.distill import RecoverConfig, validate_recover
    with pytest.raises(DistillError, match="original"):
        validate_recover(replace(RecoverConfig(), attention=100.0, teacher="resnet18"))
    with pytest.raises(DistillError, match="Warm-up"):
        validate_recover(replace(RecoverConfig(), epochs=2, warmup_epochs=3.0))


def test_recovery_methods_registry_says_what_each_needs():
    """Every reader (validation, the pipeline, reports, the Distill page) asks the entry, not the name."""
    from compress.distill import RECOVERY_METHODS, RecoverConfig, validate_recover
    assert list(RECOVERY_METHODS) == ["distill", "finetune"]
    kd, ft = RECOVERY_METHODS["distill"], RECOVERY_METHODS["finetune"]
    assert kd.uses_teacher and not ft.uses_teacher
    assert not kd.needs_labels(RecoverConfig(alpha=1.0)) and kd.needs_labels(RecoverConfig(alpha=0.9))
    assert ft.needs_labels(RecoverConfig(method="finetune", alpha=1.0))
    assert (kd.noun, kd.past, ft.noun, ft.past) == ("distillation", "distilled", "fine-tuning", "fine-tuned")
    for m in RECOVERY_METHODS.values():
        assert m.description and m.label and callable(m.handler)
    assert RecoverConfig(teacher="resnet34").zoo_teacher == "resnet34"
    assert RecoverConfig().zoo_teacher is None                          # the original is not loaded
    assert RecoverConfig(method="finetune", teacher="resnet34").zoo_teacher is None
    validate_recover(RecoverConfig(method="finetune", temperature=0.0))  # a teacher's settings do not apply
    with pytest.raises(DistillError, match="Temperature"):
        validate_recover(RecoverConfig(temperature=0.0))
