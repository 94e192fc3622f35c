"""Quantization-aware training (``qat``): fake-quant fine-tuning with the project's one
training loop (compress/train.py), then conversion to torch.ao static INT8."""
from __future__ import annotations

import warnings

import torch

from compress.data import has_labels
from compress.errors import QuantizeError
from compress.quantize.base import QuantContext, QuantizedModel, register, torch_bytes
from compress.quantize.fx import standard_convs, torch_int8_caveat
from compress.runtimes import PYTORCH
from compress.train import TrainConfig, fit


@register("qat", "Quantization-aware training: fine-tune with 8-bit rounding simulated, then convert "
          "to static INT8. Recovers accuracy that plain static INT8 loses; needs training photos.",
          runtime=f"{PYTORCH} INT8 ({{backend}}, QAT)", engine=PYTORCH, order=80, trains=True, is_int8=True,
          caveat=torch_int8_caveat)
def qat(ctx: QuantContext) -> QuantizedModel:
    """Fake-quant fine-tuning with the project's one training loop, then convert to INT8."""
    from torch.ao.quantization import QConfigMapping, get_default_qat_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx
    import torch.ao.nn.intrinsic.qat as nniqat
    cfg, train_batches = ctx.cfg, ctx.train_batches
    if train_batches is None:
        raise QuantizeError("QAT fine-tunes on labelled training photos: give a training set.")
    if not has_labels(train_batches):
        raise QuantizeError("QAT fine-tunes on labelled training photos; these have no labels. Give one "
                            "sub-folder per class, a labels.csv, or a CIFAR-10 tarball.")
    torch.backends.quantized.engine = cfg.backend
    qmap = QConfigMapping().set_global(get_default_qat_qconfig(cfg.backend))
    for n in cfg.keep_float:
        qmap = qmap.set_module_name(n, None)
    work = standard_convs(ctx.model, ctx.input_size)[0].train()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_qat_fx(work, qmap, (torch.zeros(1, *ctx.input_size),))
    except Exception as e:
        raise QuantizeError(f"PyTorch could not trace this model for QAT "
                            f"({type(e).__name__}: {str(e)[:200]}).") from None
    # A trained model's BatchNorm statistics are better than those of a few QAT batches:
    # keep them frozen (PyTorch's QAT recipe freezes them after the first epochs).
    prepared.apply(nniqat.freeze_bn_stats)
    tcfg = TrainConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, optimizer="sgd", weight_decay=0.0,
                       warmup_epochs=0.0, amp=False, channels_last=False)
    fit(prepared, train_batches, tcfg, torch.device("cpu"), on_progress=ctx.on_progress, cancel=ctx.cancel)
    prepared.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = convert_fx(prepared)
    return ctx.result(q, torch_bytes(q), [f"{cfg.qat_epochs} QAT epoch(s) at lr {cfg.qat_lr}"])
