"""Compression Lab engine: load, measure and compress image classifiers.

This package never imports streamlit, so the CLI, notebooks and tests use it as is.
"""
from compress.errors import CompressError

__all__ = ["CompressError"]
