"""What a person waits for in the browser, measured with Debian's chromium (Playwright)
against a fresh dashboard server started by `serve.py`, as `scripts/app.sh` starts it:

1. first page: from opening the app's URL to the Model page's figures (MACs / image) on a
   fresh server, then on a second visit to the same server; and, for comparison in the same
   run, on a fresh server started by `streamlit run app.py` itself;
2. Prune slider: from releasing the channel-ratio slider's thumb (mouse), or a key press on
   it (one step), to the estimate's "Parameters (estimate)" figure showing the new value,
   repeated;
3. Explore (with ``--explore``, on a fresh, private run history): the quick demo from its
   click to the ladder; then the ladder slider, from an arrow key to the new Top-1 figure
   and to the uploaded photo's new answer; then a second visit, from opening /explore to
   the ladder (read from the history).

    .venv/bin/python bench/ui_latency.py [--moves 10] [--explore]

Interactions are timed inside the browser, on its own clock (``performance.now()``): from
the ``pointerup``/``keydown`` event the page receives to the animation frame after the
watched figure's text changed (a MutationObserver), i.e. the frame that shows it. Playwright's
own round trips are not in the figures. The first-page figures are wall-clock from the
script (they include starting the page).

Prints Markdown for docs/autopilot.md. The machine is shared and noisy: the median and the
p90 over the moves are both printed, with the machine's load average.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# Arms the in-browser timer: remembers the time of the next pointerup/keydown, and for each
# watched element (CSS selector + text it contains) the animation frame after its text first
# differs from what it is now. Read back with READ_JS.
ARM_JS = """(watch) => {
  window.__input = null; window.__seen = {};
  const read = (sel, has) => {
    for (const el of document.querySelectorAll(sel)) if (el.innerText.includes(has)) return el.innerText;
    return null;
  };
  const before = {};
  for (const [name, sel, has] of watch) before[name] = read(sel, has);
  const mark = () => { if (window.__input === null) window.__input = performance.now(); };
  document.addEventListener('pointerup', mark, {capture: true, once: true});
  document.addEventListener('keydown', mark, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    for (const [name, sel, has] of watch) {
      if (name in window.__seen) continue;
      const now = read(sel, has);
      if (now !== null && now !== before[name]) {
        window.__seen[name] = 0;
        requestAnimationFrame(() => { window.__seen[name] = performance.now(); });
      }
    }
    if (Object.keys(window.__seen).length === watch.length) obs.disconnect();
  });
  obs.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
READ_JS = "() => [window.__input, window.__seen]"


