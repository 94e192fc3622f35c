"""One real-browser test: Debian's chromium, driven by Playwright, against the dashboard started by
`serve.py` (`streamlit run app.py`), as the README starts it."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = dict(os.environ)
    from conftest import CIFAR_TAR
    if CIFAR_TAR.is_file():                  # the sidebar's default images: accuracy and calibration
        env["COMPRESSION_LAB_DATA"] = str(CIFAR_TAR)
    # started as the README's scripts/app.sh starts it: serve.py (streamlit run app.py with the
    # engine's imports begun while the server comes up)
    proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"),
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.headless", "true"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def _save(tmp_path, *names):
    if os.environ.get("SCREENSHOT_DIR"):
        for name in names:
            shutil.copy(tmp_path / name, os.path.join(os.environ["SCREENSHOT_DIR"], name))


def _open_and_prune(browser, server: str, height: int):
    """A new page opened straight at /prune (a bookmarked URL), pruned with the defaults."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(server + "/prune", wait_until="networkidle")
    page.get_by_text("Parameters (estimate)").wait_for(timeout=120_000)
    page.get_by_role("button", name="Prune", exact=True).click()
    page.get_by_text("Before and after").wait_for(timeout=300_000)
    return page


def _playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it as root)")
    return pytest.importorskip("playwright.sync_api")


def test_prune_quantize_compare_download_onnx_and_classify(server, cifar_asset, cifar_tar, chelsea_png, tmp_path):
    """Runs first (file order), so the server has served nothing yet: a bookmarked page URL
    must still get app.py's navigation and sidebar. Then the whole path in one session:
    prune, quantize the pruned model to ONNX Runtime INT8, see both runs in Compare,
    download the ONNX file (and run it), and classify a photo with both models."""
    pw = _playwright()
    with pw.sync_playwright() as p:
        browser = _browser(p)
        page = _open_and_prune(browser, server, height=3000)
        assert page.locator("[data-testid=stSidebar]").get_by_text("Compression Lab").is_visible()
        page.get_by_text("Channel importance per group").wait_for(timeout=60_000)
        page.get_by_text("Output channels per layer").wait_for(timeout=60_000)
        table = page.locator("[data-testid=stTable]").first.inner_text()
        page.screenshot(path=str(tmp_path / "prune.png"), full_page=True)
        assert "Latency, median" in table and "MACs / image" in table and "Top-1 accuracy" in table

        page.get_by_role("link", name="Quantize").click()
        main = page.locator("[data-testid=stMain]")
        main.get_by_text("current compressed model: channel-pruned").click()
        page.get_by_role("button", name="Quantize and measure").click()
        main.get_by_text("Results for the current compressed model").wait_for(timeout=400_000)
        page.locator("[data-testid=stSelectbox]").filter(has_text="Make one of them").click()
        page.get_by_role("option", name="ONNX Runtime INT8 (QDQ)").click()
        page.get_by_role("button", name="Use this model").click()
        page.get_by_text("The current compressed model is now").wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "quantize.png"), full_page=True)

        page.get_by_role("link", name="Compare").click()
        page.get_by_text("Accuracy against speed").wait_for(timeout=120_000)
        plain = main.get_by_text(re.compile(r"× smaller, .*validation images")).first.inner_text()
        # what the pruned + INT8 model forgets: the chart, the heatmap and flipped photos
        main.get_by_text("Was right, now wrong").wait_for(timeout=60_000)
        changed = main.get_by_text(re.compile(r"photos? became right, \d+ photos? became wrong")).first.inner_text()
        main.locator("[data-testid=stImage] img").first.wait_for(timeout=60_000)
        flipped = main.locator("[data-testid=stImage] img").count()
        charts_shown = main.locator(".js-plotly-plot").count()
        page.get_by_role("button", name="Export", exact=True).click()
        page.get_by_role("button", name="Download onnx").wait_for(timeout=300_000)
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        with page.expect_download() as dl:
            page.get_by_role("button", name="Download onnx").click()
        onnx_path = tmp_path / "downloaded.onnx"
        dl.value.save_as(onnx_path)

        page.get_by_role("link", name="Classify").click()
        page.get_by_text("Classify a photo").wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(chelsea_png))
        page.get_by_text("for this photo on").nth(1).wait_for(timeout=120_000)
        main.get_by_text(re.compile("Both models say|The two models disagree")).wait_for(timeout=60_000)
        # where each model looks: the INT8 model has no gradients, so both get occlusion maps
        main.get_by_text("Where does each model look?").click()
        main.get_by_text("Similarity of the two maps").wait_for(timeout=120_000)
        maps = main.locator("[data-testid=stImage]").filter(has_text="where it looks for").count()
        main = page.locator("[data-testid=stMain]").inner_text()
        page.screenshot(path=str(tmp_path / "classify2.png"), full_page=True)
        _save(tmp_path, "prune.png", "quantize.png", "compare.png", "classify2.png")
        browser.close()
    assert "points" in plain and "validation images" in plain
    assert "Most of the loss is in" in changed and flipped >= 1 and charts_shown >= 3   # pareto, deltas, heatmap
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert out.shape == (2, 10)
    assert "Original" in main and "Compressed: channel-pruned" in main
    assert ("Both models say" in main) or ("The two models disagree" in main)
    assert maps == 2 and "occlusion (gradient-free)" in main and "they look at" in main


