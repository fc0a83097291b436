"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

A call made from Python must appear on the open page, live, without a reload. Set
``STRATUS_SCREENSHOTS=DIR`` to keep the page's screenshot (``docs/img/dashboard.png``
is made that way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratus
from gateway_server import Served
from stratus.gateway.app import GatewayConfig

pytestmark = pytest.mark.system

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# This machine's network is closed: without these, Chromium keeps trying to reach
# Google's services at start (docs: the env skill's "Known to work").
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with stratus.connect(data_dir=tmp_path_factory.mktemp("ui"), executors=2) as app:

        @app.function
        def resize(ctx: Any, width: int) -> int:
            print(f"resizing to {width}")
            return width // 2

        @app.function
        def flaky(ctx: Any) -> None:
            raise ValueError("not today")

        served = Served(app, GatewayConfig())
        try:
            yield served
        finally:
            served.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_a_call_made_from_python_appears_on_the_open_page(
    gw: Served, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{gw.url}/ui")
    page.fill("#token", gw.token)
    page.click("button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")

    future = gw.app.lookup("resize").remote(640)
    assert future.result(timeout=30) == 320
    row = f'#recent tr[data-invocation="{future.invocation_id}"]'
    page.wait_for_selector(row, timeout=20_000)  # live: pushed, not reloaded
    assert "ok" in page.inner_text(row)
    page.wait_for_selector('#functions tr[data-function="resize"]')

    with pytest.raises(stratus.RemoteError):
        gw.app.lookup("flaky").remote().result(timeout=30)
    page.wait_for_selector('#recent tr[data-function="flaky"] td.bad')

    page.click(row)  # its logs
    page.wait_for_function(
        "document.getElementById('logs').textContent.includes('resizing to 640')",
        timeout=20_000,
    )
    assert "resize" in page.inner_text("#usage")
    assert "default" in page.inner_text("#tenants")
    shots = Path(os.environ.get("STRATUS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    page.close()


def test_a_wrong_token_is_refused_and_shows_no_data(gw: Served, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{gw.url}/ui")
    page.fill("#token", "st_" + "x" * 40)
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('login-error').textContent.includes('refused')")
    assert page.is_hidden("#app")
    page.close()
