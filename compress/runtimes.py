"""Loaded models in the runtimes that run them, each behind ``nn.Module``'s interface
(float images in, float logits out), and the ONNX export they share.

These sit low in the engine: the quantize backends build them, and a run's saved file is
loaded back into them (compress/checkpoint.py) without importing any backend.
"""
from __future__ import annotations

import copy
import io
import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn

from compress.errors import QuantizeError
from compress.exclusive import one_at_a_time

# How the reports and pages name the runtimes; every runtime label (a quantize mode's,
# a profile's, an exported file's) starts with one of these.
PYTORCH = "PyTorch"
PYTORCH_EAGER = f"{PYTORCH} eager"
ONNX_RUNTIME = "ONNX Runtime"
EXECUTORCH = "ExecuTorch"
XNNPACK = "XNNPACK"


class CastInput(nn.Module):
    """Feeds float images to a half-precision model and returns float32 logits."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, x):
        return self.inner(x.to(self.dtype)).float()


def export_onnx(model: nn.Module, input_size, opset: int = 17) -> bytes:
    """The model as ONNX bytes with a dynamic batch axis (TorchScript-based exporter)."""
    buf = io.BytesIO()
    x = torch.zeros(1, *input_size)
    try:
        with warnings.catch_warnings(), one_at_a_time("ONNX export"):
            warnings.simplefilter("ignore")
            torch.onnx.export(copy.deepcopy(model).cpu().eval(), (x,), buf, dynamo=False,
                              input_names=["images"], output_names=["logits"], opset_version=opset,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:
        raise QuantizeError(f"ONNX export failed: {type(e).__name__}: {str(e)[:300]}") from None
    return buf.getvalue()


class OrtModel(nn.Module):
    """An ONNX Runtime session behind a module's interface: float tensor in, float logits out.

    Latency measured through it is ONNX Runtime's (the numpy conversion costs microseconds).
    """

    def __init__(self, onnx_bytes: bytes, threads: Optional[int] = None):
        super().__init__()
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # ONNX Runtime's worker threads spin for a while after each run by default, which
        # steals the cores from whatever runs next (PyTorch, timed in the same loop, ran
        # 2-10x slower beside a spinning session). Idle threads sleep instead.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.onnx_bytes = onnx_bytes
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x):
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


class InductorModel(nn.Module):
    """A PT2E-quantized graph compiled by TorchInductor with freezing, which lowers its
    quantize/dequantize patterns to oneDNN INT8 kernels (without freezing the graph runs
    reference ops in float). The graph has a fixed batch of 1, so a batch runs image by
    image, and it is compiled on the first call (tens of seconds; once per model)."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph_module = graph
        object.__setattr__(self, "_compiled", None)     # not a submodule: eval()/copies skip it

    def forward(self, x):
        import torch._inductor.config as inductor
        x = x.detach().cpu().float()
        if self._compiled is None:              # the first call compiles: process-wide dynamo/Inductor state
            with one_at_a_time("TorchInductor compile"), inductor.patch(freezing=True), torch.no_grad():
                object.__setattr__(self, "_compiled", torch.compile(self.graph_module))
                first = self._compiled(x[:1])
            return torch.cat([first] + [self._compiled(x[i:i + 1]) for i in range(1, len(x))]) if len(x) > 1 \
                else first
        with inductor.patch(freezing=True), torch.no_grad():
            return torch.cat([self._compiled(x[i:i + 1]) for i in range(len(x))])

    def __deepcopy__(self, memo):
        return InductorModel(copy.deepcopy(self.graph_module, memo))


class ExecuTorchModel(nn.Module):
    """An ExecuTorch program behind a module's interface, run by the ExecuTorch runtime
    with its XNNPACK kernels (the CPU backend phones use; it has x86 kernels too). The
    program has a fixed batch of 1, so a batch runs image by image."""

    def __init__(self, pte: bytes):
        super().__init__()
        from executorch.runtime import Runtime
        # the method reads the program's memory: both must live as long as it does (a
        # dropped Program or buffer crashed the runtime with a segfault)
        object.__setattr__(self, "_pte", bytes(pte))
        object.__setattr__(self, "_program", Runtime.get().load_program(self._pte))
        object.__setattr__(self, "method", self._program.load_method("forward"))

    def forward(self, x):
        x = x.detach().cpu().float()
        return torch.cat([self.method.execute([x[i:i + 1].contiguous()])[0] for i in range(len(x))])
