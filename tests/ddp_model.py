"""The small network and batch size shared by the DDP test and its torchrun worker."""
import torch
from torch import nn

GLOBAL_BATCH = 16
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def small_net() -> nn.Module:
    """Conv + ReLU + pool + linear, without BatchNorm: BatchNorm statistics are per rank
    under DDP, so only a BN-free net has exactly the full-batch gradient."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 10))
