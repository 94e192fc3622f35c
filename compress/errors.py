"""Errors a user can cause.

Every subclass carries a message that says, in plain words, what is wrong and what to
do. Pages show it with ``st.error``; the CLI prints it and exits non-zero.
"""


class CompressError(Exception):
    """Base class for every error a user can cause (bad file, bad path, bad option)."""


class WeightsUnavailable(CompressError):
    """Pretrained weights are neither given, cached nor downloadable."""


class CheckpointError(CompressError):
    """A checkpoint file is corrupt, untrusted, or does not fit the architecture."""


class ArchitectureMismatch(CheckpointError):
    """A state_dict does not fit the architecture or class count asked for."""


class UntrustedPickle(CheckpointError):
    """The file is a full pickled model: loading it executes code."""


class CacheError(CompressError):
    """The cache folder cannot be made or written (a read-only folder, a path under a file)."""


class DataError(CompressError):
    """A dataset path is missing, empty or malformed."""


class ImageError(CompressError):
    """An uploaded file is not a usable image."""


class DeviceError(CompressError):
    """The device asked for is not available."""


class UnknownModel(CompressError):
    """A model name is not in the zoo."""


class QuantizeError(CompressError):
    """A quantization request that cannot be carried out."""


class PruneError(CompressError):
    """A pruning request that cannot be carried out (bad ratio, layer name, model)."""
