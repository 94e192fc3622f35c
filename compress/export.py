"""Exports that run outside this Python session, each loaded back and checked.

Formats: the project's own checkpoint (the zoo loads it back), TorchScript, ONNX (dynamic
batch axis; the INT8 QDQ file for ONNX Runtime models), ExecuTorch ``.pte`` with the
XNNPACK delegate (phones), and TensorRT (NVIDIA GPUs only).

Every written file is loaded back in the runtime that will run it and compared with the
model it came from on real images: max |difference| of the logits and top-1 agreement.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from compress.errors import CompressError

SUFFIX = {"checkpoint": ".pt", "torchscript": ".ts.pt", "onnx": ".onnx", "executorch": ".pte",
          "tensorrt": ".trt.ts"}


class ExportError(CompressError):
    """A format cannot take this model (the message names the operator or the reason)."""


@dataclass
class Exported:
    format: str
    path: str
    bytes: int
    runtime: str
    max_abs_diff: Optional[float] = None
    agreement_top1: Optional[float] = None      # percent of images with the same top-1
    n: int = 0
    note: str = ""
    device: str = "cpu"                         # where the file was loaded back and checked

    def to_json(self) -> dict:
        return asdict(self)


def _op_name(err: Exception) -> str:
    """The operator named in an exporter's error, when it names one."""
    text = str(err)
    m = re.search(r"(quantized::\w+|aten::\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?|onnx::\w+)", text)
    return m.group(1) if m else ""


def _compare(reference: Callable, candidate: Callable, batches: Iterable) -> tuple[float, float, int]:
    """(max abs diff, top-1 agreement %, n) of two callables' logits on the same images."""
    diff, same, n = 0.0, 0, 0
    with torch.no_grad():
        for x, _ in batches:
            a, b = reference(x).float(), candidate(x).float()
            diff = max(diff, float((a - b).abs().max()))
            same += int((a.argmax(1) == b.argmax(1)).sum())
            n += len(x)
    return diff, 100.0 * same / max(n, 1), n


def _module_of(model) -> nn.Module:
    """The nn.Module behind a model or a QuantizedModel."""
    return getattr(model, "model", model) if not isinstance(model, nn.Module) else model


