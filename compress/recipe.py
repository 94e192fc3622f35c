"""Recipe: the one description of a compression job, as plain dataclasses with a JSON
round-trip. Steps run in this order: prune (channels) → recover (fine-tune / distil) →
unstructured pruning → quantize → export.

A recipe file is the JSON of :meth:`Recipe.to_json`; reading one checks every field and
names the first wrong one (``prune.ratio: expected a number, got "half"``).
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch

from compress.distill import RecoverConfig, validate_recover
from compress.errors import CompressError
from compress.export import FORMATS as EXPORT_FORMATS
from compress.limits import BadNumber, check, check_optional
from compress.prune import CRITERIA, StructuredConfig, UnstructuredConfig, validate_structured, validate_unstructured
from compress.quantize import MODES, QuantConfig, validate_config
from compress.zoo import ZOO, build_architecture

STEP_SECTIONS = ("prune", "recover", "unstructured", "quantize")     # the order steps run in


class RecipeError(CompressError):
    """A recipe file or object that is malformed; the message names the field."""


@dataclass(frozen=True)
class ModelRef:
    """Which model: a zoo entry (optionally with a weights file), or a checkpoint file."""
    name: str = "resnet18_cifar10"
    weights: Optional[str] = None            # torchvision weights file for a zoo entry
    checkpoint: Optional[str] = None         # a state_dict / artifact / TorchScript file
    arch: Optional[str] = None               # with checkpoint: the architecture
    num_classes: Optional[int] = None
    trust_pickle: bool = False               # the user's consent to run a pickled model's code


@dataclass(frozen=True)
class DataRef:
    """Images for accuracy (evaluation), for calibration/data criteria (scoring, kept
    apart) and for training (recovery, QAT)."""
    path: Optional[str] = None               # labelled images: evaluation and scoring
    limit: Optional[int] = 500               # evaluate on at most this many (seeded subset); null = all
    seed: int = 0
    train_path: Optional[str] = None         # training photos (labelled or not)
    train_limit: Optional[int] = None


@dataclass(frozen=True)
class MeasureRef:
    """How latency is measured (batch, device, threads, runs after warm-up)."""
    device: str = "auto"
    batch: int = 1
    runs: int = 30
    warmup: int = 5
    threads: Optional[int] = None


@dataclass(frozen=True)
class ExportRef:
    formats: tuple[str, ...] = ()
    out_dir: Optional[str] = None            # default: a folder per run under the history folder


@dataclass(frozen=True)
class Recipe:
    model: ModelRef = field(default_factory=ModelRef)
    data: DataRef = field(default_factory=DataRef)
    measure: MeasureRef = field(default_factory=MeasureRef)
    prune: Optional[StructuredConfig] = None
    prune_steps: int = 1
    recover: Optional[RecoverConfig] = None
    unstructured: Optional[UnstructuredConfig] = None
    quantize: Optional[QuantConfig] = None
    export: ExportRef = field(default_factory=ExportRef)
    name: str = ""                           # a label for history and charts

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Any, check: bool = True) -> "Recipe":
        """Read a recipe; ``check=False`` skips :func:`validate` (for records of runs whose
        data paths were not part of the record)."""
        recipe = _build(cls, d, "")
        if check:
            validate(recipe)
        return recipe

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecipeError(f"The recipe is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.")
        except ValueError as e:                # e.g. a number of more than 4,300 digits
            raise RecipeError(f"The recipe cannot be read: {str(e).split(';')[0]}.") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        p = Path(path)
        if p.is_dir():
            raise RecipeError(f"{p} is a folder; give a recipe file (JSON).")
        if not p.is_file():
            raise RecipeError(f"Recipe file {p} does not exist.")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RecipeError(f"{p.name} is not a UTF-8 text file; a recipe is a JSON text file.") from None
        except OSError as e:
            raise RecipeError(f"Recipe file {p} cannot be read: {e.strerror or e}.") from None
        return cls.from_json(text)

    def with_step(self, section: str, config) -> "Recipe":
        """This recipe with ``section`` set to ``config`` and every later step dropped (they
        were made from what this step changes, so they would have to be redone)."""
        if section not in STEP_SECTIONS:
            raise RecipeError(f"{section}: not a step (steps: {', '.join(STEP_SECTIONS)}).")
        later = STEP_SECTIONS[STEP_SECTIONS.index(section) + 1:]
        return replace(self, **{section: config}, **{s: None for s in later})

    def describe(self) -> str:
        """One line a person can read: the model, then what the recipe does, in order."""
        model = self.model.name or Path(self.model.checkpoint or "model").name
        return f"{model}: {self.describe_steps()}"

    def describe_steps(self) -> str:
        """What the recipe does, in order ("unchanged" when it has no step)."""
        parts = []
        if self.prune:
            c = self.prune
            parts.append(f"prune {c.target_reduction:.0%} {c.target}" if c.target != "ratio"
                         else f"prune ratio {c.ratio:g} ({c.criterion})")
            if self.prune_steps > 1:
                parts[-1] += f" in {self.prune_steps} steps"
        if self.recover:
            r = self.recover
            parts.append(f"{r.method} " + (f"{r.minutes:g} min" if r.minutes is not None else f"{r.epochs} ep"))
        if self.unstructured:
            parts.append(f"zero {self.unstructured.amount:.0%} weights")
        if self.quantize:
            parts.append(self.quantize.mode)
        return " → ".join(parts) if parts else "unchanged"


def validate(recipe: Recipe) -> None:
    """Checks that need no model: the engine validates configs against the model later."""
    for f in recipe.export.formats:
        if f not in EXPORT_FORMATS:
            raise RecipeError(f"export.formats: unknown format {f!r}; use {', '.join(EXPORT_FORMATS)}.")
    _check_numbers(recipe)
    if recipe.recover is not None:
        if recipe.prune is None:
            raise RecipeError("recover: recovery trains a pruned model; add a prune step.")
        try:
            validate_recover(recipe.recover)
        except CompressError as e:
            raise RecipeError(f"recover: {e}") from None
        if not recipe.data.train_path:
            raise RecipeError("data.train_path: recovery trains on photos; give a folder or a CIFAR-10 tarball.")
    if recipe.unstructured is not None:
        try:
            validate_unstructured(recipe.unstructured)
        except CompressError as e:
            raise RecipeError(f"unstructured: {e}") from None
    q = recipe.quantize
    if q is not None:
        try:
            validate_config(q)
        except CompressError as e:
            raise RecipeError(f"quantize: {e}") from None
        if MODES[q.mode].calibrates and not recipe.data.path:
            raise RecipeError(f"data.path: quantize.mode {q.mode} calibrates on real images; give them.")
        if MODES[q.mode].trains and not recipe.data.train_path:
            raise RecipeError(f"data.train_path: quantize.mode {q.mode} fine-tunes on labelled photos; give them.")
    if recipe.prune is not None:
        if recipe.prune.criterion not in CRITERIA:
            raise RecipeError(f"prune.criterion: unknown {recipe.prune.criterion!r}; use {', '.join(CRITERIA)}.")
        try:
            validate_structured(recipe.prune)
        except CompressError as e:
            raise RecipeError(f"prune: {e}") from None


def _check_numbers(recipe: Recipe) -> None:
    """Every number against its range (compress/limits.py), named by its place in the file."""
    m, d, r = recipe.measure, recipe.data, recipe
    checks = [("batch", m.batch, "measure.batch"), ("runs", m.runs, "measure.runs"),
              ("warmup", m.warmup, "measure.warmup"), ("seed", d.seed, "data.seed"),
              ("prune_steps", r.prune_steps, "prune_steps")]
    optional = [("threads", m.threads, "measure.threads"), ("limit", d.limit, "data.limit"),
                ("train_limit", d.train_limit, "data.train_limit"),
                ("num_classes", recipe.model.num_classes, "model.num_classes")]
    if r.prune is not None:
        p = r.prune
        # a "ratio" target needs the ratio; a macs/params target searches it (null) from the saving
        (checks if p.target == "ratio" else optional).append(("prune_ratio", p.ratio, "prune.ratio"))
        if p.target != "ratio":
            checks.append(("prune_ratio", p.target_reduction, "prune.target_reduction"))
        optional.append(("round_to", p.round_to, "prune.round_to"))
        checks += [("bn_images", p.bn_images, "prune.bn_images"), ("seed", p.seed, "prune.seed")]
        for i, (name, ratio) in enumerate(r.prune.layer_ratios):
            checks.append(("prune_ratio", ratio, f"prune.layer_ratios[{i}] ({name})"))
    if r.quantize is not None:
        checks += [("calibration", r.quantize.calibration, "quantize.calibration"),
                   ("keep_worst", r.quantize.keep_worst, "quantize.keep_worst"),
                   ("qat_epochs", r.quantize.qat_epochs, "quantize.qat_epochs"),
                   ("lr", r.quantize.qat_lr, "quantize.qat_lr")]
    if r.unstructured is not None:
        checks += [("unstructured_amount", r.unstructured.amount, "unstructured.amount"),
                   ("seed", r.unstructured.seed, "unstructured.seed")]
    if r.recover is not None:
        checks.append(("seed", r.recover.seed, "recover.seed"))
    try:
        for name, value, where in checks:
            check(name, value, where)
        for name, value, where in optional:
            check_optional(name, value, where)
    except BadNumber as e:
        raise RecipeError(str(e)) from None
    if not (m.device in ("auto", "cpu", "cuda") or m.device.startswith("cuda:")):
        raise RecipeError(f"measure.device: {m.device!r} is not a device; use auto, cpu or cuda.")


# ------------------------------------------------------------------ typed JSON reading

def _build(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise RecipeError(f"{where.rstrip('.') or 'recipe'}: expected an object, got {type(d).__name__}.")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for k in d:
        if k not in known:
            raise RecipeError(f"{where}{k}: unknown field (known: {', '.join(known)}).")
    kwargs = {}
    for name, f in known.items():
        if name in d:
            kwargs[name] = _value(hints[name], d[name], f"{where}{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise RecipeError(f"{where}{name}: missing.")
    return cls(**kwargs)


def _type_name(tp) -> str:
    return {str: "text", int: "a whole number", float: "a number", bool: "true/false"}.get(tp, "a value")


def _short(v) -> str:
    """A JSON value for a message, cut to a readable length (a number may have 400 digits)."""
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):            # not JSON, or an int past Python's 4,300-digit limit
        return f"a {type(v).__name__}"
    return text if len(text) <= 40 else text[:37] + "…"


def _value(tp, v, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], v, where)
    if is_dataclass(tp):
        return _build(tp, v, where + ".")
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {_short(v)}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise RecipeError(f"{where}: expected a list of {len(args)} items "
                              f"({', '.join(_type_name(a) for a in args)}), got {_short(v)}.")
        return tuple(_value(a, x, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if tp is bool:
        if not isinstance(v, bool):
            raise RecipeError(f"{where}: expected true or false, got {_short(v)}.")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise RecipeError(f"{where}: expected a whole number, got {_short(v)}.")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {_short(v)}.")
        try:
            return float(v)
        except OverflowError:                  # a whole number too long for a float
            raise RecipeError(f"{where}: {_short(v)} is far too large.") from None
    if tp is str:
        if not isinstance(v, str):
            raise RecipeError(f"{where}: expected text, got {_short(v)}.")
        return v
    return v


# ------------------------------------------------------------------ presets for non-engineers

PRESET_RESULTS = Path(__file__).resolve().parent.parent / "assets" / "preset_results.json"


def _measured(model: str, name: str, recovered: bool) -> str:
    """The sentence a preset's description gives about its own measured result, from
    assets/preset_results.json (written by bench/preset_bench.py; docs/presets.md)."""
    try:
        results = json.loads(PRESET_RESULTS.read_text())
    except (OSError, ValueError):
        results = {}
    r = results.get(model, {}).get(f"{name}|{'distilled' if recovered else 'bn'}")
    if not r:
        return (f" Not measured on {model} yet: bench/preset_bench.py measures a preset on a model "
                "(docs/presets.md).")
    speed = f", ×{r['speed']:.1f} speed (timed in turn, 95% ×{r['speed_ci'][0]:.1f}–×{r['speed_ci'][1]:.1f})" \
        if r.get("speed") and not r.get("noisy") else ""
    return (f" Measured on {model} ({r['n']:,} {r['data']} images, docs/presets.md): {r['top1_before']:.2f}% → "
            f"{r['top1_after']:.2f}% top-1 ({r['top1_after'] - r['top1_before']:+.2f} points), "
            f"{r['smaller']:.1f}× smaller{speed}.")


def _depthwise(model: str) -> bool:
    """Whether a zoo model (by name) is built from depthwise convs (MobileNet, EfficientNet)."""
    spec = ZOO.get(model)
    if spec is None:
        return False
    return any(isinstance(mod, torch.nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels
               for mod in build_architecture(spec.arch, spec.num_classes).modules())


def presets(model: str = "resnet18_cifar10", data: Optional[DataRef] = None) -> dict[str, tuple[Recipe, str]]:
    """Named recipes for people who do not want to choose settings, each with a one-line
    reason and the result it measured on this model (``_measured``). ``data`` supplies the
    evaluation/calibration images; with ``data.train_path`` (training photos) the presets
    that prune also distil for one epoch, on up to 10,000 of them. Every pruning preset
    re-estimates BatchNorm statistics (StructuredConfig's default)."""
    data = data or DataRef()
    m = ModelRef(model)
    train = bool(data.train_path)
    # depthwise networks lose far more per channel (docs/pruning.md §3): a tenth, not a quarter
    ratio, share = (0.1, "A tenth") if _depthwise(model) else (0.25, "A quarter")
    recover = RecoverConfig(method="distill", epochs=1) if train else None   # the rest: the recovery recipe
    pdata = replace(data, train_limit=data.train_limit or 10_000) if train else data
    how = (" BatchNorm statistics are re-estimated after pruning, then one epoch of distillation from the "
           "original on your training photos wins back more." if train else
           " BatchNorm statistics are re-estimated after pruning (give training photos in the recipe, or "
           "use Distill, to win back more).")
    return {
        "Phone (ARM CPU)": (
            Recipe(model=m, data=pdata, prune=StructuredConfig(ratio=ratio, round_to=8), recover=recover,
                   export=ExportRef(formats=("executorch", "onnx")), name="Phone (ARM CPU)"),
            f"{share} of the channels out (in multiples of 8, which phone kernels like), exported for "
            "ExecuTorch with XNNPACK, the runtime Android and iOS apps embed." + how
            + _measured(model, "Phone (ARM CPU)", train)),
        "Edge / server CPU": (
            Recipe(model=m, data=pdata, prune=StructuredConfig(ratio=ratio), recover=recover,
                   quantize=QuantConfig(mode="ort-int8"), export=ExportRef(formats=("onnx",)),
                   name="Edge / server CPU"),
            f"{share} of the channels out, then 8-bit integers in ONNX Runtime: the fastest path measured "
            "on x86 CPUs." + how + _measured(model, "Edge / server CPU", train)),
        "Keep accuracy": (
            Recipe(model=m, data=data, quantize=QuantConfig(mode="ort-int8", keep_worst=2),
                   export=ExportRef(formats=("onnx",)), name="Keep accuracy"),
            "No pruning; 8-bit integers except the two layers 8 bits hurt most, in ONNX Runtime."
            + _measured(model, "Keep accuracy", False)),
    }
