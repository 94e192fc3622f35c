"""Run by tests/test_distill.py under ``torchrun --nproc_per_node 2``: one training epoch of
``fit`` on real CIFAR-10 images, sharded over the ranks; rank 0 saves the weights.

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py IMAGES.pt OUT.pt
"""
import sys

import torch

from compress import distributed
from compress.data import TensorBatches
from compress.train import TrainConfig, fit
from tests.ddp_model import GLOBAL_BATCH, MEAN, STD, small_net

images, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
w, device = distributed.init_from_env(torch.device("cpu"))
blob = torch.load(images, weights_only=True)
batches = TensorBatches(blob["x"], blob["y"], GLOBAL_BATCH // w.size, MEAN, STD,
                        rank=w.rank, world_size=w.size)
model = small_net()
events = []
fit(model, batches, TrainConfig(epochs=1, lr=0.05, warmup_epochs=0.0, channels_last=False),
    device, on_progress=events.append)
if w.main:
    epoch = [e for e in events if e.stage == "epoch"][-1].metrics
    torch.save({"state": model.state_dict(), "world": w.size, "train_loss": epoch["train_loss"],
                "train_acc": epoch["train_acc"]}, out)
else:
    assert events == [], "only rank 0 reports progress"
distributed.shutdown()
