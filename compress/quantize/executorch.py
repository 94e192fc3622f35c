"""ExecuTorch with XNNPACK, the runtime phones embed (timed here on this CPU): ``et-fp32``
(the float model as an ExecuTorch program) and ``et-int8`` (PT2E with ExecuTorch's
XNNPACKQuantizer, calibrated on the photos, then lowered)."""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Optional

import torch
from torch import nn

from compress.errors import QuantizeError
from compress.progress import emit
from compress.quantize.base import QuantContext, QuantizedModel, register
from compress.quantize.fx import kept_note
from compress.quantize.pt2e import calibrate_one_by_one
from compress.runtimes import EXECUTORCH, XNNPACK, ExecuTorchModel
from compress.exclusive import one_at_a_time

Quantizer = Callable[[QuantContext, nn.Module, tuple], nn.Module]


def _xnnpack_int8(ctx: QuantContext, work: nn.Module, example: tuple) -> nn.Module:
    """PT2E (torchao's ``prepare_pt2e``/``convert_pt2e``) with ExecuTorch's
    ``XNNPACKQuantizer``: per-channel symmetric 8-bit weights, 8-bit activations."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    # strict export records one source per call of a module: torchvision's ResNet
    # calls one ReLU module twice per block, and the non-strict default groups both
    # calls into one partition, which PT2E quantizers reject
    graph = torch.export.export(work, example, strict=True).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=ctx.cfg.per_channel))
    for n in ctx.cfg.keep_float:
        quantizer.set_module_name(n, None)
    prepared = prepare_pt2e(graph, quantizer)
    calibrate_one_by_one(ctx, prepared)
    return convert_pt2e(prepared)


def _program(ctx: QuantContext, quantize: Optional[Quantizer] = None) -> QuantizedModel:
    """The model (quantized first by ``quantize``, if given) as an ExecuTorch XNNPACK
    program, run by the ExecuTorch runtime."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise QuantizeError("ExecuTorch is not installed: pip install -r requirements.txt") from None
    example = (torch.zeros(1, *ctx.input_size),)
    # the standard layout: a channels-last model (a user's, or one trained that way) fails
    # ExecuTorch's ChannelsLastTaggedReshapePass
    work = copy.deepcopy(ctx.model).cpu().eval().to(memory_format=torch.contiguous_format)
    notes = []
    try:
        with warnings.catch_warnings(), one_at_a_time("ExecuTorch export", ctx.on_progress):
            warnings.simplefilter("ignore")
            if quantize is not None:
                work = quantize(ctx, work, example)
                notes += kept_note(ctx.cfg)
            emit(ctx.on_progress, "export", 0.9, "lowering to ExecuTorch (XNNPACK)")
            program = torch.export.export(work, example)
            pte = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    except Exception as e:  # noqa: BLE001 - any export/quantizer failure becomes a plain message
        raise QuantizeError(f"ExecuTorch could not take this model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}). Try ort-int8.") from None
    notes.append("batch 1: an ExecuTorch program has a fixed input shape")
    return ctx.result(ExecuTorchModel(pte), pte, notes, pte=pte)


@register("et-fp32", "ExecuTorch FP32 (XNNPACK): the float model as an ExecuTorch program, the format "
          "phones run. Not a quantization: the fair float baseline for ExecuTorch INT8.",
          runtime=f"{EXECUTORCH} FP32 ({XNNPACK})", engine=EXECUTORCH, order=60, artifact="pte")
def et_fp32(ctx: QuantContext) -> QuantizedModel:
    return _program(ctx)


@register("et-int8", "ExecuTorch INT8 (XNNPACK): PyTorch 2 export quantization calibrated on the same "
          "photos, lowered to XNNPACK. The INT8 file for phones; timed here on this CPU.",
          runtime=f"{EXECUTORCH} INT8 ({XNNPACK})", engine=EXECUTORCH, order=70, artifact="pte",
          calibrates=True, is_int8=True, float_twin="et-fp32")
def et_int8(ctx: QuantContext) -> QuantizedModel:
    return _program(ctx, _xnnpack_int8)
