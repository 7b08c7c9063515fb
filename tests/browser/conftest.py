"""A real headless Chromium (Debian's package) driven by Playwright. A missing browser FAILS the
tests: `.ci/run` and `scripts/test.sh` install it (`bash .ci/install-browser.sh`); never
`playwright install`, which downloads a browser build of its own."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.browser import guarded_page

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def chromium_path() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium is not installed, so the browser tests cannot run: install Debian's package with "
                    "`bash .ci/install-browser.sh` (apt-get install -y chromium). Do not use `playwright install`.",
                    pytrace=False)
    return exe


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=ARGS)
        except Exception as e:  # noqa: BLE001 - a broken install fails as loudly as a missing one
            pytest.fail(f"chromium at {exe} did not start under Playwright: {e}", pytrace=False)
        yield b
        b.close()


@pytest.fixture
def offline_page(browser):
    """A page that may load file:, data: and blob: URLs only (see :func:`guarded_page`)."""
    ctx, page = guarded_page(browser, ("file:",))
    yield page
    ctx.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
