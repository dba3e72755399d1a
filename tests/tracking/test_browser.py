"""The pages ablate's URLs open, rendered by a real browser (Debian's Chromium, driven by
Selenium through Debian's chromedriver): after a real search (local Ray, SQLite MLflow,
digits), `ablate ui` serves the store and the printed URLs must show the answer without a
click: each trial's objective and accuracies (percent) in the runs table, sorted by the
objective, and a trial's validation curves on the first screen of its page.

Skipped without Chromium, chromedriver or selenium; CI sets ABLATE_REQUIRE_BROWSER=1 after
installing them (.ci/run), so there they fail instead. `ABLATE_SCREENSHOTS=DIR` also saves
the screenshots; docs/img/ui_*.png come from benchmarks/ui_screenshots.py (tested last here).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ablate import names
from tests.helpers import REPO, SPEC, free_port, store, write

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1920, 1080  # the first screen
PAGE_TIMEOUT_S = 60.0


def browser_installed() -> bool:
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[browser]')")
    if missing and os.environ.get("ABLATE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests need {', '.join(missing)}")
    return not missing


pytestmark = pytest.mark.skipif(not browser_installed(),
                                reason="Chromium, chromedriver or selenium is not installed")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A 3-trial search and `ablate ui` on its store: the URLs both printed, and the store."""
    workdir = tmp_path_factory.mktemp("browser")
    spec = copy.deepcopy(SPEC) | {"num_samples": 3, "scheduler": {"name": "none"}}
    spec["base"]["optim"]["epochs"] = 2
    env = {**os.environ, "PYTHONPATH": str(REPO), "ABLATE_CACHE": str(workdir / "cache")}
    out = subprocess.run([sys.executable, "-m", "ablate.cli", "search",
                          str(write(workdir / "s.yaml", spec)), "--heartbeat", "0"],
                         capture_output=True, text=True, cwd=workdir, timeout=600, env=env,
                         check=True).stdout
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "ablate.cli", "ui", "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          cwd=workdir, env=env, start_new_session=True)
    try:
        ui_line = ui.stdout.readline()  # printed once the server answers
        browse = re.search(r"browse: ablate ui, then (\S+)", out)
        best = re.search(r"best trial's curves: (\S+)", out)
        assert browse and best and "MLflow UI for" in ui_line, (out, ui_line)

        def served(url: str) -> str:  # the printed URL, on the port this test chose
            return url.replace("127.0.0.1:5000", f"127.0.0.1:{port}")

        yield {"workdir": workdir, "search_url": served(browse.group(1)),
               "ui_url": re.search(r"(http://\S+)", ui_line).group(1),
               "best_url": served(best.group(1)), "ui": ui}
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        ui.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"ablate-chromium-{os.getpid()}"
    # Without the background-networking flags Chromium keeps dialling Google on a closed network.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", f"--window-size={WIDTH},{HEIGHT}",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(browser: Any, script: str, what: str) -> Any:
    """Poll ``script`` (JavaScript returning a value) until it is truthy."""
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"the page never showed {what}: {browser.current_url}\n"
                         + browser.find_element("tag name", "body").text[:2000])


ROWS = """
const rows = {};
for (const row of document.querySelectorAll('.ag-row[row-id]')) {
  const cells = rows[row.getAttribute('row-id')] ||= {index: +row.getAttribute('row-index')};
  for (const cell of row.querySelectorAll('.ag-cell[col-id]')) {
    const r = cell.getBoundingClientRect();
    if (r.width > 0 && r.right <= window.innerWidth) {  // rendered on the first screen
      cells[cell.getAttribute('col-id')] = cell.innerText.trim();
    }
  }
}
return Object.keys(rows).length ? rows : null;
"""


