"""Exports that run outside this Python session, each loaded back and checked.

:data:`FORMATS` is the one registry of export formats: the project's own checkpoint
(compress/checkpoint loads it back), TorchScript, ONNX (dynamic batch axis; the INT8 QDQ
file for ONNX Runtime models), ExecuTorch ``.pte`` with the XNNPACK delegate (phones), and
TensorRT (NVIDIA GPUs only). Each format registers its handler with :func:`register`;
:func:`export` looks it up, recipes validate against it, the CLI and the Compare page list it.

Every written file is loaded back in the runtime that will run it and compared with the
model it came from on real images: max |difference| of the logits and top-1 agreement.
"""
from __future__ import annotations

import copy

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from compress.checkpoint import load_checkpoint, save_artifact, to_torchscript
from compress.errors import CompressError, QuantizeError
from compress.runtimes import OrtModel, export_onnx
from compress.zoo import LoadedModel
from compress.exclusive import one_at_a_time


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


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its registry entry."""
    name: str
    description: str                  # one line: what the file is and who runs it
    suffix: str                       # the file name's ending
    runtime: str                      # what loads the file back to check it
    needs: str                        # what it takes (model, packages, hardware), in plain words
    handler: Callable[["ExportJob"], Exported]


FORMATS: dict[str, ExportFormat] = {}


def register(name: str, description: str, suffix: str, runtime: str, needs: str) -> Callable:
    """Register the decorated ``handler(job) -> Exported`` as export format ``name``."""
    def add(handler: Callable[["ExportJob"], Exported]) -> Callable:
        FORMATS[name] = ExportFormat(name, description, suffix, runtime, needs, handler)
        return handler
    return add


@dataclass
class ExportJob:
    """One export request, as every handler sees it."""
    fmt: ExportFormat
    model: Any                        # an nn.Module or a QuantizedModel
    module: nn.Module                 # the nn.Module behind it (on the CPU, in eval mode)
    path: Path
    input_size: tuple[int, int, int]
    batches: list                     # (images, labels) to compare the file with the model on
    loaded: Any = None                # the LoadedModel the model came from (its spec)
    meta: Optional[dict] = None

    @property
    def is_quant(self) -> bool:
        return not isinstance(self.model, nn.Module)

    @property
    def runtime(self) -> str:
        return getattr(self.model, "runtime", "PyTorch eager")

    @property
    def example(self) -> torch.Tensor:
        return torch.zeros(1, *self.input_size)

    def checked(self, reference: Callable, candidate: Callable, runtime: Optional[str] = None,
                note: str = "", device: str = "cpu") -> Exported:
        """The written file's entry, with ``candidate`` (the file, loaded back) compared
        with ``reference`` on the job's images."""
        out = Exported(self.fmt.name, str(self.path), self.path.stat().st_size, runtime or self.fmt.runtime,
                       note=note, device=device)
        out.max_abs_diff, out.agreement_top1, out.n = _compare(reference, candidate, self.batches)
        return out

    def refuse_program(self) -> None:
        """A torch.export (PT2E) program is compiled where it runs; no other format takes it."""
        if getattr(self.model, "pt2", None) is not None:
            raise ExportError(f"{self.runtime} is a torch.export program compiled by TorchInductor on the machine "
                              "that runs it; each run keeps its .pt2 file. For an INT8 ONNX file quantize with "
                              "ort-int8, for phones with et-int8.")


