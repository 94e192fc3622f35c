"""Plotly figures built from engine results. Pure functions: no streamlit here."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from compress.images import Prediction
from compress.measure import LayerRow, wilson_interval


def layer_bars(rows: Sequence[LayerRow], metric: str, title: str) -> go.Figure:
    """Horizontal bars of ``metric`` ("params" or "macs") per layer, in network order."""
    names = [r.name for r in rows]
    values = [getattr(r, metric) for r in rows]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h",
                           hovertext=[f"{r.type} {r.kernel} {r.in_channels}->{r.out_channels}" for r in rows],
                           marker_color="#4C78A8"))
    fig.update_layout(title=title, height=max(300, 16 * len(rows) + 80),
                      yaxis=dict(autorange="reversed", tickfont=dict(size=10)),
                      margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="MACs" if metric == "macs" else "parameters")
    return fig


def topk_bars(pred: Prediction, title: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=[100 * p for p in pred.probs], y=pred.labels, orientation="h",
                           text=[f"{100 * p:.1f}%" for p in pred.probs], textposition="auto",
                           marker_color="#F58518"))
    fig.update_layout(title=title, height=260, yaxis=dict(autorange="reversed"),
                      xaxis=dict(range=[0, 100], title="probability (%)"),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ---------------------------------------------------------------- pruning

KEPT, REMOVED = "#4C78A8", "#E45756"


def importance_strip(report) -> go.Figure:
    """Every channel of every prunable group as a dot at its normalised score: one row per
    group (its root layer and channel counts), kept channels blue, removed red. Hovering a
    row lists the layers that share its channel decision."""
    fig = go.Figure()
    labels = [f"{g.root}  {g.channels_before}→{g.channels_after}" for g in report.groups]
    for kept, colour, name in ((True, KEPT, "kept"), (False, REMOVED, "removed")):
        xs, ys, hover = [], [], []
        for g, label in zip(report.groups, labels):
            removed = set(g.removed)
            coupled = ", ".join(g.coupled[:8]) + (" …" if len(g.coupled) > 8 else "")
            for i, s in enumerate(g.scores):
                if (i not in removed) == kept:
                    xs.append(s)
                    ys.append(label)
                    hover.append(f"channel {i}<br>score {s:.3f}<br>shared by: {coupled}")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, hovertext=hover,
                                 hoverinfo="text", marker=dict(color=colour, size=6, opacity=0.7)))
    fig.update_layout(title=f"Channel importance per group ({report.criterion}; 1 = most important)",
                      height=max(320, 26 * len(report.groups) + 110),
                      xaxis=dict(title="normalised importance score", range=[-0.02, 1.02]),
                      yaxis=dict(autorange="reversed", tickfont=dict(size=11), categoryorder="array",
                                 categoryarray=labels),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def channel_scores(group) -> go.Figure:
    """One group's channels sorted by score, coloured kept/removed: where the cut falls."""
    order = sorted(range(len(group.scores)), key=lambda i: -group.scores[i])
    removed = set(group.removed)
    fig = go.Figure(go.Bar(x=list(range(len(order))), y=[group.scores[i] for i in order],
                           marker_color=[REMOVED if i in removed else KEPT for i in order],
                           hovertext=[f"channel {i}: {'removed' if i in removed else 'kept'}" for i in order],
                           hoverinfo="text+y"))
    fig.update_layout(title=f"{group.root}: {group.channels_before} channels by score, "
                            f"{len(group.removed)} removed (red)",
                      height=300, xaxis_title="channels, most to least important",
                      yaxis_title="score", margin=dict(l=10, r=10, t=40, b=10), bargap=0)
    return fig


