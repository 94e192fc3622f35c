"""A model's static figures (counted, not timed): parameters, bytes, MACs and its layers,
as the Model and Prune pages show them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from compress.measure import LayerRow, count_macs, count_params, layer_table, serialized_bytes, serialized_size


@dataclass(frozen=True)
class StaticFigures:
    params: int
    nonzero: int
    size_bytes: int                      # torch.save of the state_dict
    macs: Optional[int]                  # None for TorchScript (thop cannot walk it)
    layers: Optional[list[LayerRow]]     # None for TorchScript


def static_figures(model, input_size) -> StaticFigures:
    """Counts of ``model`` at ``input_size``: parameters, serialized bytes, MACs and the
    per-layer table (whose MACs add up to the total)."""
    params, nonzero = count_params(model)
    size = len(serialized_bytes(model))
    if isinstance(model, torch.jit.ScriptModule):
        return StaticFigures(params, nonzero, size, None, None)
    rows = layer_table(model, input_size)
    return StaticFigures(params, nonzero, size, sum(r.macs for r in rows), rows)


def gzip_bytes(model) -> int:
    """The serialized bytes of ``model`` gzip-compressed (level 6)."""
    return serialized_size(model)[1]


def static_metrics(f: StaticFigures, input_size, gzip: Optional[int] = None) -> list[dict]:
    """The Model page's five headline figures as metrics (label, value, help); the gzip
    figure reads "…" until ``gzip`` is given (compressing tens of MB takes seconds)."""
    return [
        dict(label="Parameters", value=f"{f.params / 1e6:.2f} M", help=None),
        dict(label="Nonzero parameters", value=f"{f.nonzero / 1e6:.2f} M", help=None),
        dict(label="Size (torch.save)", value=f"{f.size_bytes / 1e6:.2f} MB",
             help="Real serialized bytes of the state_dict."),
        dict(label="Size (gzip)", value="…" if gzip is None else f"{gzip / 1e6:.2f} MB",
             help="Being compressed…" if gzip is None
             else "The same bytes gzip-compressed (level 6): what a download costs."),
        dict(label="MACs / image", value="n/a" if f.macs is None else f"{f.macs / 1e9:.3f} G",
             help=f"Multiply-accumulates at {input_size[1]}×{input_size[2]}, counted by thop."),
    ]


def layer_rows(rows: list[LayerRow]) -> list[dict]:
    """The per-layer table: name, type, channels, kernel, parameters, MACs."""
    return [asdict(r) for r in rows]


def counts(model, input_size) -> tuple[int, Optional[int]]:
    """(parameters, MACs at ``input_size``) of ``model``: what a pruning estimate is a
    fraction of."""
    return count_params(model)[0], count_macs(model, input_size)


def channel_tables(original, pruned, input_size) -> tuple[list[LayerRow], list[LayerRow]]:
    """The per-layer tables of a model before and after pruning (channels per layer)."""
    return layer_table(original, input_size), layer_table(pruned, input_size)
