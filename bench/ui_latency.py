"""What a person waits for in the browser, measured with Debian's chromium (Playwright)
against a fresh `streamlit run`:

1. first page: from opening the app's URL to the Model page's figures (MACs / image) on a
   fresh server, then on a second visit to the same server;
2. Prune slider: from a key press on the channel-ratio slider (one step) to the estimate's
   "Parameters (estimate)" figure showing the new value, repeated.

    .venv/bin/python bench/ui_latency.py [--model resnet18_cifar10] [--moves 10]

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


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                             str(port), "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright
    proc, url = start_server()
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
            for i in range(2 * a.moves):
                how = "mouse" if i % 2 == 0 else "keyboard"
                before = metric.inner_text()
                if how == "mouse":           # drag the thumb and release: timed from the release
                    box = slider.bounding_box()
                    track = page.locator("[data-testid=stSlider]").first.bounding_box()
                    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                    to = track["x"] + track["width"] * (0.3 if i % 4 == 0 else 0.55)
                    page.mouse.move(x, y)
                    page.mouse.down()
                    page.mouse.move(to, y, steps=5)
                    t0 = time.perf_counter()
                    page.mouse.up()
                else:
                    slider.focus()
                    t0 = time.perf_counter()
                    page.keyboard.press("ArrowRight" if i % 4 == 1 else "ArrowLeft")
                deadline = time.time() + 60
                while metric.inner_text() == before and time.time() < deadline:
                    page.wait_for_timeout(5)
                times[how].append(time.perf_counter() - t0)
                page.wait_for_timeout(400)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("| what | figure |")
    print("|---|---|")
    print(f"| first page, fresh server: URL → Model page figures | {first[0]:.2f} s |")
    print(f"| first page, second visit | {first[1]:.2f} s |")
    for how, label in (("mouse", "slider released (mouse)"), ("keyboard", "arrow key on the slider")):
        ms = sorted(1000 * t for t in times[how])
        p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        print(f"| Prune: {label} → new estimate on screen, median / p90 of {len(ms)} | "
              f"{statistics.median(ms):.0f} / {p90:.0f} ms |")
    print(f"\nchromium {CHROMIUM}; {os.cpu_count()} CPUs; load average {load0:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
