"""The one pipeline: load, measure, prune → recover → zero weights → quantize → export,
measure again; a Result, recorded in the history with the model it produced.

Every run goes through here: the CLI (``python -m compress run``, flags or a recipe file),
every page of the dashboard, the presets and background jobs. This module is the only
writer of the history.

Two entry points:

- :func:`run` runs one recipe. ``start`` (a :class:`Point`: the recipe done so far, the
  model it produced and its run id) skips the steps already done, so "start from run N's
  model" re-does nothing; :func:`point_of_run` turns a history row back into a Point.
- :func:`run_variants` measures several quantize variants of one recipe against one
  baseline, in one run (the Quantize page's table); each variant is a run of its own.

A history that cannot be written never costs the result: the run goes on, the Result
carries a warning naming where the history was meant to go, and the model is returned.
"""
from compress.pipeline.points import PipelineError, Point, Result, Variants, done_sections  # noqa: F401
from compress.pipeline.runner import run, run_variants  # noqa: F401
from compress.pipeline.steps import load, load_ref, open_sets  # noqa: F401
from compress.pipeline.store import float_origin, point_of_run, save_model  # noqa: F401