def test_open_switch_pages_upload_photo_and_read_prediction(server, chelsea_png, tmp_path):
    pw = _playwright()
    with pw.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="networkidle")
        page.get_by_text("MACs / image").wait_for(timeout=120_000)
        # pick the ImageNet model in the sidebar: its 1,000 classes name the cat's breed
        page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first.click()
        page.get_by_role("option", name="efficientnet_lite0", exact=True).click()
        page.get_by_text("Model: efficientnet_lite0").wait_for(timeout=120_000)
        page.get_by_text("4.65 M").first.wait_for(timeout=120_000)     # efficientnet_lite0's parameters
        page.get_by_text("MACs per layer").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1_000)
        page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
        page.get_by_role("link", name="Classify").click()
        page.get_by_text("Classify a photo").wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(chelsea_png))
        page.get_by_text("for this photo on").first.wait_for(timeout=120_000)
        text = page.locator("[data-testid=stMain]").inner_text()
        page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
        _save(tmp_path, "model.png", "classify.png")
        browser.close()
    # scikit-image's chelsea is a tabby; ImageNet's cat classes: tabby, tiger cat, Egyptian cat, ...
    assert any(c in text for c in ("tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese")), text


def test_training_survives_two_reloads_and_lands_in_compare(server, cifar_asset, cifar_tar, tmp_path):
    """Prune → Distill (Start) → reload: progress and Cancel are back. Cancel, Start again,
    wait for it → reload: the recovered model is the current one and Compare lists its run."""
    pw = _playwright()
    with pw.sync_playwright() as p:
        browser = _browser(p)
        page = _open_and_prune(browser, server, height=2200)
        assert "s=" in page.url                                  # the session token lives in the URL

        page.get_by_role("link", name="Distill").click()
        page.get_by_text("Estimated time").wait_for(timeout=120_000)
        page.screenshot(path=str(tmp_path / "distill.png"), full_page=True)
        for label, value in (("Epochs", "50"), ("Use at most N training photos (0 = all)", "4000")):
            box = page.get_by_role("spinbutton", name=label, exact=True)
            box.fill(value)
            box.press("Enter")
        page.wait_for_timeout(1_500)
        page.get_by_role("button", name="Start", exact=True).click()
        page.get_by_role("button", name="Cancel").wait_for(timeout=60_000)

        page.reload(wait_until="networkidle")                    # reload 1: the job is still there
        page.get_by_role("button", name="Cancel").wait_for(timeout=60_000)
        page.get_by_text(re.compile("Running for")).wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "distill-reattached.png"), full_page=True)
        page.get_by_role("button", name="Cancel").click()
        page.get_by_text(re.compile(r"Cancelled \(")).wait_for(timeout=120_000)

        for label, value in (("Epochs", "1"), ("Use at most N training photos (0 = all)", "256")):
            box = page.get_by_role("spinbutton", name=label, exact=True)
            box.fill(value)
            box.press("Enter")
        page.wait_for_timeout(1_500)
        page.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text(re.compile("Recovered in .* recorded as run #")).wait_for(timeout=400_000)
        run_id = re.search(r"run #(\d+)", page.get_by_text(re.compile("recorded as run #")).inner_text()).group(1)

        page.reload(wait_until="networkidle")                    # reload 2: the result is the current model
        sidebar = page.locator("[data-testid=stSidebar]")
        sidebar.get_by_text(re.compile(f"distilled 1 epoch.*run #{run_id}")).wait_for(timeout=60_000)
        page.get_by_role("link", name="Compare").click()
        page.get_by_text("All runs").wait_for(timeout=120_000)
        page.wait_for_timeout(1_000)
        page.screenshot(path=str(tmp_path / "compare-after-reload.png"), full_page=True)
        table = page.locator("[data-testid=stDataFrame]").first
        table.wait_for(timeout=30_000)
        _save(tmp_path, "distill.png", "distill-reattached.png", "compare-after-reload.png")
        browser.close()
    from compress.history import History
    run = History().get(int(run_id))
    assert run.status == "done" and run.recipe["recover"]["epochs"] == 1
    assert run.artifacts["model"].endswith("model.pt")


