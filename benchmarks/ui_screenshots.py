"""Screenshots of the MLflow pages ablate's URLs open (docs/img/ui_runs.png, ui_trial.png).

Serves the store with ``ablate ui``, opens the newest search's view (its trials, sorted by the
objective) and its best trial's charts in headless Chromium (Debian's chromium and
chromium-driver, Selenium from the ``browser`` extra), closes MLflow's assistant panel (it opens
on a browser's first visit) and saves both pages.

    python benchmarks/ui_screenshots.py --tracking-uri sqlite:///PATH/mlflow.db --out docs/img
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from ablate import names
from ablate.tracking import Tracker, run_url, runs_url

CLOSE_ASSISTANT = """
const close = document.querySelector('[data-component-id="mlflow.assistant.chat_panel.close"]');
if (close) close.click();
return Boolean(close);
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(width: int, height: int, profile: str) -> webdriver.Chrome:
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", f"--window-size={width},{height}",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def capture(driver: webdriver.Chrome, url: str, out: Path, settle: float) -> None:
    driver.get(url)
    time.sleep(settle)
    if driver.execute_script(CLOSE_ASSISTANT):
        time.sleep(1.5)
    driver.save_screenshot(str(out))
    print(f"{out}: {url}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--settle", type=float, default=8.0, help="seconds a page gets to render")
    args = p.parse_args()
    tracker = Tracker(args.tracking_uri)
    search = tracker.client.search_runs(
        [e.experiment_id for e in tracker.client.search_experiments()],
        filter_string=f"tags.`{names.KIND}` = '{names.KIND_SEARCH}'",
        order_by=["attributes.start_time DESC"], max_results=1)[0]
    experiment, parent = search.info.experiment_id, search.info.run_id
    best = tracker.find_run(tracker.client.get_experiment(experiment).name,
                            {names.PARENT_RUN: parent, names.BEST: "true"})
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri",
                           args.tracking_uri, "--port", str(port)], stdout=subprocess.PIPE,
                          text=True, start_new_session=True)
    try:
        line = ui.stdout.readline()
        base = re.search(r"(http://[^/]+)", line).group(1)
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            driver = browser(args.width, args.height, profile)
            try:
                capture(driver, runs_url(base, experiment, parent), args.out / "ui_runs.png",
                        args.settle)
                if best is not None:
                    capture(driver, run_url(base, experiment, best),
                            args.out / "ui_trial.png", args.settle)
            finally:
                driver.quit()
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
