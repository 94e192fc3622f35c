"""AppTest: every page renders without an exception, with its widgets and figures."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


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


def test_bad_dataset_path_is_a_message_not_a_crash(tmp_path):
    at = fresh(data_path=str(tmp_path), prof_runs=5, prof_warmup=1)
    at.button(key="measure").click().run()
    assert not at.exception
    assert any("No images found" in e.value for e in at.error)
    at.switch_page("pages/classify.py").run()      # the session stays usable
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
    at.switch_page("pages/classify.py").run()
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