def test_results_are_marked_stale_or_gone_when_the_sidebar_changes(server, cifar_asset, cifar_tar, tmp_path):
    """Measure on the Model page and prune; change the sidebar's image limit: both pages say
    their results are stale. Switch the model: no page shows the old model's results."""
    pw = _playwright()
    with pw.sync_playwright() as p:
        browser = _browser(p)
        page = _open_and_prune(browser, server, height=2400)
        main = page.locator("[data-testid=stMain]")
        page.get_by_role("link", name="Model").click()
        page.get_by_role("button", name="Measure latency and accuracy").click()
        main.get_by_text("Latency is timed here").wait_for(timeout=60_000)
        page.wait_for_function("document.querySelectorAll('[data-testid=stMain] [data-testid=stDataFrame]')"
                               ".length >= 2", timeout=300_000)      # the measured table above the layers

        limit = page.get_by_role("spinbutton", name="Evaluate on at most N images")
        limit.fill("100")
        limit.press("Enter")
        main.get_by_text(re.compile("Stale: the results below were measured on")).wait_for(timeout=60_000)
        page.get_by_role("link", name="Prune").click()
        main.get_by_text("Before and after").wait_for(timeout=60_000)
        main.get_by_text(re.compile("Stale: the results below were measured on")).wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "prune-stale.png"), full_page=True)

        page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first.click()
        page.get_by_role("option", name="efficientnet_lite0", exact=True).click()
        page.wait_for_timeout(2_000)
        seen = {}
        for link, ready in (("Model", "Model: efficientnet_lite0"), ("Prune", "Parameters (estimate)"),
                            ("Quantize", "Modes to measure"), ("Compare", "Export the current compressed model")):
            page.get_by_role("link", name=link).click()
            main.get_by_text(ready).first.wait_for(timeout=120_000)
            page.wait_for_timeout(1_000)
            seen[link] = main.inner_text()
        page.screenshot(path=str(tmp_path / "compare-after-switch.png"), full_page=True)
        _save(tmp_path, "prune-stale.png", "compare-after-switch.png")
        browser.close()
    for link, text in seen.items():
        assert "Stale" not in text, link
    assert "Press Measure" in seen["Model"]
    assert "Before and after" not in seen["Prune"]
    assert "Results for the" not in seen["Quantize"]
    assert "Current compressed model:" not in seen["Compare"]       # resnet18_cifar10's pruned model is not offered


def test_explore_budget_job_ladder_slider_and_photo(server, cifar_asset, chelsea_png, tmp_path):
    """Explore: an accuracy budget starts the autopilot, the ladder's slider moves, a photo is
    answered by the selected model next to the original. The settings match the AppTest of
    Explore (bundled sample, 100 images, ratio 0.5, size), so when it ran first in this
    session the search reuses its runs from the shared history."""
    pw = _playwright()
    with pw.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(server + "/explore", wait_until="networkidle")
        main = page.locator("[data-testid=stMain]")
        sidebar = page.locator("[data-testid=stSidebar]")
        path = sidebar.get_by_role("textbox").first                  # the data path: empty = bundled sample
        path.fill("")
        path.press("Enter")
        limit = page.get_by_role("spinbutton", name="Evaluate on at most N images")
        limit.fill("100")
        limit.press("Enter")
        main.get_by_text("How many points of top-1 may it lose?").wait_for(timeout=120_000)
        main.get_by_text("size", exact=True).click()
        main.get_by_text("Search settings").click()
        for r in ("0.2", "0.35", "0.65"):                              # keep ratio 0.5 only
            remove = main.get_by_role("button", name=f"Remove {r}", exact=True)
            try:
                remove.wait_for(timeout=10_000)
            except pw.TimeoutError:               # a rerun still in flight redrew the expander closed
                main.get_by_text("Search settings").click()
                remove.wait_for(timeout=30_000)
            remove.click()
            remove.wait_for(state="detached", timeout=30_000)          # the rerun took it in
        assert main.locator("[data-testid=stMultiSelect]").inner_text().split("\n")[-1] == "0.5"
        screen = page.get_by_role("spinbutton", name="Screen each candidate on this many images first")
        screen.fill("50")
        screen.press("Enter")
        slider = main.get_by_role("slider").first                      # the budget: 1.0 → 2.0 points
        slider.focus()
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        page.wait_for_timeout(1_000)
        main.get_by_role("button", name="Find the models").click()
        main.locator("[data-testid=stMetric]").filter(has_text="File size").wait_for(timeout=600_000)
        rung = main.get_by_role("slider").nth(1)
        chosen = main.locator("[data-testid=stMetric]").filter(has_text="File size").inner_text()
        rung.focus()
        page.keyboard.press("Home")                                    # slide to the original
        main.locator("[data-testid=stMetric]").filter(has_text="File size").filter(
            has_not_text=chosen.split("\n")[1]).wait_for(timeout=30_000)
        rung.focus()
        page.keyboard.press("End")                                     # the smallest
        page.wait_for_timeout(1_500)
        page.locator("input[type=file]").set_input_files(str(chelsea_png))
        main.get_by_text("This model:").wait_for(timeout=120_000)
        text = main.inner_text()
        page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
        _save(tmp_path, "explore.png")
        browser.close()
    assert "Original: " in text and "This model: " in text and "Top-1" in text
    assert re.search(r"×\d+(\.\d)? smaller", text)
