"""The training loop on a tiny real CIFAR-10 subset: it learns, reports, checkpoints, resumes."""
import pytest
import torch

from compress import data as D
from compress.train import TrainConfig, fit
from compress.zoo import ZOO, build_architecture


def test_fit_lowers_loss_reports_and_resumes(cifar_tar, tmp_path):
    spec = ZOO["resnet18_cifar10"]
    images = D.open_labelled(cifar_tar).subset(D.subset_indices(10_000, 256, seed=1))
    x, y = D.decode_to_tensor(images, 32)
    batches = D.TensorBatches(x, y, 64, spec.preprocess.mean, spec.preprocess.std, shuffle=True, seed=0)
    model = build_architecture("resnet18", 10)
    events = []
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0.0, channels_last=False)
    result = fit(model, batches, cfg, torch.device("cpu"), val_batches=batches,
                 on_progress=events.append, workdir=tmp_path)
    losses = [r.train_loss for r in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.history[-1].val_acc is not None and 0 <= result.history[-1].val_acc <= 100
    assert [e.metrics["epoch"] for e in events if e.stage == "epoch"] == [1, 2, 3]
    assert (tmp_path / "last.pt").is_file()
    # resuming a finished run trains no further and keeps the history
    again = fit(build_architecture("resnet18", 10), batches, cfg, torch.device("cpu"),
                workdir=tmp_path, resume=True)
    assert [r.train_loss for r in again.history] == losses


def test_resume_continues_from_the_last_epoch_checkpoint(cifar_tar, tmp_path):
    """A run stopped in epoch 2 resumes at epoch 2 with epoch 1's weights and history."""
    import threading
    from compress.progress import Cancelled
    spec = ZOO["resnet18_cifar10"]
    images = D.open_labelled(cifar_tar).subset(D.subset_indices(10_000, 128, seed=2))
    x, y = D.decode_to_tensor(images, 32)
    batches = D.TensorBatches(x, y, 32, spec.preprocess.mean, spec.preprocess.std, shuffle=True, seed=0)
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0.0, channels_last=False)
    stop = threading.Event()

    def stop_in_epoch_2(ev):
        if ev.stage == "epoch" and ev.metrics["epoch"] == 1:
            stop.set()
    first = build_architecture("resnet18", 10)
    with pytest.raises(Cancelled, match="epoch 2"):
        fit(first, batches, cfg, torch.device("cpu"), on_progress=stop_in_epoch_2, cancel=stop,
            workdir=tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == 1
    events = []
    resumed = build_architecture("resnet18", 10)
    result = fit(resumed, batches, cfg, torch.device("cpu"), on_progress=events.append,
                 workdir=tmp_path, resume=True)
    assert events[0].message == "resumed after epoch 1"
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert [e.metrics["epoch"] for e in events if e.stage == "epoch"] == [2, 3]
    assert result.history[0].train_loss == json_loss(saved)


def json_loss(saved) -> float:
    import json
    return json.loads(saved["history_json"])[0]["train_loss"]
