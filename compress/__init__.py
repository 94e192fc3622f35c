"""Compression Lab engine: load, measure and compress image classifiers.

This package never imports streamlit, so the CLI, notebooks and tests use it as is.
"""
import os

# torch.profiler (used for CPU peak memory) logs GPU probing lines to stderr on machines
# without a GPU; keep only its errors that matter.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

from compress.errors import CompressError  # noqa: E402

__all__ = ["CompressError"]