def export(model, fmt: str, path: Path, input_size: tuple[int, int, int], batches: list,
           loaded=None, meta: Optional[dict] = None) -> Exported:
    """Write ``model`` (an nn.Module or a QuantizedModel) in format ``fmt`` to ``path``,
    load it back and compare it with ``model`` on ``batches`` (a list of (images, labels))."""
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use {', '.join(FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _module_of(model).cpu().eval()
    return FORMATS[fmt].handler(ExportJob(FORMATS[fmt], model, module, path, input_size, batches, loaded, meta))


# ------------------------------------------------------------------ the formats, in the order listed

@register("checkpoint", "The project checkpoint: float weights with the architecture and classes; loads "
          "back with weights_only=True (pruned models too).", ".pt", "PyTorch (weights_only=True)",
          "a float model (before quantizing)")
def _checkpoint(job: ExportJob) -> Exported:
    module = job.module
    if job.is_quant:
        raise ExportError(f"The project checkpoint holds float weights; this model is {job.runtime}. "
                          "Export the float model before quantizing, or choose onnx/torchscript.")
    loaded = job.loaded
    save_artifact(LoadedModel(module, loaded.spec, loaded.weights_note, loaded.trained), job.path, meta=job.meta)
    back = load_checkpoint(str(job.path), like=loaded.spec.name).model.eval()
    return job.checked(module, back)


@register("torchscript", "TorchScript: the traced model, loaded by PyTorch (C++ or Python) without this "
          "code.", ".ts.pt", "TorchScript", "a PyTorch model (float, INT8 or half precision)")
def _torchscript(job: ExportJob) -> Exported:
    job.refuse_program()
    module = job.module
    if getattr(job.model, "onnx", None) is not None:
        raise ExportError(f"This model runs in {job.runtime}; its file is ONNX. Choose onnx.")
    try:
        script = to_torchscript(module, job.input_size)
        torch.jit.save(script, str(job.path))
    except Exception as e:  # noqa: BLE001 - any tracer failure becomes a plain message
        op = _op_name(e)
        raise ExportError(f"TorchScript cannot take this model{f' (operator {op})' if op else ''}: "
                          f"{str(e).splitlines()[0][:200]}") from None
    return job.checked(module, torch.jit.load(str(job.path)).eval())


@register("onnx", "ONNX with a dynamic batch axis, run by ONNX Runtime (the INT8 QDQ file for ONNX Runtime "
          "models).", ".onnx", "ONNX Runtime", "a float model, an ONNX Runtime one, or a torch.ao INT8 one "
          "whose operators ONNX has")
def _onnx(job: ExportJob) -> Exported:
    import onnx
    job.refuse_program()
    module = job.module
    onnx_bytes = getattr(job.model, "onnx", None)
    if onnx_bytes is None:
        if job.is_quant:
            try:
                onnx_bytes = export_onnx(module, job.input_size)
            except QuantizeError as e:
                op = _op_name(e)
                raise ExportError(f"ONNX cannot take this {job.runtime} model"
                                  f"{f': operator {op} has no ONNX form' if op else ''}. Use "
                                  "quantize mode ort-int8 for an INT8 ONNX file.") from None
        else:
            onnx_bytes = export_onnx(module, job.input_size)
    job.path.write_bytes(onnx_bytes)
    onnx.checker.check_model(str(job.path))
    return job.checked(module, OrtModel(job.path.read_bytes()),
                       note="dynamic batch axis; input 'images', output 'logits'")


@register("executorch", "ExecuTorch .pte with the XNNPACK delegate: the file Android and iOS apps embed.",
          ".pte", "ExecuTorch (XNNPACK)", "a float model or an et-int8 one; the executorch package")
def _executorch(job: ExportJob) -> Exported:
    job.refuse_program()
    module = job.module
    note = "batch 1 (ExecuTorch programs have a fixed input shape)"
    if getattr(job.model, "pte", None) is not None:
        # an ExecuTorch mode's own program (et-int8: the PT2E-calibrated graph lowered to XNNPACK)
        job.path.write_bytes(job.model.pte)
        return job.checked(module, _executorch_runner(job.path), runtime=job.runtime, note=note)
    if job.is_quant:
        raise ExportError(f"ExecuTorch export here takes a float model or an et-int8 one; this one is "
                          f"{job.runtime} (torch.ao / ONNX Runtime INT8 do not load in ExecuTorch). Quantize "
                          "with et-int8 for an INT8 .pte, or export the pruned float model.")
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ExportError("ExecuTorch is not installed: pip install executorch==1.5.1 "
                          "(it is in requirements.txt).") from None
    try:
        with warnings.catch_warnings(), one_at_a_time("ExecuTorch export"):
            warnings.simplefilter("ignore")
            # the standard layout: ExecuTorch's ChannelsLastTaggedReshapePass rejects channels-last weights
            module = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
            program = torch.export.export(module, (job.example,))
            pte = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as e:  # noqa: BLE001
        op = _op_name(e)
        raise ExportError(f"ExecuTorch cannot take this model{f' (operator {op})' if op else ''}: "
                          f"{str(e).splitlines()[0][:200]}") from None
    job.path.write_bytes(pte.buffer)
    return job.checked(module, _executorch_runner(job.path), note=note)


def _executorch_runner(path: Path) -> Callable:
    """A callable that runs the .pte one image at a time in the ExecuTorch runtime."""
    from executorch.runtime import Runtime
    program = Runtime.get().load_program(str(path))       # kept alive by the closure below
    method = program.load_method("forward")

    def run(x: torch.Tensor) -> torch.Tensor:
        assert program is not None
        return torch.cat([method.execute([x[i:i + 1].contiguous()])[0] for i in range(len(x))])
    return run


@register("tensorrt", "TensorRT FP16 engine (Torch-TensorRT, TorchScript IR) for NVIDIA GPUs.", ".trt.ts",
          "TensorRT FP16", "a float model, an NVIDIA GPU with CUDA and torch-tensorrt")
def _tensorrt(job: ExportJob) -> Exported:
    job.refuse_program()
    module, path, example, batches, is_quant, runtime = (job.module, job.path, job.example, job.batches,
                                                          job.is_quant, job.runtime)
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