def _wait_seen(page, names: list[str], timeout_ms: int = 60_000) -> dict[str, float]:
    """Seconds from the input event to each watched figure's frame, read from the browser."""
    cond = " && ".join(f"window.__seen && window.__seen[{n!r}] > 0" for n in names)
    try:
        page.wait_for_function(f"() => {cond}", timeout=timeout_ms, polling=20)
    except Exception:          # noqa: BLE001 - a figure that never changed is reported as missing
        pass
    t_in, seen = page.evaluate(READ_JS)
    return {n: (seen[n] - t_in) / 1000 for n in names if t_in is not None and seen.get(n, 0) > 0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict | None = None, plain: bool = False) -> tuple[subprocess.Popen, str]:
    """A fresh dashboard server, started as the README does (serve.py), or with ``plain``
    by ``streamlit run app.py`` itself (no imports started ahead)."""
    port = _port()
    launch = ["-m", "streamlit", "run", str(ROOT / "app.py")] if plain else [str(ROOT / "serve.py")]
    proc = subprocess.Popen([sys.executable, *launch, "--server.port",
                             str(port), "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("streamlit did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moves", type=int, default=10)
    ap.add_argument("--explore", action="store_true", help="also time the Explore page (runs the quick demo)")
    ap.add_argument("--shots", default=None, help="save a screenshot of the Explore page in this folder")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright
    import tempfile
    env = dict(os.environ, COMPRESSION_LAB_HISTORY=str(Path(tempfile.mkdtemp()) / "history.sqlite"))
    plain_first = first_page_plain(env)
    proc, url = start_server(env)
    load0 = os.getloadavg()[0]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            first = []
            for visit in range(2):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(url, wait_until="commit")
                page.get_by_text("MACs / image").first.wait_for(timeout=120_000)
                first.append(time.perf_counter() - t0)
                page.close()
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/prune")
            metric = page.locator("[data-testid=stMetric]").filter(has_text="Parameters (estimate)")
            metric.wait_for(timeout=120_000)
            slider = page.get_by_role("slider").first
            times = {"mouse": [], "keyboard": []}
            watch = [["estimate", "[data-testid=stMetric]", "Parameters (estimate)"]]
            for i in range(2 * a.moves):
                how = "mouse" if i % 2 == 0 else "keyboard"
                if how == "mouse":           # drag the thumb and release: timed from the release
                    box = slider.bounding_box()
                    track = page.locator("[data-testid=stSlider]").first.bounding_box()
                    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                    to = track["x"] + track["width"] * (0.3 if i % 4 == 0 else 0.55)
                    page.mouse.move(x, y)
                    page.mouse.down()
                    page.mouse.move(to, y, steps=5)
                    page.evaluate(ARM_JS, watch)
                    page.mouse.up()
                else:
                    slider.focus()
                    page.evaluate(ARM_JS, watch)
                    page.keyboard.press("ArrowRight" if i % 4 == 1 else "ArrowLeft")
                seen = _wait_seen(page, ["estimate"])
                times[how] += list(seen.values())
                page.wait_for_timeout(400)
            explore = time_explore(browser, url, a.moves, a.shots) if a.explore else None
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("| what | figure |")
    print("|---|---|")
    print(f"| first page, fresh server (`streamlit run app.py`): URL → Model page figures | {plain_first:.2f} s |")
    print(f"| first page, fresh server (`serve.py`, the README's): URL → Model page figures | {first[0]:.2f} s |")
    print(f"| first page, second visit | {first[1]:.2f} s |")
    for how, label in (("mouse", "slider released (mouse)"), ("keyboard", "arrow key on the slider")):
        print(_row(f"Prune: {label} → new estimate on screen", times[how]))
    if explore:
        print(f"| Explore: quick demo, click → ladder (fresh history; the search itself) | {explore['demo']:.0f} s |")
        for what, label in (("metric", "Top-1 figure"), ("photo", "photo's answer")):
            print(_row(f"Explore: arrow key on the ladder → new {label}", explore[what]))
        print(f"| Explore: second visit, /explore → ladder from the history | {explore['again']:.2f} s |")
    print(f"\nchromium {CHROMIUM}; {os.cpu_count()} CPUs; load average {load0:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; {time.strftime('%Y-%m-%d %H:%M')}")


def first_page_plain(env: dict) -> float:
    """Seconds from opening the URL to the Model page's figures on a fresh server started by
    ``streamlit run app.py`` (for comparison with serve.py, in the same run)."""
    from playwright.sync_api import sync_playwright
    proc, url = start_server(env, plain=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url, wait_until="commit")
            page.get_by_text("MACs / image").first.wait_for(timeout=120_000)
            secs = time.perf_counter() - t0
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return secs


def _row(what: str, seconds: list[float]) -> str:
    """A table row: the median and p90 of the timings, in ms."""
    ms = sorted(1000 * t for t in seconds)
    if not ms:
        return f"| {what} | not seen within 60 s |"
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"| {what}, median / p90 of {len(ms)} | {statistics.median(ms):.0f} / {p90:.0f} ms |"


def time_explore(browser, url: str, moves: int, shots: str | None = None) -> dict:
    from PIL import Image
    from skimage import data
    photo = Path(tempfile_dir()) / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(url + "/explore")
    page.get_by_role("button", name="Quick demo on the bundled sample").click()
    t0 = time.perf_counter()
    rung = page.locator("[data-testid=stSlider]").filter(has_text="From the most accurate")
    rung.wait_for(timeout=1_800_000)
    demo = time.perf_counter() - t0
    page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(str(photo))
    answer = page.get_by_text("This model:")
    answer.wait_for(timeout=120_000)
    out = {"demo": demo, "metric": [], "photo": []}
    handle = rung.get_by_role("slider")
    watch = [["metric", "[data-testid=stMetric]", "Top-1"],
             ["photo", "[data-testid=stMarkdownContainer]", "This model:"]]
    for i in range(moves):
        handle.focus()
        key = "ArrowLeft" if (i // 2) % 2 == 0 else "ArrowRight"     # back and forth along the ladder
        page.evaluate(ARM_JS, watch)
        page.keyboard.press(key)
        # a rung whose answer is the same as the last one's does not change the text: only the
        # figures that changed are counted, and a move where nothing changed is skipped
        seen = _wait_seen(page, ["metric", "photo"], timeout_ms=10_000)
        for name, secs in seen.items():
            out[name].append(secs)
        page.wait_for_timeout(400)
    if shots:
        page.screenshot(path=str(Path(shots) / "explore-demo.png"), full_page=True)
    page.close()
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    t0 = time.perf_counter()
    page.goto(url + "/explore", wait_until="commit")       # opens with the last search's settings
    page.locator("[data-testid=stSlider]").filter(has_text="From the most accurate").wait_for(timeout=120_000)
    out["again"] = time.perf_counter() - t0
    if shots:
        page.screenshot(path=str(Path(shots) / "explore-second-visit.png"), full_page=True)
    page.close()
    return out


def tempfile_dir() -> str:
    import tempfile
    return tempfile.mkdtemp()


if __name__ == "__main__":
    main()
