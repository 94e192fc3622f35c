import io

import pytest
import torch
import torchvision
from torch import nn

from compress import data as D
from compress import measure as M
from compress import timing as T


def test_wilson_interval_known_values():
    lo, hi = M.wilson_interval(81, 100)
    assert lo == pytest.approx(72.2, abs=0.1) and hi == pytest.approx(87.5, abs=0.1)
    lo, hi = M.wilson_interval(0, 10)
    assert lo == 0 and 0 < hi < 35


def test_size_is_real_serialized_bytes_and_nonzero_counts_zeros():
    m = torchvision.models.resnet18(num_classes=10)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    size, gz = M.serialized_size(m)
    assert size == len(buf.getvalue()) and 0 < gz < size
    total, nonzero = M.count_params(m)
    with torch.no_grad():
        m.fc.weight.zero_()
    assert M.count_params(m) == (total, nonzero - 5120)


def test_layer_table_adds_up_to_total_macs():
    m = torchvision.models.resnet18()
    rows = M.layer_table(m, (3, 224, 224))
    convs = [r for r in rows if r.type == "Conv2d"]
    assert len(convs) == 20
    assert sum(r.macs for r in rows) == M.count_macs(m, (3, 224, 224))
    assert sum(r.params for r in rows) == 11_689_512
    assert convs[0].name == "conv1" and convs[0].out_channels == 64 and convs[0].kernel == "7x7"


def test_layer_table_counts_layers_that_have_children(lite0):
    """efficientnet_lite0's convs are Conv2d subclasses holding a padding module."""
    rows = M.layer_table(lite0.model, (3, 224, 224))
    assert sum(r.macs for r in rows) == M.count_macs(lite0.model, (3, 224, 224))
    assert sum(r.params for r in rows) == 4_652_008
    assert "_conv_stem" in [r.name for r in rows]


def test_latency_reports_method_and_scales_with_batch():
    m = torchvision.models.resnet18(num_classes=10)
    one = T.measure_latency(m, (3, 32, 32), torch.device("cpu"), batch=1, warmup=2, runs=7)
    many = T.measure_latency(m, (3, 32, 32), torch.device("cpu"), batch=32, warmup=2, runs=7)
    assert one.runs == 7 and one.batch == 1 and one.device == "cpu" and one.threads >= 1
    assert 0 < one.median <= one.p90
    assert many.median > one.median  # 32 images cost more than one, measured in the same run


def test_peak_memory_grows_with_input():
    m = torchvision.models.resnet18(num_classes=10)
    small = M.measure_peak_memory(m, (3, 32, 32), torch.device("cpu"))
    big = M.measure_peak_memory(m, (3, 128, 128), torch.device("cpu"))
    assert 0 < small < big


class FixedLogits(nn.Module):
    """Predicts class (x[:,0,0,0] as int): lets us hand-check top-1/top-5."""
    def forward(self, x):
        idx = x[:, 0, 0, 0].long()
        out = torch.zeros(x.shape[0], 10)
        out[torch.arange(x.shape[0]), idx] = 10.0
        out[:, 9] += 5.0   # class 9 always second
        return out


def test_evaluate_top1_top5_by_hand():
    x = torch.zeros(4, 3, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([1, 2, 3, 4])
    y = torch.tensor([1, 2, 0, 9])   # right, right, wrong, wrong-top1-but-top5
    acc = M.evaluate(FixedLogits(), [(x, y)], torch.device("cpu"))
    assert acc.n == 4 and acc.top1 == 50.0 and acc.top5 == 75.0
    assert acc.ci95[0] < 50 < acc.ci95[1]


def test_efficientnet_lite0_accuracy_on_real_images(lite0, imagenet_val):
    images = D.scan_folder(imagenet_val)
    loader, sub = D.eval_loader(images, lite0.spec.preprocess.transform(), limit=64, seed=0,
                                batch_size=32, workers=0)
    acc = M.evaluate(lite0.model, loader, torch.device("cpu"))
    assert acc.n == 64
    assert acc.top1 > 60, acc   # about 80% on the full 650; random weights would give ~0.1%


def test_labels_outside_the_model_are_refused():
    from compress.errors import DataError
    with pytest.raises(DataError, match="label 999.*10 classes"):
        D.check_labels_fit([0, 999], 10, "resnet18_cifar10")


def test_gzip_size_is_gzip_level_6_and_remembered(tmp_path, monkeypatch):
    import gzip
    import os

    from compress.measure import gzip_size
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(tmp_path))
    raw = os.urandom(1 << 19) + bytes(1 << 20)          # 1.5 MB: half noise, half zeros
    n = gzip_size(raw)
    assert n == len(gzip.compress(raw, compresslevel=6)) and (1 << 19) < n < (1 << 19) + 4096
    assert (tmp_path / "gzip-sizes.json").is_file()
    assert gzip_size(raw) == n and gzip_size(raw[:-1] + b"\x01") != 0     # another file, another entry
    (tmp_path / "gzip-sizes.json").write_text("not json")                # a damaged table is rebuilt
    assert gzip_size(raw) == n
