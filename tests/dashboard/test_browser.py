"""The dashboard in a real browser: `twin dashboard` on a free port against the simulated 1,024-GPU store,
driven by Playwright through Debian's Chromium.

Setup installs the Debian packages `chromium` and `chromium-driver` when /usr/bin/chromium is missing
(apt-get, as root); the test is skipped, with the reason, only where they cannot be installed. Every page
is opened from the sidebar, checked for error text (a Streamlit exception box, an error box, "Traceback"),
and screenshotted into test-artifacts/dashboard/; the live page must refresh by itself (its fragment), and
on the what-if page the ZeRO stage is changed and the memory shown must change.
`TWIN_UPDATE_SCREENSHOTS=1` also copies the screenshots, reduced to 128 colours, to docs/screenshots/ for
the README.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.dashboard.conftest import DemoStore

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO: Final = Path(__file__).resolve().parents[2]
ARTIFACTS: Final = REPO / "test-artifacts" / "dashboard"
DOCS_SCREENSHOTS: Final = REPO / "docs" / "screenshots"
CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# A tall window: a whole page (heatmap, charts, tables) in one screenshot.
VIEWPORT: Final = {"width": 1400, "height": 2400}
APT_TIMEOUT_S: Final = 900.0
SERVER_START_TIMEOUT_S: Final = 60.0
PAGE_TIMEOUT_MS: Final = 60_000
SCREENSHOT_COLOURS: Final = 128
# The live page refreshes itself this often in the test (its fragment reruns with no user action).
REFRESH_S: Final = 2
DROPDOWN_ATTEMPTS: Final = 3
DROPDOWN_TIMEOUT_MS: Final = 5_000
# Page title in the sidebar → (heading, text that appears once the page has fully rendered).
PAGES: Final = {
    "Live cluster": ("Live cluster", "Step times of job"),
    "What-if": ("What-if", "memory per GPU"),
    "Layout sweep": ("Layout sweep", "Memory per GPU across ZeRO stages"),
    "Forecasts": ("Forecasts", "Simulation projection of the live jobs"),
}


def _install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available (not a Debian-based system)"
    if os.geteuid() != 0:
        return "not root: cannot apt-get install chromium chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
    )
    if result.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run(
            ["apt-get", "update"], env=env, capture_output=True, timeout=APT_TIMEOUT_S, check=False
        )
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
        )
    if result.returncode != 0 or not Path(CHROMIUM).exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get install chromium chromium-driver failed ({result.returncode}): {tail[0]}"
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        why = _install_chromium()
        if why is not None:
            pytest.skip(f"Chromium is not installed and cannot be: {why}")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dashboard_url(demo_store: DemoStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`twin dashboard` serving the demo store on a free localhost port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "dashboard.log"
    command = [sys.executable, "-m", "twin.cli", "dashboard", "--db", demo_store.url, "--port", str(port)]
    command += ["--sim-spec", demo_store.spec_path, "--stale-after-s", "3600", "--refresh-s", str(REFRESH_S)]
    with log.open("w") as out:
        server = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start (exit {server.poll()}):\n{log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _save_for_docs(shots: list[Path]) -> None:
    from PIL import Image

    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        with Image.open(shot) as image:
            small = image.convert("RGB").quantize(colors=SCREENSHOT_COLOURS)
            small.save(DOCS_SCREENSHOTS / shot.name, optimize=True)


def test_every_page_in_chromium(chromium: str, dashboard_url: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra's playwright is needed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(dashboard_url)
            for title, (heading, ready) in PAGES.items():
                shot = ARTIFACTS / f"{title.lower().replace(' ', '-')}.png"
                try:
                    _open_page(page, title, heading, ready)
                    if title == "Live cluster":
                        _wait_for_refresh(page)
                    if title == "What-if":
                        _change_zero_stage(page)
                except Exception:  # keep what the browser showed, then fail with the original error
                    page.screenshot(path=str(ARTIFACTS / f"failed-{shot.name}"), full_page=True)
                    raise
                page.screenshot(path=str(shot), full_page=True)
                shots.append(shot)
        finally:
            browser.close()
    assert all(s.stat().st_size > 10_000 for s in shots)
    if os.environ.get("TWIN_UPDATE_SCREENSHOTS") == "1":
        _save_for_docs(shots)


def _open_page(page: Page, title: str, heading: str, ready: str) -> None:
    """Click `title` in the sidebar, wait until the script has finished, check for error text."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).click()
    page.get_by_role("heading", name=heading, exact=True).wait_for()
    page.get_by_text(ready, exact=False).first.wait_for()
    # Streamlit shows its status widget ("Running…") while the script runs.
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    assert page.locator('[data-testid="stException"]').count() == 0, f"{title}: exception shown"
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0, f"{title}: error shown"
    assert "Traceback" not in page.locator("body").inner_text(), f"{title}: traceback shown"


def _wait_for_refresh(page: Page) -> None:
    """The live fragment reruns on its own: the age of the newest sample moves on ("4 s ago" → "6 s ago")."""
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Newest sample")
    value = metric.locator('[data-testid="stMetricValue"]')
    before = value.inner_text()
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[value.element_handle(), before])
    assert value.inner_text().endswith("ago")
    assert page.locator('[data-testid="stException"]').count() == 0, "live refresh raised"


def _playwright_timeout() -> type[Exception]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    return PlaywrightTimeout


def _change_zero_stage(page: Page) -> None:
    """ZeRO-1 → ZeRO-3 on scenario A: the memory per GPU shown must drop."""
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="memory per GPU")
    value = metric.locator('[data-testid="stMetricValue"]')
    before = value.inner_text()
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="ZeRO stage").first
    option = page.get_by_role("option", name="3", exact=True)
    for _ in range(DROPDOWN_ATTEMPTS):  # a click during a rerun's redraw may not open the dropdown
        box.click()
        try:
            option.wait_for(timeout=DROPDOWN_TIMEOUT_MS)
            break
        except _playwright_timeout():
            page.keyboard.press("Escape")
    option.click()
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[value.element_handle(), before])
    after = value.inner_text()
    assert float(after.split()[0]) < float(before.split()[0]), (before, after)
