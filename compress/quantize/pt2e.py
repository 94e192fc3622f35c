"""PyTorch 2 export quantization for x86 (``pt2e``): torch.export, torchao's
X86InductorQuantizer, convert_pt2e, then TorchInductor; the FX path (``static``) when any
of it fails."""
from __future__ import annotations

import io
import time
import warnings

import torch

from compress.progress import emit
from compress.quantize.base import QuantContext, QuantizedModel, cpu_has_vnni, register
from compress.quantize.fx import STATIC, kept_note, standard_convs, static
from compress.runtimes import PYTORCH, InductorModel
from compress.exclusive import one_at_a_time


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete the parameters and buffers no node reads: after ``convert_pt2e`` the graph
    reads INT8 copies of the weights, and the float originals would otherwise be saved too
    (5x the bytes)."""
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    for name, _ in list(graph.named_parameters()) + list(graph.named_buffers()):
        if name not in used:
            parent, _, leaf = name.rpartition(".")
            owner = graph.get_submodule(parent) if parent else graph
            owner._parameters.pop(leaf, None)
            owner._buffers.pop(leaf, None)


def calibrate_one_by_one(ctx: QuantContext, prepared, share: float = 1.0) -> None:
    """Run every calibration image through a PT2E-prepared graph (batch 1, as exported)."""
    n_cal, done = sum(len(x) for x in ctx.calib), 0
    with torch.no_grad():
        for x in ctx.calib:
            for i in range(len(x)):
                prepared(x[i:i + 1])
            done += len(x)
            emit(ctx.on_progress, "calibrate", share * done / n_cal, f"calibrated on {done}/{n_cal} images")


@register("pt2e", "PyTorch 2 INT8 (PT2E + TorchInductor): weights and activations in 8-bit, ranges "
          "learned from a few real photos, compiled for x86. PyTorch's current INT8 path; compiling "
          "takes tens of seconds once.",
          runtime=f"{PYTORCH} INT8 (PT2E, Inductor)", engine=PYTORCH, order=20, artifact="pt2",
          calibrates=True, is_int8=True)
def pt2e(ctx: QuantContext) -> QuantizedModel:
    """PyTorch 2 export quantization for x86: ``torch.export`` (strict, so a ReLU module
    called twice per block is two partitions), torchao's ``X86InductorQuantizer``
    (per-channel 8-bit weights, histogram-calibrated 8-bit activations; 7-bit activations
    on a CPU without VNNI, as torch.ao does), ``convert_pt2e``, then TorchInductor. This is
    the path that replaces torch.ao's FX quantization (``static``), which PyTorch has
    deprecated. If any of it fails (no C++ compiler for Inductor, an untraceable model) the
    FX path runs instead and the notes say why."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), one_at_a_time("PyTorch 2 export", ctx.on_progress):
            warnings.simplefilter("ignore")
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e import allow_exported_model_train_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            work, _ = standard_convs(ctx.model, ctx.input_size)
            example = (torch.zeros(1, *ctx.input_size),)
            graph = torch.export.export(work, example, strict=True).module()
            quantizer = xiq.X86InductorQuantizer().set_global(
                xiq.get_default_x86_inductor_quantization_config(reduce_range=not cpu_has_vnni()))
            for n in ctx.cfg.keep_float:
                quantizer.set_module_name_qconfig(n, None)
            prepared = prepare_pt2e(graph, quantizer)
            calibrate_one_by_one(ctx, prepared, 0.8)
            converted = convert_pt2e(prepared)
            _drop_unused_tensors(converted)
            allow_exported_model_train_eval(converted)
            buf = io.BytesIO()
            torch.export.save(torch.export.export(converted, example), buf)
            data = buf.getvalue()
            emit(ctx.on_progress, "compile", 0.85, "compiling with TorchInductor (once per model)")
            compiled = InductorModel(converted)
            compiled(example[0])
    except Exception as e:  # noqa: BLE001 - fall back to FX, and say why
        q = static(ctx.evolve(mode=STATIC))
        q.notes.insert(0, f"PyTorch 2 export quantization failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160] if str(e) else ''}); torch.ao FX static INT8 was used.")
        return q
    notes = [f"PyTorch 2 export quantization (X86InductorQuantizer), compiled by TorchInductor: "
             f"{time.perf_counter() - t0:.0f} s including calibration; batch 1 graph"] + kept_note(ctx.cfg)
    return ctx.result(compiled, data, notes, pt2=data)
