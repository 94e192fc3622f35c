"""Channel and weight pruning.

Modules, bottom to top (each imports only from those below; .importlinter's
``prune-layers`` contract checks it):

- ``criteria``: the registry of channel-importance criteria; each owns its data gathering.
- ``layers``: which layers pruning touches (output layer, default protection), and
  ``MAX_PRUNING_RATIO``.
- ``estimate``: params/MACs from channel counts, for sliders and the target search.
- ``batchnorm``: BatchNorm re-estimation after pruning.
- ``structured``: the torch-pruning driver (configs, reports, one-shot and iterative prunes,
  the ratio search, the slider's estimate).
- ``sensitivity``: prune one unit at a time and measure top-1.
- ``unstructured``: weights set to zero, shapes kept.

The names callers use are re-exported here. ``compress.prune.estimate`` is the *function*
(:func:`structured.estimate`), as before; the module of that name is reached with
``from compress.prune.estimate import ChannelCounter, counter_for``.
"""
from compress.errors import PruneError
from compress.prune.criteria import CRITERIA, NEEDS_DATA, Criterion
from compress.prune.layers import (MAX_PRUNING_RATIO, default_protected, output_layers, prunable_layers,
                                   projection_layers)
from compress.prune.batchnorm import reestimate_batchnorm, with_reestimated_batchnorm
from compress.prune.structured import (GroupReport, ImportanceReport, Recover, StructuredConfig,
                                       check_removes_something, importance_report, prune_iterative,
                                       prune_structured, search_ratio, validate,
                                       validate_structured)
from compress.prune.sensitivity import (SENSITIVITY_RATIOS, SensitivityRow, SensitivityTable, sensitivity,
                                        sensitivity_units)
from compress.prune.unstructured import (METHODS as UNSTRUCTURED_METHODS, SparsityReport, UnstructuredConfig,
                                         prune_unstructured, sparsity, validate_unstructured)
# last: the function shadows the submodule attribute that importing compress.prune.estimate set
from compress.prune.structured import estimate

__all__ = [
    "CRITERIA", "Criterion", "GroupReport", "ImportanceReport", "MAX_PRUNING_RATIO", "NEEDS_DATA", "PruneError",
    "Recover", "SENSITIVITY_RATIOS", "SensitivityRow", "SensitivityTable", "SparsityReport", "StructuredConfig",
    "UNSTRUCTURED_METHODS", "UnstructuredConfig", "check_removes_something", "default_protected", "estimate",
    "importance_report", "output_layers", "projection_layers", "prunable_layers", "prune_iterative",
    "prune_structured", "prune_unstructured", "reestimate_batchnorm", "search_ratio", "sensitivity",
    "sensitivity_units", "sparsity", "validate", "validate_structured", "validate_unstructured", "with_reestimated_batchnorm",
]