def shot(browser: Any, name: str) -> None:
    folder = os.environ.get("ABLATE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def trials(workdir: Path) -> dict[str, dict[str, float]]:
    client, exp = store(workdir)
    return {r.info.run_id: r.data.metrics for r in client.search_runs([exp])
            if r.data.tags.get(names.KIND) == names.KIND_TRIAL}


def check_table(browser: Any, url: str, workdir: Path, name: str) -> None:
    browser.get(url)
    want = trials(workdir)
    column = f"metrics.`{names.PCT_OBJECTIVE}`"
    rows = wait_for(browser, f"const r = (() => {{{ROWS}}})(); return r && Object.keys(r)"
                    f".length === {len(want)} && Object.values(r).every(c => c['{column}']) "
                    "? r : null", f"{len(want)} trial rows with their objective")
    time.sleep(1)  # the columns' last layout pass
    rows = browser.execute_script(ROWS)
    shot(browser, name)
    assert set(rows) == set(want)  # the trials, no parent run
    for run_id, metrics in want.items():
        shown = rows[run_id]
        for key in names.TABLE_METRICS:  # the objective, val/test clean, robust, W: percent
            expected = metrics.get(key)
            text = shown.get(f"metrics.`{key}`")
            assert text is not None, f"column {key} not on the first screen: {shown}"
            if expected is None:
                assert text == "-", (key, text)
            else:
                assert float(text) == pytest.approx(expected, abs=1e-9), (key, text)
                assert expected == pytest.approx(100 * metrics[
                    next(k for k, v in names.PERCENT.items() if v == key)], abs=0.005)
    order = sorted(rows, key=lambda r: rows[r]["index"])  # as displayed: best first
    objectives = [want[r][names.PCT_OBJECTIVE] for r in order]
    assert objectives == sorted(objectives, reverse=True)
    tested = [r for r in want if "pct/test_w" in want[r]]
    assert len(tested) == 1  # the best trial's W accuracy on the test split is in its row
    assert float(rows[tested[0]]["metrics.`pct/test_w`"]) == want[tested[0]]["pct/test_w"]


def test_the_searchs_url_shows_each_trials_numbers(searched: dict[str, Any],
                                                    browser: Any) -> None:
    check_table(browser, searched["search_url"], searched["workdir"], "search")


def test_the_ui_url_shows_each_trials_numbers(searched: dict[str, Any], browser: Any) -> None:
    assert "viewStateShareKey=ablate" in searched["ui_url"]
    check_table(browser, searched["ui_url"], searched["workdir"], "ui")


def test_a_trial_link_shows_its_val_curves_on_the_first_screen(searched: dict[str, Any],
                                                               browser: Any) -> None:
    browser.get(searched["best_url"])
    titles = [names.PERCENT[k].removeprefix(names.PCT)
              for k in (names.VAL_CLEAN, names.VAL_ROBUST, names.VAL_W)]
    found = wait_for(browser, f"""
        const want = {titles};
        const seen = [...document.querySelectorAll('*')].filter(e =>
            e.children.length === 0 && want.includes(e.textContent.trim()) &&
            e.getBoundingClientRect().bottom < window.innerHeight &&
            e.getBoundingClientRect().height > 0);
        const names = new Set(seen.map(e => e.textContent.trim()));
        // A drawn line per chart: plotly's traces, on the first screen.
        const lines = [...document.querySelectorAll('.js-line, path.js-line')].filter(e =>
            e.getBoundingClientRect().top < window.innerHeight);
        return names.size === want.length && lines.length >= want.length ? [...names] : null;
        """, f"the charts {titles} with their curves on the first screen")
    shot(browser, "trial")
    assert sorted(found) == sorted(titles)


def test_the_screenshot_script_saves_both_pages(searched: dict[str, Any],
                                                tmp_path: Path) -> None:
    """benchmarks/ui_screenshots.py (how docs/img/ui_*.png are made) on the search's store."""
    out = tmp_path / "img"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "ui_screenshots.py"),
                    "--tracking-uri", f"sqlite:///{searched['workdir'] / 'mlflow.db'}",
                    "--out", str(out), "--settle", "4"], check=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    for name in ("ui_runs.png", "ui_trial.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
