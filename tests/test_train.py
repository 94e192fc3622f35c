"""The training loop on a tiny real CIFAR-10 subset: it learns, reports, checkpoints, resumes."""
import torch

from compress import data as D
from compress.distill import TrainConfig, fit
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
