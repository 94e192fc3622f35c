"""Everything the product says about measured figures, in one place: tables (lists of
dicts, ready for a dataframe or a text table), sentences a non-engineer can read, and the
rules behind them. Pages, the CLI and the exporters call these, so a figure reads the
same everywhere; a page only lays out widgets and renders what these return.

Modules (each imports only the engine below ``report`` and ``speed``/``profiles`` here):

- ``speed``: speed-ups in words, busy-machine warnings.
- ``profiles``: before/after and multi-column tables, one model's profile, the summary.
- ``card``: a recipe's label, the model card, the table of exported files.
- ``changes``: what changed between two models on the same images.
- ``figures``: static counts of a model (Model and Prune pages).
- ``pruning``, ``quantizing``, ``recovery``: what the Prune, Quantize and Distill pages say.
- ``runs``: the Compare page's tables and series; ``ladder``: the Explore page's;
  ``photo``: one photo classified (Classify, Explore).

The names below are re-exported so ``from compress.report import summary`` keeps working.
"""
from compress.report.speed import (BUSY, busy_warning, noisy_latency, photo_speed, same_run_faster,
                                   speed_against, speed_entry, speed_phrase, speed_ratio, time_change,
                                   timed_together, times_faster, timing_note)
from compress.report.profiles import (chance_warnings, compare_profiles, near_chance, profile_table,
                                      profiles_table, summary, text_table)
from compress.report.card import export_table, model_card, point_label
from compress.report.changes import (changed_images, diff_runs, forgetting_sentence,
                                     per_class_deltas)

__all__ = [
    "BUSY", "busy_warning", "chance_warnings", "changed_images", "compare_profiles", "diff_runs", "export_table",
    "forgetting_sentence", "model_card", "near_chance", "noisy_latency", "per_class_deltas", "photo_speed",
    "point_label", "profile_table", "profiles_table", "same_run_faster", "speed_against", "speed_entry",
    "speed_phrase", "speed_ratio", "summary", "text_table", "time_change", "timed_together", "times_faster",
    "timing_note",
]
