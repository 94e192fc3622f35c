"""Quantization behind one interface: ``quantize(model, QuantConfig, ...) -> QuantizedModel``.

Every mode returns a model that takes the same float images and returns float logits, so
the same latency and accuracy code measures all of them, each in the runtime that
executes it. One module per backend, each registering its modes (:data:`MODES`) next to
its code:

* ``fx``          ``static`` (torch.ao FX post-training INT8) and ``dynamic`` (Linear weights only)
* ``pt2e``        ``pt2e``: PyTorch 2 export quantization compiled by TorchInductor (x86)
* ``ort``         ``ort-fp32`` / ``ort-int8``: ONNX Runtime, the FP32 baseline and static QDQ INT8
* ``executorch``  ``et-fp32`` / ``et-int8``: ExecuTorch XNNPACK programs, the phone runtime
* ``qat``         ``qat``: quantization-aware training, then torch.ao INT8
* ``half``        ``fp16`` (CUDA) / ``bf16`` (CUDA or the CPU)

and beside them: ``base`` (config, result, registry, the handlers' context), ``keepfloat``
(keep-K-in-float ranking), ``sqnr`` (per-layer error) and ``api`` (:func:`quantize`,
:func:`profile_quantized`).

The backends verified to work on the pinned torch 2.14.1 are the ones used here; torchao's
PT2E X86InductorQuantizer failed on resnet18 (see docs/quantization.md).
"""
from compress.errors import QuantizeError
from compress.quantize.base import (BACKENDS, KEEP_RANKS, MODES, OBSERVERS, QuantConfig, QuantContext,
                                    QuantizedModel, QuantMode, calibration_images, caveats, closeness,
                                    cpu_has_vnni, gzip_len, logits, reference_modes, register, torch_bytes,
                                    validate, validate_config)
# each backend registers its modes when imported; the order here does not matter (``order``)
from compress.quantize import executorch, fx, half, ort, pt2e, qat  # noqa: F401
from compress.quantize.fx import standard_convs, torch_int8_caveat
from compress.quantize.ort import OrtVariant, onnx_node_module, ort_int8_variants
from compress.quantize.sqnr import LayerError, layer_sqnr
from compress.quantize.api import profile_quantized, quantize
from compress.runtimes import ExecuTorchModel, InductorModel, OrtModel, export_onnx

__all__ = ["BACKENDS", "KEEP_RANKS", "MODES", "OBSERVERS", "ExecuTorchModel", "InductorModel",
           "LayerError", "OrtModel", "OrtVariant", "QuantConfig", "QuantContext", "QuantMode", "QuantizeError",
           "QuantizedModel", "calibration_images", "caveats", "closeness", "cpu_has_vnni", "export_onnx",
           "gzip_len", "layer_sqnr", "logits", "onnx_node_module", "ort_int8_variants", "profile_quantized",
           "quantize", "reference_modes", "register", "standard_convs", "torch_bytes", "torch_int8_caveat",
           "validate", "validate_config"]