def export(model, fmt: str, path: Path, input_size: tuple[int, int, int], batches: list,
           loaded=None, meta: Optional[dict] = None) -> Exported:
    """Write ``model`` (an nn.Module or a QuantizedModel) in format ``fmt`` to ``path``,
    load it back and compare it with ``model`` on ``batches`` (a list of (images, labels))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    is_quant = not isinstance(model, nn.Module)
    runtime = getattr(model, "runtime", "PyTorch eager")
    module = _module_of(model).cpu().eval()
    onnx_bytes = getattr(model, "onnx", None)
    example = torch.zeros(1, *input_size)

    if getattr(model, "pt2", None) is not None and fmt != "checkpoint":
        raise ExportError(f"{runtime} is a torch.export program compiled by TorchInductor on the machine that "
                          "runs it; each run keeps its .pt2 file. For an INT8 ONNX file quantize with "
                          "ort-int8, for phones with et-int8.")

    if fmt == "checkpoint":
        if is_quant:
            raise ExportError(f"The project checkpoint holds float weights; this model is {runtime}. "
                              "Export the float model before quantizing, or choose onnx/torchscript.")
        from compress.zoo import LoadedModel, load_checkpoint, save_artifact
        save_artifact(LoadedModel(module, loaded.spec, loaded.weights_note, loaded.trained), path, meta=meta)
        back = load_checkpoint(str(path), like=loaded.spec.name).model.eval()
        out = Exported(fmt, str(path), path.stat().st_size, "PyTorch (weights_only=True)")
        out.max_abs_diff, out.agreement_top1, out.n = _compare(module, back, batches)
        return out

    if fmt == "torchscript":
        if onnx_bytes is not None:
            raise ExportError(f"This model runs in {runtime}; its file is ONNX. Choose onnx.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(path))
        except Exception as e:  # noqa: BLE001 - any tracer failure becomes a plain message
            op = _op_name(e)
            raise ExportError(f"TorchScript cannot take this model{f' (operator {op})' if op else ''}: "
                              f"{str(e).splitlines()[0][:200]}") from None
        back = torch.jit.load(str(path)).eval()
        out = Exported(fmt, str(path), path.stat().st_size, "TorchScript")
        out.max_abs_diff, out.agreement_top1, out.n = _compare(module, back, batches)
        return out

    if fmt == "onnx":
        from compress.quantize import OrtModel, QuantizeError, export_onnx
        if onnx_bytes is None:
            if is_quant:
                try:
                    onnx_bytes = export_onnx(module, input_size)
                except QuantizeError as e:
                    op = _op_name(e)
                    raise ExportError(f"ONNX cannot take this {runtime} model"
                                      f"{f': operator {op} has no ONNX form' if op else ''}. Use "
                                      "quantize mode ort-int8 for an INT8 ONNX file.") from None
            else:
                onnx_bytes = export_onnx(module, input_size)
        path.write_bytes(onnx_bytes)
        import onnx
        onnx.checker.check_model(str(path))
        back = OrtModel(path.read_bytes())
        out = Exported(fmt, str(path), path.stat().st_size, "ONNX Runtime",
                       note="dynamic batch axis; input 'images', output 'logits'")
        out.max_abs_diff, out.agreement_top1, out.n = _compare(module, back, batches)
        return out

    if fmt == "executorch" and getattr(model, "pte", None) is not None:
        # an ExecuTorch mode's own program (et-int8: the PT2E-calibrated graph lowered to XNNPACK)
        path.write_bytes(model.pte)
        run = _executorch_runner(path)
        out = Exported(fmt, str(path), path.stat().st_size, runtime,
                       note="batch 1 (ExecuTorch programs have a fixed input shape)")
        out.max_abs_diff, out.agreement_top1, out.n = _compare(module, run, batches)
        return out

    if fmt == "executorch":
        if is_quant:
            raise ExportError(f"ExecuTorch export here takes a float model or an et-int8 one; this one is "
                              f"{runtime} (torch.ao / ONNX Runtime INT8 do not load in ExecuTorch). Quantize "
                              "with et-int8 for an INT8 .pte, or export the pruned float model.")
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
        except ImportError:
            raise ExportError("ExecuTorch is not installed: pip install executorch==1.5.1 "
                              "(it is in requirements.txt).") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(module, (example,))
                pte = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        except Exception as e:  # noqa: BLE001
            op = _op_name(e)
            raise ExportError(f"ExecuTorch cannot take this model{f' (operator {op})' if op else ''}: "
                              f"{str(e).splitlines()[0][:200]}") from None
        path.write_bytes(pte.buffer)
        run = _executorch_runner(path)
        out = Exported(fmt, str(path), path.stat().st_size, "ExecuTorch (XNNPACK)",
                       note="batch 1 (ExecuTorch programs have a fixed input shape)")
        out.max_abs_diff, out.agreement_top1, out.n = _compare(module, run, batches)
        return out

    if fmt == "tensorrt":
        return _tensorrt(module, path, example, batches, is_quant, runtime)

    raise ExportError(f"Unknown export format {fmt!r}: use {', '.join(SUFFIX)}.")


def _executorch_runner(path: Path) -> Callable:
    """A callable that runs the .pte one image at a time in the ExecuTorch runtime."""
    from executorch.runtime import Runtime
    program = Runtime.get().load_program(str(path))       # kept alive by the closure below
    method = program.load_method("forward")

    def run(x: torch.Tensor) -> torch.Tensor:
        assert program is not None
        return torch.cat([method.execute([x[i:i + 1].contiguous()])[0] for i in range(len(x))])
    return run


def _tensorrt(module, path, example, batches, is_quant, runtime) -> Exported:
    if not torch.cuda.is_available():
        raise ExportError("TensorRT needs an NVIDIA GPU with CUDA; this machine has none. Export "
                          "ONNX here and build the engine with trtexec on the GPU machine.")
    if is_quant:
        raise ExportError(f"TensorRT builds its own FP16/INT8 engine from a float model; this one is "
                          f"{runtime}. Export the float model.")
    try:
        import torch_tensorrt
    except ImportError:
        raise ExportError("TensorRT export needs torch-tensorrt built for this torch "
                          f"({torch.__version__}): pip install torch-tensorrt.") from None
    dev = torch.device("cuda")
    m = module.to(dev).eval()
    trt = torch_tensorrt.compile(m, ir="ts", inputs=[torch_tensorrt.Input(example.shape)],
                                 enabled_precisions={torch.float16})
    torch.jit.save(trt, str(path))
    back = torch.jit.load(str(path)).to(dev)
    out = Exported("tensorrt", str(path), Path(path).stat().st_size, "TensorRT FP16", note="batch 1",
                   device=str(dev))
    out.max_abs_diff, out.agreement_top1, out.n = _compare(
        lambda x: m(x.to(dev)).cpu(), lambda x: torch.cat([back(x[i:i + 1].to(dev)).cpu() for i in range(len(x))]),
        batches)
    module.cpu()
    return out
