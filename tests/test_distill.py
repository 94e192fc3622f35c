"""Knowledge distillation: the loss is the formula, training on real images learns, label-free
mode needs no labels, cancel stops within one step, selective unfreezing picks the right parts."""
import math
import threading

import pytest
import torch

from compress import data as D
from compress.distill import (DistillConfig, DistillError, TrainConfig, distill, kd_loss,
                              set_trainable)
from compress.progress import Cancelled
from compress.zoo import ZOO, build_architecture

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
    from compress.zoo import load_model
    from compress.prune import StructuredConfig, prune_structured
    teacher = load_model("resnet18_cifar10").model
    student, _ = prune_structured(teacher, StructuredConfig(ratio=0.5), (3, 32, 32))
    x, y = tiny
    cfg = TrainConfig(epochs=3, lr=0.01, warmup_epochs=0.0, channels_last=False)
    res = distill(student, teacher, _batches(x, y), cfg, DistillConfig(4.0, 0.9), torch.device("cpu"))
    losses = [r.train_loss for r in res.history]
    assert losses[-1] < losses[0]
    assert all(not p.requires_grad for p in teacher.parameters())


def test_label_free_mode_trains_on_an_unlabelled_folder(cifar_asset, tiny, tmp_path):
    from PIL import Image
    from compress.zoo import load_model
    x, _ = tiny
    for i in range(24):
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(tmp_path / f"photo{i}.png")
    images = D.scan_folder(tmp_path, allow_unlabelled=True)
    assert images.labels is None
    loader = D.make_loader(D.ImageListDataset(images, SPEC.preprocess.transform()), batch_size=8, shuffle=True)
    teacher = load_model("resnet18_cifar10").model
    student = build_architecture("resnet18", 10)
    cfg = TrainConfig(epochs=2, lr=0.01, warmup_epochs=0.0, channels_last=False)
    res = distill(student, teacher, loader, cfg, DistillConfig(4.0, 1.0), torch.device("cpu"))
    assert len(res.history) == 2 and res.history[-1].train_loss < res.history[0].train_loss
    with pytest.raises(DistillError, match="label-free"):
        distill(build_architecture("resnet18", 10), teacher, loader, cfg, DistillConfig(4.0, 0.5),
                torch.device("cpu"))


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
        distill(build_architecture("resnet18", 10), teacher, _batches(x, y), cfg, DistillConfig(),
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
        distill(m, m, [], TrainConfig(epochs=1), DistillConfig(T, alpha), torch.device("cpu"))
