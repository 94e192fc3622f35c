"""Where a session stands (Point) and what a run returns (Result, Variants)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from compress.errors import CompressError
from compress.recipe import STEP_SECTIONS, Recipe
from compress.report import point_label

# ------------------------------------------------------------------ where a session stands


@dataclass
class Point:
    """A point along a recipe: the recipe done so far, the model it produced (an
    ``nn.Module``, or a ``QuantizedModel`` once quantized) and the run that recorded it.
    The dashboard keeps one as the session's truth; :func:`run` can start from one."""
    recipe: Recipe
    model: Any
    run_id: Optional[int] = None
    label: str = ""

    @property
    def quantized(self) -> bool:
        return self.recipe.quantize is not None

    @property
    def steps(self) -> list[str]:
        """The sections this point has done, in order."""
        return [s for s in STEP_SECTIONS if getattr(self.recipe, s) is not None]

    @property
    def module(self) -> nn.Module:
        """The runnable module (a QuantizedModel's inner model)."""
        return self.model if isinstance(self.model, nn.Module) else self.model.model


class PipelineError(CompressError):
    """A run that cannot start from the point it was given."""


def done_sections(start: Optional[Point], recipe: Recipe) -> tuple[str, ...]:
    """The sections of ``recipe`` that ``start`` has already done. ``start``'s steps must be
    a prefix of the recipe's (same model, same settings up to where it stopped)."""
    if start is None or not start.steps:
        return ()
    if start.recipe.model != recipe.model:
        raise PipelineError("The starting model belongs to another original model; start from "
                            "the original instead.")
    if start.quantized and any(getattr(recipe, s) != getattr(start.recipe, s) for s in STEP_SECTIONS):
        raise PipelineError("The starting model is quantized, and a quantized model is final: "
                            "prune, distil or zero weights before quantizing.")
    done = []
    for s in STEP_SECTIONS:
        mine, theirs = getattr(recipe, s), getattr(start.recipe, s)
        if theirs is None:
            continue
        if mine != theirs or (s == "prune" and recipe.prune_steps != start.recipe.prune_steps):
            raise PipelineError(f"The starting model has a {s} step that this recipe does not "
                                "repeat; start from the original model (or an earlier run) instead.")
        done.append(s)
    last = STEP_SECTIONS.index(done[-1])
    for s in STEP_SECTIONS[:last]:          # a step the start skipped cannot come before its last one
        if getattr(start.recipe, s) is None and getattr(recipe, s) is not None:
            raise PipelineError(f"This recipe has a {s} step before the starting model's "
                                f"{done[-1]} step; start from the original model instead.")
    return tuple(done)


# ------------------------------------------------------------------ results


@dataclass
class Result:
    recipe: Recipe
    weights: str
    device: str
    data: Optional[dict]
    before: dict                       # Profile.to_json() of the original
    after: dict                        # Profile.to_json() of the final model, in its runtime
    steps: list[dict] = field(default_factory=list)   # {step, config, seconds, report}
    exports: dict[str, dict] = field(default_factory=dict)   # format -> Exported.to_json()
    export_errors: dict[str, str] = field(default_factory=dict)   # format -> why it could not be written
    artifacts: dict[str, str] = field(default_factory=dict)  # "model", formats, "model_card" -> file
    versions: dict[str, str] = field(default_factory=dict)
    run_id: Optional[int] = None
    seconds: float = 0.0
    start_run: Optional[int] = None    # the run whose model this one started from
    start_profile: Optional[dict] = None   # that model, measured in this run
    warnings: list[str] = field(default_factory=list)
    changed: Optional[list] = None     # images whose top-1 changed from the original (report.changed_images)
    model: Any = None                  # the final model (nn.Module or QuantizedModel); not JSON
    float_model: Any = None            # the last float model (before quantization)
    reports: dict[str, Any] = field(default_factory=dict)   # step -> the engine's report object
    loaded: Any = None                 # the original LoadedModel (spec, weights note)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "recipe": self.recipe.to_dict(), "model": self.recipe.model.name,
                "weights": self.weights, "device": self.device, "data": self.data, "before": self.before,
                "after": self.after, "start_run": self.start_run, "start_profile": self.start_profile,
                "steps": self.steps, "exports": self.exports, "export_errors": self.export_errors,
                "artifacts": self.artifacts,
                "versions": self.versions, "warnings": self.warnings, "seconds": round(self.seconds, 2),
                "changed": self.changed}

    @property
    def point(self) -> Point:
        """Where this run leaves a session: its recipe, model and run id."""
        return Point(self.recipe, self.model, self.run_id, point_label(self.recipe))


@dataclass
class Variants:
    """Several variants measured against one baseline in one run."""
    before: dict                       # the original, measured once
    reference: dict                    # the float model the variants start from (== before without steps)
    results: list                      # a Result per variant, or {"config", "error"} for one that failed
    data: Optional[dict] = None
    warnings: list[str] = field(default_factory=list)
    baselines: list = field(default_factory=list)   # a Result (not recorded) per reference, or {"config", "error"}