def channel_bars(before: Sequence[LayerRow], after: Sequence[LayerRow]) -> go.Figure:
    """Output channels of every conv/linear layer before and after pruning."""
    after_by = {r.name: r for r in after}
    rows = [r for r in before if r.out_channels is not None and r.type in ("Conv2d", "Linear")]
    names = [r.name for r in rows]
    fig = go.Figure([
        go.Bar(y=names, x=[r.out_channels for r in rows], orientation="h", name="before",
               marker_color="#BAB0AC"),
        go.Bar(y=names, x=[after_by[n].out_channels if n in after_by else 0 for n in names],
               orientation="h", name="after", marker_color=KEPT)])
    fig.update_layout(title="Output channels per layer", barmode="group",
                      height=max(320, 22 * len(rows) + 100), xaxis_title="output channels",
                      yaxis=dict(autorange="reversed", tickfont=dict(size=10)),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def sensitivity_lines(table) -> go.Figure:
    """Top-1 after pruning each unit alone, against the ratio; the dashed line is the
    unpruned model. Flat lines are safe to prune hard; steep ones are not."""
    fig = go.Figure()
    units = list(dict.fromkeys(r.unit for r in table.rows))
    for u in units:
        rows = [r for r in table.rows if r.unit == u]
        fig.add_trace(go.Scatter(x=[r.ratio for r in rows], y=[r.top1 for r in rows], mode="lines+markers",
                                 name=u, hovertext=[f"{u} at {r.ratio:.1f}: {r.top1:.1f}% "
                                                    f"(95% CI {r.ci95[0]:.1f}–{r.ci95[1]:.1f}), "
                                                    f"MACs ×{r.macs_fraction:.2f}" for r in rows],
                                 hoverinfo="text"))
    fig.add_hline(y=table.baseline_top1, line_dash="dash", line_color="#555",
                  annotation_text=f"unpruned {table.baseline_top1:.1f}%", annotation_position="bottom left")
    fig.update_layout(title=f"Sensitivity: top-1 when one {table.unit} is pruned alone "
                            f"({table.criterion}, n = {table.n}, no recovery)",
                      height=420, xaxis=dict(title="channel ratio removed", dtick=0.1),
                      yaxis=dict(title="top-1 (%)", range=[0, 100]), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def sparsity_bars(report) -> go.Figure:
    """Fraction of zero weights per layer after unstructured pruning."""
    names = [n for n, _, _ in report.layers]
    fig = go.Figure(go.Bar(y=names, x=[100 * z / t for _, z, t in report.layers], orientation="h",
                           marker_color=KEPT,
                           hovertext=[f"{z:,} of {t:,} weights are zero" for _, z, t in report.layers]))
    fig.update_layout(title=f"Zero weights per layer (global {100 * report.global_sparsity:.1f}%)",
                      height=max(300, 18 * len(names) + 80), xaxis=dict(title="% zero", range=[0, 100]),
                      yaxis=dict(autorange="reversed", tickfont=dict(size=10)),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ---------------------------------------------------------------- quantization

def variant_bars(names: Sequence[str], values: Sequence[float], title: str, unit: str,
                 labels: Sequence[str] | None = None) -> go.Figure:
    """One bar per model variant (FP32 baselines first), value printed on each bar."""
    colours = ["#BAB0AC" if "FP32" in n else KEPT for n in names]
    fig = go.Figure(go.Bar(x=list(names), y=list(values), marker_color=colours,
                           text=list(labels) if labels else [f"{v:.2f}" for v in values],
                           textposition="auto"))
    fig.update_layout(title=title, height=300, yaxis_title=unit, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def sqnr_bars(errors, keep: Sequence[str] = ()) -> go.Figure:
    """Simulated INT8 SQNR per layer in network order; layers kept in float are grey."""
    names = [e.layer for e in errors]
    fig = go.Figure(go.Bar(x=[e.sqnr_db for e in errors], y=names, orientation="h",
                           marker_color=["#BAB0AC" if n in keep else KEPT for n in names],
                           hovertext=[f"{e.layer}: {e.sqnr_db:.1f} dB, {e.params:,} weights" for e in errors],
                           hoverinfo="text"))
    fig.update_layout(title="Quantization error per layer (SQNR, dB: higher is better; grey = kept in float)",
                      height=max(300, 18 * len(names) + 80), xaxis_title="SQNR (dB)",
                      yaxis=dict(autorange="reversed", tickfont=dict(size=10)),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def training_curves(events, reference_top1: float | None = None) -> go.Figure:
    """Loss (left axis) and train/validation top-1 (right axis) against epochs, from the
    training loop's progress events: "train" events every few steps, "epoch" events at
    the end of each epoch. ``reference_top1`` draws the original model's accuracy."""
    from plotly.subplots import make_subplots
    steps = [e for e in events if e.stage == "train" and "loss" in e.metrics]
    epochs = [e for e in events if e.stage == "epoch"]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    total = max([e.metrics.get("epochs", 1) for e in steps + epochs] or [1])
    x = [e.fraction * total for e in steps]
    fig.add_trace(go.Scatter(x=x, y=[e.metrics["loss"] for e in steps], name="training loss (running mean)",
                             mode="lines", line=dict(color="#4C78A8")), secondary_y=False)
    if any(e.metrics.get("train_acc") is not None for e in steps):
        fig.add_trace(go.Scatter(x=x, y=[e.metrics.get("train_acc") for e in steps], name="train top-1 %",
                                 mode="lines", line=dict(color="#F58518", dash="dot")), secondary_y=True)
    val = [(e.metrics["epoch"], e.metrics["val_acc"]) for e in epochs if e.metrics.get("val_acc") is not None]
    if val:
        fig.add_trace(go.Scatter(x=[v[0] for v in val], y=[v[1] for v in val], name="validation top-1 %",
                                 mode="lines+markers", line=dict(color="#54A24B")), secondary_y=True)
    if reference_top1 is not None and x:
        fig.add_trace(go.Scatter(x=[0, max(x)], y=[reference_top1] * 2, mode="lines",
                                 name=f"original top-1 ({reference_top1:.1f}%)",
                                 line=dict(color="#888", dash="dash")), secondary_y=True)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2),
                      xaxis_title="epoch")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="top-1 %", range=[0, 100], dtick=20, showgrid=False, secondary_y=True)
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) no other point beats on both: at least as
    fast and as accurate, and strictly better on one. Sorted by latency."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
                        for j, (l2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto(names: Sequence[str], latency_ms: Sequence[float], top1: Sequence[float],
           size_bytes: Sequence[int], hover: Sequence[str],
           x_title: str = "latency, median (ms)", x_unit: str = "ms") -> go.Figure:
    """Accuracy against latency (or any time measure where lower is better: ``x_title``),
    bubble area ∝ bytes; the Pareto front is drawn as a line through its points (hover
    shows each run's recipe)."""
    pts = list(zip(latency_ms, top1))
    front = set(pareto_front(pts))
    biggest = max(size_bytes) if size_bytes else 1
    sizes = [12 + 40 * (b / biggest) ** 0.5 for b in size_bytes]
    colors = ["#E45756" if i in front else "#4C78A8" for i in range(len(pts))]
    fig = go.Figure(go.Scatter(
        x=list(latency_ms), y=list(top1), mode="markers+text", text=list(names), textposition="top center",
        marker=dict(size=sizes, color=colors, opacity=0.7, line=dict(width=1, color="#333")),
        hovertext=[f"{n}<br>{h}<br>{lat:.2f} {x_unit}, {acc:.2f}%, {b / 1e6:.2f} MB"
                   for n, h, lat, acc, b in zip(names, hover, latency_ms, top1, size_bytes)],
        hoverinfo="text", name="runs"))
    order = sorted(front, key=lambda i: pts[i][0])
    fig.add_trace(go.Scatter(x=[pts[i][0] for i in order], y=[pts[i][1] for i in order], mode="lines",
                             line=dict(color="#E45756", dash="dot"), name="Pareto front", hoverinfo="skip"))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=x_title,
                      yaxis_title="top-1 accuracy (%)", legend=dict(orientation="h", y=-0.15))
    return fig


def class_delta_bars(deltas: Sequence[dict]) -> go.Figure:
    """Per-class top-1 change in points (report.per_class_deltas), largest loss first, with
    n per class and each side's 95% Wilson interval in the hover."""
    rows = list(deltas)
    hover = []
    for r in rows:
        b = wilson_interval(round(r["before"] * r["n"] / 100), r["n"])
        a = wilson_interval(round(r["after"] * r["n"] / 100), r["n"])
        hover.append(f"{r['class']}: {r['before']:.1f}% → {r['after']:.1f}% on {r['n']} photos<br>"
                     f"95% intervals {b[0]:.0f}–{b[1]:.0f}% → {a[0]:.0f}–{a[1]:.0f}%")
    fig = go.Figure(go.Bar(x=[r["class"] for r in rows], y=[r["delta"] for r in rows],
                           marker_color=["#E45756" if r["delta"] < 0 else "#4C78A8" for r in rows],
                           text=[f"n={r['n']}" for r in rows], textposition="outside",
                           hovertext=hover, hoverinfo="text"))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), title="Top-1 change per class (points)",
                      yaxis_title="points", showlegend=False)
    return fig


def confusion_change(changed: Sequence[dict]) -> go.Figure:
    """The confusion-matrix difference restricted to the images that changed: for each
    (true class, answer) cell, how many more (red) or fewer (blue) images the compressed
    model puts there than the original did."""
    from collections import Counter
    delta: Counter = Counter()
    for c in changed:
        delta[(c["label"], c["after"]["class"])] += 1
        delta[(c["label"], c["before"]["class"])] -= 1
    cells = {k: v for k, v in delta.items() if v}
    rows = sorted({k[0] for k in cells})
    cols = sorted({k[1] for k in cells})
    z = [[cells.get((r, c)) for c in cols] for r in rows]
    m = max((abs(v) for v in cells.values()), default=1)
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, zmin=-m, zmax=m, colorscale="RdBu", reversescale=True,
                               hovertemplate="true %{y}, answered %{x}: %{z:+d} images<extra></extra>"))
    fig.update_layout(height=max(300, 28 * len(rows) + 120), margin=dict(l=10, r=10, t=30, b=10),
                      title="Where the answers moved (changed cells only)", xaxis_title="answer",
                      yaxis_title="true class")
    return fig
