"""AppTest: every page renders without an exception, with its widgets and figures."""
from pathlib import Path

import time

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def on_page(page: str, timeout: int = 300, **state) -> AppTest:
    """An AppTest of app.py, switched to ``views/<page>.py`` with ``state`` preset."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in state.items():
        at.session_state[k] = v
    return at.switch_page(f"views/{page}.py").run()


def workspace_of(at: AppTest):
    """The session's Workspace (views/jobs.py): what survives a reload."""
    from views.jobs import _registry
    return _registry()[at.session_state["_token"]]


def current_point(at: AppTest):
    """The session's current compressed model (a compress.pipeline.Point) or None."""
    return workspace_of(at).current


def fresh(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_model_page_shows_static_figures_and_layer_charts(cifar_asset):
    at = fresh()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_name").value == "resnet18_cifar10"  # the shipped trained model
    labels = [m.label for m in at.metric]
    assert labels == ["Parameters", "Nonzero parameters", "Size (torch.save)", "Size (gzip)", "MACs / image"]
    assert at.metric[0].value == "11.18 M"          # resnet18 with a 10-class head
    assert at.metric[4].value == "0.037 G"          # at 32x32
    assert at.metric[3].value.endswith(" MB") and 20 < float(at.metric[3].value.split()[0]) < 45   # gzip, filled last
    assert len(at.get("plotly_chart")) == 2
    assert not at.error


def test_efficientnet_page_figures():
    at = fresh(model_name="efficientnet_lite0")
    assert not at.exception and not at.error
    assert at.metric[0].value == "4.65 M" and at.metric[4].value == "0.412 G"
    assert len(at.get("plotly_chart")) == 2


def test_measure_with_cifar_data_shows_accuracy_with_interval(cifar_tar, cifar_asset):
    at = fresh(data_path=str(cifar_tar), data_limit=50, prof_runs=5, prof_warmup=1)
    at.button(key="measure").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    values = dict(zip(table["measure"], table["how it was measured"]))
    assert "n = 50 images, 95% interval" in values["Top-1 accuracy"]
    assert "5 timed runs" in values["Latency, median"]
    assert not any("Stale" in w.value for w in at.warning)
    at.session_state["data_limit"] = 40                  # the sidebar changed: the table is labelled stale
    at.run()
    stale = [w.value for w in at.warning if "Stale" in w.value]
    assert len(stale) == 1 and "at most 50 images" in stale[0] and "at most 40 images" in stale[0]
    assert at.dataframe[0].value is not None


def test_no_data_path_measures_on_the_bundled_sample(cifar_asset):
    at = fresh(data_limit=60, prof_runs=5, prof_warmup=1)
    assert any("bundled sample" in c.value for c in at.sidebar.caption)
    at.button(key="measure").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    values = dict(zip(table["measure"], table["how it was measured"]))
    assert "n = 60 images" in values["Top-1 accuracy"] and "bundled sample" in values["Top-1 accuracy"]


def test_bad_dataset_path_is_a_message_not_a_crash(tmp_path):
    at = fresh(data_path=str(tmp_path), prof_runs=5, prof_warmup=1)
    at.button(key="measure").click().run()
    assert not at.exception
    assert any("No images found" in e.value for e in at.error)
    at.switch_page("views/classify.py").run()      # the session stays usable
    assert not at.exception


def test_cuda_absent_is_a_message():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    at = fresh(device="cuda", prof_runs=5, prof_warmup=1)
    at.button(key="measure").click().run()
    assert not at.exception
    assert any("CUDA was asked for" in e.value for e in at.error)


def test_classify_page_waits_for_a_photo():
    at = fresh()
    at.switch_page("views/classify.py").run()
    assert not at.exception
    assert at.radio(key="photo_source").options == ["Upload", "Camera"]
    assert any("Upload a photo" in i.value for i in at.info)


def test_upload_mode_without_file_explains_itself():
    at = fresh(model_name="upload")
    assert not at.exception
    assert any("Upload a checkpoint" in e.value for e in at.error)


def test_offline_resnet18_without_weights_explains_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import urllib.error

    import torch
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    at = fresh(model_name="resnet18")
    assert not at.exception
    assert any("resnet18-f37072fd.pth" in e.value for e in at.error)


# Changing the sidebar's model picker is tested in tests/test_browser.py: AppTest (streamlit
# 1.67) drops a changed value of a widget created after st.navigation(), which a real browser
# applies, so an AppTest of it would test the harness, not the app.


def test_prune_page_estimate_moves_with_the_slider_and_prune_measures(cifar_asset, cifar_tar):
    at = on_page("prune", data_path=str(cifar_tar), data_limit=40, prune_runs=5)
    assert not at.exception and not at.error
    est = {m.label: m.value for m in at.metric}
    assert est["Parameters (estimate)"] == "2.86 M"            # ratio 0.5 by default
    at.slider(key="prune_ratio").set_value(0.25).run()
    est2 = {m.label: m.value for m in at.metric}
    assert float(est2["Parameters (estimate)"].split()[0]) > 2.86
    assert any("Estimate" in c.value for c in at.caption)
    at.button(key="prune_go").click().run()
    assert not at.exception and not at.error
    table = at.table[0].value
    assert set(table.index) >= {"Parameters", "Size (file)", "MACs / image", "Latency, median",
                                "Top-1 accuracy"}
    assert "n = 40 images" in table.loc["Top-1 accuracy", "how"]
    # BatchNorm re-estimation is on by default: the accuracy before it is shown too, on the same images
    raw = table.loc["Top-1 as pruned, before BatchNorm re-estimation"]
    assert "the same 40 images" in raw["how"]
    assert any("after BatchNorm re-estimation on" in c.value for c in at.caption)
    assert float(table.loc["MACs / image", "after"].split()[0]) < float(table.loc["MACs / image", "before"].split()[0])
    assert len(at.get("plotly_chart")) == 3                     # importance, one group, channels
    assert current_point(at).label.startswith("channel-pruned 0.25")


def test_prune_page_bad_input_keeps_the_session_usable(cifar_asset):
    at = on_page("prune")
    at.radio(key="prune_target").set_value("macs").run()
    at.multiselect(key="prune_protected").set_value(           # all but the last block protected
        [n for n in at.multiselect(key="prune_protected").options if not n.startswith("layer4")]).run()
    at.slider(key="prune_ratio").set_value(0.8).run()          # 80% fewer MACs: out of reach
    assert not at.exception
    assert any("out of reach" in e.value for e in at.error)
    at.radio(key="prune_target").set_value("ratio").run()
    at.multiselect(key="prune_protected").set_value([]).run()
    at.multiselect(key="prune_only").set_value(["layer3.0.conv1"]).run()
    assert not at.exception and not at.error
    assert at.metric[0].label == "Parameters (estimate)"


def test_quantize_page_measures_int8_against_both_fp32_baselines(cifar_asset, cifar_tar):
    at = on_page("quantize", data_path=str(cifar_tar), data_limit=40, q_runs=5)
    assert not at.exception and not at.error
    at.slider(key="q_calib").set_value(32).run()
    at.multiselect(key="q_modes").set_value(["static", "ort-int8", "dynamic"]).run()
    at.button(key="q_go").click().run()
    assert not at.exception and not at.error
    table = at.table[0].value
    assert list(table.index) == ["PyTorch FP32", "ONNX Runtime FP32", "PyTorch INT8 (x86)",
                                 "ONNX Runtime INT8 (QDQ)", "PyTorch dynamic INT8 (x86)"]
    assert len(at.get("plotly_chart")) == 3                    # size, latency, accuracy
    pick = at.selectbox(key="q_pick")
    pick.set_value(next(o for o in pick.options if o.startswith("ONNX Runtime INT8 (QDQ)")))
    at.button(key="q_use").click().run()
    assert current_point(at).recipe.quantize.mode == "ort-int8" and current_point(at).run_id is not None
    assert current_point(at).quantized is True
    at.button(key="q_sqnr").click().run()
    assert not at.exception and any("Lowest SQNR" in c.value for c in at.caption)


def test_quantize_page_without_data_explains_and_fp16_says_cuda(cifar_asset):
    import torch
    # an ImageNet model ships no evaluation sample: the page says what folder to give
    at = on_page("quantize", model_name="efficientnet_lite0", q_runs=5)
    assert any("calibrate" in w.value and "WordNet id" in w.value for w in at.warning)
    if not torch.cuda.is_available():
        at.multiselect(key="q_modes").set_value(["fp16", "static"]).run()
        at.button(key="q_go").click().run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert any("fp16" in e and "CUDA GPU" in e for e in errors)
        assert any("static" in e and "calibrates on real images" in e for e in errors)


def test_quantize_page_runs_qat_on_training_photos(cifar_asset, cifar_tar):
    at = on_page("quantize", timeout=600, data_path=str(cifar_tar), data_limit=40, q_runs=5)
    at.slider(key="q_calib").set_value(32).run()
    at.multiselect(key="q_modes").set_value(["qat"]).run()
    at.number_input(key="q_train_limit").set_value(100).run()
    at.number_input(key="q_qat_lr").set_value(1e-4).run()
    at.button(key="q_go").click().run()
    assert not at.exception and not at.error
    table = at.table[0].value
    assert "PyTorch INT8 (x86, QAT)" in table.index
    assert "1 QAT epoch(s)" in table.loc["PyTorch INT8 (x86, QAT)", "notes"]


def test_quantize_page_empty_dataset_folder_is_a_message(cifar_asset, tmp_path):
    at = on_page("quantize", data_path=str(tmp_path), q_runs=5)
    assert not at.exception and not at.error            # nothing is read until a button asks
    at.button(key="q_go").click().run()
    assert not at.exception
    assert any("No images found" in e.value for e in at.error)
    at.button(key="q_sqnr").click().run()
    assert not at.exception and any("No images found" in e.value for e in at.error)


def _wait_for_job(at: AppTest, timeout: float = 240) -> AppTest:
    """Rerun the page until its background job has finished (the browser's fragment polls)."""
    import time
    end = time.time() + timeout
    while workspace_of(at).job.running and time.time() < end:
        time.sleep(1.0)
        at.run()
    assert not workspace_of(at).job.running, "the training job did not finish in time"
    return at.run()


def test_distill_page_asks_for_a_pruned_model_first(cifar_asset):
    at = on_page("distill")
    assert not at.exception
    assert any("Prune one on the Prune page first" in i.value for i in at.info)


def test_distill_page_recovers_the_pruned_model_and_measures_all_three(cifar_asset, cifar_tar):
    at = on_page("prune", data_path=str(cifar_tar), data_limit=60, prune_runs=5)
    at.button(key="prune_go").click().run()
    assert not at.exception and not at.error
    at.switch_page("views/distill.py").run()
    assert not at.exception and not at.error
    assert at.text_input(key="kd_train_path").value == str(cifar_tar)   # the sidebar's data by default
    at.number_input(key="kd_limit").set_value(128).run()
    at.number_input(key="kd_epochs").set_value(2).run()
    assert any("Chosen for these 128 photos: batch 32" in c.value for c in at.caption)   # the recipe, by default
    at.toggle(key="kd_auto").set_value(False).run()                  # every setting by hand
    at.select_slider(key="kd_batch").set_value(32).run()
    at.select_slider(key="kd_attention").set_value(50.0).run()
    at.number_input(key="kd_warmup").set_value(0.5).run()
    estimate = [i.value for i in at.info if "Estimated time" in i.value]
    assert estimate and "2 epoch(s) of 4 steps over 112 photos" in estimate[0]     # 16 held out
    at.button(key="kd_start").click().run()
    assert not at.exception and not at.error
    at = _wait_for_job(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("It is the current compressed model" in s.value for s in at.success)
    table = at.table[0].value
    assert list(table.columns) == ["original", "pruned, before recovery", "recovered", "how"]
    assert "n = 60 images" in table.loc["Top-1 accuracy", "how"]
    # recovery keeps the pruned shape: same parameter count as before recovery
    assert table.loc["Parameters", "recovered"] == table.loc["Parameters", "pruned, before recovery"]
    history = at.table[1].value
    assert list(history.index) == [1, 2]
    assert all(isinstance(v, float) and 0 <= v <= 100 for v in history["validation top-1 %"])
    assert "distilled 2 epoch(s)" in current_point(at).label
    rec = current_point(at).recipe.recover
    assert (rec.attention, rec.warmup_epochs) == (50.0, 0.5)        # the page's settings reached the run
    job = workspace_of(at).job
    assert [e.metrics["epoch"] for e in job.events if e.stage == "epoch"] == [1, 2]
    assert any(c.key == "kd_download" for c in at.get("download_button"))


def test_distill_page_recovers_a_quantized_model_through_its_float_model_and_quantizes_again(cifar_asset,
                                                                                             cifar_tar):
    from compress import pipeline
    from compress.history import History
    from compress.quantize import QuantConfig
    at = on_page("prune", data_path=str(cifar_tar), data_limit=40, prune_runs=3)
    at.button(key="prune_go").click().run()
    pruned = current_point(at)
    qcfg = QuantConfig(mode="dynamic")
    q = pipeline.run(pruned.recipe.with_step("quantize", qcfg), history=History(), start=pruned)
    workspace_of(at).current = q.point                     # as the Quantize page's "Use this model" does
    at.switch_page("views/distill.py").run()
    assert not at.exception and not at.error
    assert any(f"trains the float pruned model it was made from (run #{pruned.run_id})" in i.value
               for i in at.info)
    at.number_input(key="kd_limit").set_value(64).run()
    at.number_input(key="kd_epochs").set_value(1).run()
    at.button(key="kd_start").click().run()
    at = _wait_for_job(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    recovered = current_point(at)
    assert recovered.recipe.recover is not None and not recovered.quantized
    at.button(key="kd_requantize_btn").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    again = current_point(at)
    assert again.quantized and again.recipe.quantize == qcfg and again.recipe.recover == recovered.recipe.recover
    assert any(f"Quantized again and recorded as run #{again.run_id}" in s.value for s in at.success)


def test_distill_page_bad_training_data_is_a_message(cifar_asset, cifar_tar, tmp_path):
    from PIL import Image
    at = on_page("prune", prune_runs=5)
    at.button(key="prune_go").click().run()
    at.switch_page("views/distill.py").run()
    at.text_input(key="kd_train_path").set_value(str(tmp_path / "empty")).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
    assert at.button(key="kd_start").disabled
    photos = tmp_path / "photos"                            # unlabelled photos: label-free only
    photos.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(photos / f"p{i}.png")
    at.text_input(key="kd_train_path").set_value(str(photos)).run()
    assert any("label-free" in i.value for i in at.info)
    at.radio(key="kd_method").set_value("finetune").run()
    assert any("fine-tuning needs labels" in e.value for e in at.error)
    assert at.button(key="kd_start").disabled
    at.switch_page("views/model.py").run()                  # the session stays usable
    assert not at.exception


def test_distill_page_cancel_stops_training_and_keeps_the_pruned_model(cifar_asset, cifar_tar):
    at = on_page("prune", data_path=str(cifar_tar), data_limit=20, prune_runs=5)
    at.button(key="prune_go").click().run()
    pruned_label = current_point(at).label
    at.switch_page("views/distill.py").run()
    at.number_input(key="kd_limit").set_value(4000).run()
    at.number_input(key="kd_epochs").set_value(50).run()
    at.button(key="kd_start").click().run()
    assert workspace_of(at).job.running
    assert any("Training" == h.value for h in at.subheader)
    at.button(key="kd_cancel").click().run()
    at = _wait_for_job(at, timeout=60)
    assert workspace_of(at).job.status == "cancelled"
    assert any(w.value.startswith("Cancelled (") and "unchanged" in w.value for w in at.warning)
    assert current_point(at).label == pruned_label
    assert at.number_input(key="kd_epochs").value == 50          # the controls kept their values


def test_compare_page_lists_runs_with_pareto_summary_side_by_side_and_exports(cifar_asset, cifar_tar, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_HISTORY", str(tmp_path / "h.sqlite"))
    at = on_page("compare")
    assert not at.exception
    assert any("No runs recorded yet" in i.value for i in at.info)
    at.switch_page("views/prune.py")
    at.session_state["data_path"] = str(cifar_tar)
    at.session_state["data_limit"] = 40
    at.session_state["prune_runs"] = 5
    at.run()
    at.button(key="prune_go").click().run()
    at.slider(key="prune_ratio").set_value(0.25).run()
    at.button(key="prune_go").click().run()
    assert not at.exception and not at.error
    at.switch_page("views/compare.py").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["from"]) == {"app"}
    assert (table["n"] == 40).all() and (table["× smaller"] > 1).all()
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(charts) >= 2 and "Top-1 change per class" in charts[1]   # the Pareto chart, what changed
    plain = [m.value for m in at.markdown if m.value.startswith("**#") and "× smaller" in m.value]
    assert plain and "points" in plain[0] and "on 40 validation images (95% interval" in plain[0]
    changed = [m.value for m in at.markdown if " became right, " in m.value]
    assert len(changed) == 1 and "run #2's original → its compressed model" in changed[0]
    at.radio(key="wc_against").set_value("another run's model").run()      # run #2 against run #1
    assert not at.exception
    assert any("run #2's model → run #1's model" in m.value and " became right, " in m.value
               for m in at.markdown)
    side = at.table[0].value
    assert {"A: #1", "B: #2", "B / A"} <= set(side.columns)
    # export the current compressed model (the last pruned one) and check the file
    at.multiselect(key="exp_formats").set_value(["onnx", "torchscript"]).run()
    at.button(key="exp_go").click().run()
    assert not at.exception and not at.error
    files = at.table[1].value
    assert list(files.index) == ["onnx", "torchscript"]
    assert (files["same top-1"].str.startswith("100.0%")).all()
    keys = [b.key for b in at.get("download_button")]
    assert {"exp_dl_onnx", "exp_dl_torchscript", "exp_dl_card"} <= set(keys)
    # the export was a run from the current point too; deleting a run removes it
    at.run()
    assert len(at.dataframe[0].value) == 3
    at.selectbox(key="cmp_pick").set_value(1).run()
    at.button(key="cmp_delete").click().run()
    assert 1 not in at.dataframe[0].value.index and len(at.dataframe[0].value) == 2



def test_compare_page_preset_runs_a_recipe_and_records_it(cifar_asset, cifar_tar, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_HISTORY", str(tmp_path / "h.sqlite"))
    at = on_page("compare", data_path=str(cifar_tar), data_limit=40)
    assert not at.exception
    at.button(key="preset_1").click().run()                   # "Edge / server CPU"
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Edge / server CPU: run #1 recorded" in s.value and "onnx →" in s.value for s in at.success)
    assert current_point(at).run_id == 1
    assert current_point(at).quantized
    table = at.dataframe[0].value
    assert list(table["runtime"]) == ["ONNX Runtime INT8 (QDQ)"]


def test_every_page_reports_the_same_original_and_n(cifar_asset, cifar_tar, tmp_path, monkeypatch):
    """Model, Prune (both tabs), Quantize and a preset, with the same sidebar settings, all
    measure the original on the same images: same top-1, same n, every run in one history."""
    from compress.history import History
    monkeypatch.setenv("COMPRESSION_LAB_HISTORY", str(tmp_path / "h.sqlite"))
    at = on_page("model", data_path=str(cifar_tar), data_limit=40, prof_runs=5, prof_warmup=1, prune_runs=5,
                 q_runs=5)
    at.button(key="measure").click().run()
    at.switch_page("views/prune.py").run()
    at.button(key="prune_go").click().run()
    at.button(key="un_go").click().run()                       # the Unstructured tab records its run too
    at.switch_page("views/quantize.py").run()
    at.slider(key="q_calib").set_value(512).run()              # more calibration photos: same evaluation images
    at.multiselect(key="q_modes").set_value(["dynamic"]).run()
    at.button(key="q_go").click().run()
    at.switch_page("views/compare.py").run()
    at.button(key="preset_2").click().run()                    # "Keep accuracy"
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = History().runs()
    steps = [tuple(s for s in ("prune", "unstructured", "quantize") if r.recipe.get(s)) for r in reversed(runs)]
    assert steps == [(), ("prune",), ("unstructured",), ("quantize",), ("quantize",)]   # ORT FP32 is not a run
    originals = {(r.before["accuracy"]["top1"], r.before["accuracy"]["n"]) for r in runs}
    assert len(originals) == 1 and next(iter(originals))[1] == 40
    assert all(r.status == "done" and Path(r.artifacts["model"]).is_file() for r in runs)
    assert len(at.dataframe[0].value) == len(runs)             # Compare lists every run


def test_a_history_that_breaks_mid_run_keeps_the_page_result(cifar_asset, cifar_tar, tmp_path, monkeypatch):
    from test_session import break_history_after_start
    hist = tmp_path / "h.sqlite"
    monkeypatch.setenv("COMPRESSION_LAB_HISTORY", str(hist))
    break_history_after_start(monkeypatch)
    at = on_page("prune", data_path=str(cifar_tar), data_limit=30, prune_runs=5)
    at.button(key="prune_go").click().run()
    assert not at.exception and not at.error
    assert any(str(hist) in w.value and "--no-history" in w.value for w in at.warning)
    assert "Top-1 accuracy" in at.table[0].value.index              # the figures are shown
    assert current_point(at) is not None and current_point(at).steps == ["prune"]   # the model is kept


def test_explore_quick_demo_measures_a_ladder_in_the_background_and_the_slider_moves_along_it(cifar_asset):
    at = on_page("explore", data_limit=100)
    assert not at.exception and not at.error
    at.radio(key="ex_objective").set_value("size").run()      # bytes: exact on a busy machine
    at.button(key="ex_demo").click().run()          # the bundled sample's quick demo: shipped variants, measured now
    job = workspace_of(at).job
    assert job is not None and job.name == "explore"
    end = time.time() + 600
    while job.running and time.time() < end:
        time.sleep(1.0)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert job.status == "done", job.error
    rung = at.select_slider(key="ex_rung")
    assert rung.options[0] == "original" and len(rung.options) >= 4, rung.options
    assert job.result.config.demo and all(c.stage == "measured" for c in job.result.candidates)
    assert any("made by `bench/" in m.value for m in at.markdown)      # how each shipped model was made
    chosen = job.result.chosen
    assert chosen is not None and rung.value.startswith(f"#{chosen['run_id']}:")
    assert [m.label for m in at.metric] == ["Top-1", "File size", "Latency (median)"]
    smaller = at.metric[1].value
    rung.set_value("original").run()                       # the slider moves: the original's figures
    assert not at.exception and at.metric[1].value != smaller
    assert len(at.dataframe[0].value) == len(job.result.candidates)
    # a second visit (a new session, no job) opens with the last settings and the same ladder,
    # read from the history, measuring nothing
    again = on_page("explore", data_limit=100)
    assert not again.exception and not again.error
    assert workspace_of(again).job is None and again.radio(key="ex_objective").value == "size"
    assert any("From the history" in i.value for i in again.info)
    assert again.select_slider(key="ex_rung").options == rung.options
