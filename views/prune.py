"""Prune page: structured (channel) and unstructured pruning, importance, sensitivity.

Widgets -> a StructuredConfig / UnstructuredConfig -> compress.prune -> measured tables
and charts. The pruned model becomes the session's current compressed model.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from compress import charts
from compress import prune as P
from compress.errors import CompressError
from compress.limits import BOUNDS
from compress.measure import Profile
from compress.report import compare_profiles, figures
from compress.report import pruning as RP
from compress.zoo import no_data_hint
from views.common import (artifact_bytes, keep_result, shown_result, base_recipe, current, current_device, eval_sets_for, model_key,
                          on_sidebar_settings, require_model, run_pipeline)

loaded = require_model()
spec, model = loaded.spec, loaded.model
key = model_key()
st.title("Prune")
st.caption("Pruning removes parts of the network that matter least. **Structured** pruning "
           "takes out whole channels, so the model really gets smaller and faster. "
           "**Unstructured** pruning only sets single weights to zero.")

if isinstance(model, torch.jit.ScriptModule):
    st.error("This is a TorchScript model: its layers cannot be changed. Load a state_dict or a "
             "project checkpoint to prune it.")
    st.stop()

layers = P.prunable_layers(model)
defaults = list(P.default_protected(model))
sets, data_error = eval_sets_for(spec)
if data_error:
    st.error(data_error)
elif sets is None:
    st.info("No dataset chosen in the sidebar: latency, size and MACs are still measured, but "
            "not accuracy, and the activation/Taylor criteria are unavailable. " + no_data_hint(spec))



structured, unstructured = st.tabs(["Structured (channels)", "Unstructured (weights)"])

# ------------------------------------------------------------------ structured
with structured:
    left, right = st.columns([3, 2])
    with left:
        target = st.radio(
            "Aim for", ["ratio", "macs", "params"], horizontal=True, key="prune_target",
            format_func={"ratio": "a channel ratio", "macs": "fewer MACs (compute)",
                         "params": "fewer parameters (size)"}.get,
            help="Say how much to remove directly, or name a saving and let the tool find the ratio.")
        label = ("Share of channels to remove in each layer" if target == "ratio"
                 else f"Share of {'MACs' if target == 'macs' else 'parameters'} to remove")
        amount = st.slider(label, 0.0, 0.9, 0.5, 0.05, key="prune_ratio",
                           help="0.5 removes half. Higher saves more and costs more accuracy.")
        criterion = st.selectbox("How to judge a channel's importance", list(P.CRITERIA), key="prune_criterion",
                                 format_func=lambda c: f"{c}: {P.CRITERIA[c].description}")
        scope = st.radio("Scope", ["uniform", "global"], horizontal=True, key="prune_scope",
                         format_func={"uniform": "same share in every layer",
                                      "global": "rank all channels together"}.get,
                         help="Global lets important layers keep more channels and cut others harder.")
    with right:
        protected = st.multiselect("Protected layers (never pruned)", layers, default=defaults,
                                   key="prune_protected",
                                   help="By default the first conv, as most recipes do, and in depthwise "
                                        "networks (MobileNet, EfficientNet) the projection convs that carry "
                                        "the residual stream: pruning them collapsed efficientnet_lite0 "
                                        "(docs/pruning.md). In a ResNet the first conv's channels run "
                                        "through all of layer1, the largest images in the network: "
                                        "unprotecting it prunes much faster models at a higher accuracy cost.")
        only = st.multiselect("Prune only these layers (empty = all)", layers, key="prune_only",
                              help="Single-layer mode, e.g. layer2.0.conv1, to see one layer's effect.")
        round8 = st.checkbox("Keep channel counts multiples of 8", key="prune_round8",
                             help="Phone and GPU kernels run fastest on multiples of 8.")
        bn = st.checkbox("Re-estimate BatchNorm after pruning", value=True, key="prune_bn",
                         help="Runs up to 512 scoring photos (never the evaluation images) through the pruned "
                              "model to refresh each BatchNorm's mean and variance. No training; seconds. "
                              "Without it a pruned model often looks far worse than it is.")
        st.caption(RP.output_layer_note(model, spec.num_classes))
    needs_images = RP.needs_images_warning(criterion, sets is not None)
    if needs_images:
        st.warning(needs_images)

    cfg = P.StructuredConfig(
        ratio=amount if target == "ratio" else None, criterion=criterion, scope=scope,
        protected=tuple(protected), only_layers=tuple(only), round_to=8 if round8 else None,
        target=target, target_reduction=amount, bn_images=512 if bn else 0)

    @st.cache_data(show_spinner="Estimating…", max_entries=64)
    def cached_estimate(_model, key: str, cfg: P.StructuredConfig, input_size):
        return P.estimate(_model, cfg, input_size)

    @st.cache_data(show_spinner=False, max_entries=8)
    def original_counts(_model, key: str, input_size):
        return figures.counts(_model, input_size)

    base_params, base_macs = original_counts(model, key, spec.input_size)
    est = None
    if amount > 0:
        try:
            est = cached_estimate(model, key, cfg, spec.input_size)
        except CompressError as e:
            st.error(str(e))
    e = st.columns(3)
    if est is not None:
        for col, m in zip(e, RP.estimate_metrics(est, base_params, base_macs)):
            col.metric(m["label"], m["value"], m["delta"], delta_color="off", delta_arrow="off")
        st.caption(RP.estimate_caption(est, criterion))

    with st.expander("Measurement settings"):
        st.number_input("Timed runs for latency (batch 1, after 5 warm-up runs)", 5, 500, 30,
                        key="prune_runs")

    if st.button("Prune", type="primary", key="prune_go", disabled=amount == 0):
        if current_device() is None:
            st.stop()
        # channel pruning starts from the original: it replaces every step of the current recipe
        recipe = base_recipe(st.session_state.get("prune_runs", 30)).with_step("prune", cfg)
        result = run_pipeline(recipe, "Prune")
        if result is not None:
            pruned, report = result.model, result.reports["prune_structured"][-1]
            keep_result("prune_result", {
                "report": report, "run_id": result.run_id,
                "before": Profile.from_json(result.before), "after": Profile.from_json(result.after),
                "layers": figures.channel_tables(model, pruned, spec.input_size)})

    res = shown_result("prune_result")
    if res:
        report = res["report"]
        st.subheader("Before and after")
        head, bn_note = RP.pruned_captions(res["run_id"], report, res["after"])
        st.caption(head)
        st.table(pd.DataFrame(RP.pruned_table(res["before"], res["after"], report)).set_index("measure"))
        if bn_note:
            st.caption(bn_note)
        st.plotly_chart(charts.importance_strip(report), width="stretch", key="prune_strip")
        st.caption("Each dot is one channel. Layers joined by a residual connection or a "
                   "BatchNorm share one decision, so they appear as one row (hover to see them).")
        roots = [g.root for g in report.groups]
        pick = st.selectbox("Look closer at one group", roots, key="prune_pick") if roots else None
        if pick in report.by_root():
            st.plotly_chart(charts.channel_scores(report.by_root()[pick]), width="stretch", key="prune_one")
        st.plotly_chart(charts.channel_bars(*res["layers"]), width="stretch", key="prune_bars")
        comp = current()
        if comp is not None and not comp.quantized:
            st.download_button("Download the current compressed model (.pt, loads with weights_only=True)",
                               data=artifact_bytes(comp.model, loaded), file_name=f"{spec.name}-compressed.pt",
                               key="prune_download")

    st.subheader("Sensitivity scan")
    st.caption("Prune one part at a time, without training, and see how accuracy falls. Parts whose line "
               "stays flat can be pruned harder. Scored on photos from the scoring pool (never the evaluation "
               "images); with BatchNorm re-estimation ticked above, each pruned model gets it first, on the "
               "same photos, as a real prune does.")
    s = st.columns(3)
    unit = s[0].radio("Prune one…", ["stage", "group"], horizontal=True, key="sens_unit",
                      format_func={"stage": "stage at a time", "group": "group at a time (slower)"}.get)
    n_scan = s[1].number_input("Images for the scan", 16, 1024, 256, step=16, key="sens_n",
                               help="From the scoring pool (at most its size); more is slower and surer.")
    ratios = s[2].multiselect("Ratios", list(P.SENSITIVITY_RATIOS), default=[0.2, 0.4, 0.6, 0.8],
                              key="sens_ratios")
    if st.button("Run sensitivity scan", key="sens_go", disabled=sets is None or not ratios):
        device = current_device()
        bar = st.progress(0.0, text="starting")
        try:
            table = RP.sensitivity_scan(model, spec.input_size, sets, int(n_scan), criterion=criterion,
                                        unit=unit, ratios=tuple(sorted(ratios)), protected=tuple(protected),
                                        device=device, reestimate_bn=bn,
                                        on_progress=lambda ev: bar.progress(ev.fraction, text=ev.message))
            keep_result("sensitivity", {"table": table})
        except CompressError as err:
            st.error(str(err))
        bar.empty()
    sens = shown_result("sensitivity")
    if sens:
        t = sens["table"]
        st.caption(RP.sensitivity_caption(t))
        st.plotly_chart(charts.sensitivity_lines(t), width="stretch", key="sens_chart")
        with st.expander("Sensitivity table"):
            st.dataframe(pd.DataFrame(RP.sensitivity_rows(t)), hide_index=True, width="stretch")

# ------------------------------------------------------------------ unstructured
with unstructured:
    st.info("Zeroed weights are still stored and still multiplied: the dense file keeps its "
            "size and the dense model its speed. The zeros only pay off when the file is "
            "compressed (the gzip row) or run by a sparse engine.")
    comp = RP.zeroing_start(current())
    start_options = ["original"] + (["compressed"] if comp else [])
    start = st.radio("Start from", start_options, horizontal=True, key="un_start",
                     format_func={"original": "the original model",
                                  "compressed": f"the current compressed model ({comp.label if comp else ''})"}.get)
    u = st.columns(3)
    u_amount = u[0].slider("Share of weights to set to zero", *BOUNDS["unstructured_amount"][:2], 0.5, 0.05,
                           key="un_amount")
    u_method = u[1].radio("Which weights", list(P.UNSTRUCTURED_METHODS), key="un_method",
                          format_func=lambda m: P.UNSTRUCTURED_METHODS[m].description)
    u_scope = u[2].radio("Threshold", ["global", "layer"], key="un_scope",
                         format_func={"global": "one for the whole model", "layer": "per layer"}.get)
    if st.button("Apply unstructured pruning", key="un_go", disabled=u_amount == 0):
        ucfg = P.UnstructuredConfig(amount=u_amount, method=u_method, scope=u_scope)
        from_comp = start == "compressed" and comp is not None
        runs = st.session_state.get("prune_runs", 30)
        recipe = (on_sidebar_settings(comp.recipe, runs) if from_comp else base_recipe(runs)).with_step(
            "unstructured", ucfg)
        result = run_pipeline(recipe, "Unstructured pruning", start=comp if from_comp else None)
        if result is not None:
            keep_result("unstructured_result", {
                "run_id": result.run_id,
                "before": Profile.from_json(result.start_profile or result.before),
                "after": Profile.from_json(result.after), "sparsity": result.reports["prune_unstructured"]})
    ures = shown_result("unstructured_result")
    if ures:
        st.caption(RP.zeroed_caption(ures["run_id"]))
        st.table(pd.DataFrame(compare_profiles(ures["before"], ures["after"])).set_index("measure"))
        st.plotly_chart(charts.sparsity_bars(ures["sparsity"]), width="stretch", key="un_chart")
