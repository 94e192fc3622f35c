"""Half precision: ``fp16`` (CUDA) and ``bf16`` (CUDA or the CPU), weights and activations
in 16 bits, run by PyTorch eager."""
from __future__ import annotations

import copy

import torch

from compress.quantize.base import QuantContext, QuantizedModel, cpu_has_native_bf16, register, torch_bytes
from compress.runtimes import PYTORCH, PYTORCH_EAGER, CastInput


def _half(ctx: QuantContext, dtype: torch.dtype) -> QuantizedModel:
    notes = []
    if ctx.device.type != "cuda" and not cpu_has_native_bf16():
        notes.append("This CPU has no native BF16 (AVX512-BF16 or AMX): BF16 is emulated "
                     "and is expected to be slower than FP32 here.")
    work = copy.deepcopy(ctx.model).eval().to(device=ctx.device, dtype=dtype)
    return ctx.result(CastInput(work, dtype), torch_bytes(work), notes, device=ctx.device)


@register("fp16", "Half precision (FP16): 2× smaller, faster on NVIDIA GPUs. Needs CUDA.",
          runtime=f"{PYTORCH_EAGER} FP16", engine=PYTORCH, order=90, devices=("cuda",),
          device_note="FP16 runs fast only on a CUDA GPU, and there is none here (choose bf16, static "
                      "INT8 or ort-int8 for a CPU).")
def fp16(ctx: QuantContext) -> QuantizedModel:
    return _half(ctx, torch.float16)


@register("bf16", "Bfloat16: 2× smaller; fast on GPUs and on CPUs with native BF16 (AVX512-BF16/AMX).",
          runtime=f"{PYTORCH_EAGER} BF16", engine=PYTORCH, order=100, devices=("cpu", "cuda"),
          device_note="bf16 runs on the CPU or a CUDA GPU.")
def bf16(ctx: QuantContext) -> QuantizedModel:
    return _half(ctx, torch.bfloat16)
