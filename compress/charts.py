"""Plotly figures built from engine results. Pure functions: no streamlit here."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from compress.images import Prediction
from compress.measure import LayerRow


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
