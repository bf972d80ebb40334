"""Fixtures for real-browser tests: Debian's chromium through Playwright, axe-core scans, screenshots,
a console-error guard and `make run`'s host.

``make test`` installs what these need (``make browser-deps``: chromium with apt-get, axe-core with
``npm ci``); a missing piece fails the test with that hint, it is never skipped. Every page a test
opens is watched: a console error or an uncaught error (a CSP violation included) fails the test
unless the test allowed it with ``console_guard.allow(regex)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.browser.support import (
    BLOCKING_IMPACTS,
    HERE,
    WCAG_TAGS,
    ConsoleGuard,
    axe_source,
    blocking,
    describe,
    find_chromium,
    run_axe,
)
from tests.e2e.host import LocalHost, running_host

VIEWPORT = {"width": 1280, "height": 900}
#: How long one Playwright action or expectation may wait (Playwright's default is 30 s).
ACTION_TIMEOUT_MS = 15_000


class PageFactory(Protocol):
    def __call__(self, person: str = "anon", *, locale: str = "en-GB", timezone_id: str = "UTC",
                 **context_options: Any) -> Page: ...


class AxeCheck(Protocol):
    def __call__(self, page: Page, *, tags: Iterable[str] = WCAG_TAGS,
                 context: str | dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


class AssertAccessible(Protocol):
    def __call__(self, page: Page, *, known: Iterable[str] = (), impacts: Iterable[str] = BLOCKING_IMPACTS,
                 tags: Iterable[str] = WCAG_TAGS) -> list[dict[str, Any]]: ...


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    return find_chromium()


# Package scope, not session: Playwright's sync API keeps its asyncio loop marked as running while
# it is open, and the async tests of the other folders (pytest-asyncio) cannot start a loop under it.
# It closes once the last test of tests/browser has run; keep async tests out of this folder.
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright, chromium_executable: str) -> Iterator[Browser]:
    """One headless chromium for the browser tests (as root it needs ``--no-sandbox``)."""
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    launched = playwright_driver.chromium.launch(executable_path=chromium_executable, headless=True, args=args)
    yield launched
    launched.close()


@pytest.fixture
def console_guard() -> ConsoleGuard:
    """The test's console-error guard; ``console_guard.allow(regex)`` accepts matching messages."""
    return ConsoleGuard()


@pytest.fixture
def new_page(browser: Browser, console_guard: ConsoleGuard) -> Iterator[PageFactory]:
    """``new_page(person="anon", *, locale="en-GB", timezone_id="UTC", **context_options) -> Page``.

    Each person gets their own browser context (own cookies and storage), created on first use with
    a 1280x900 viewport and the given locale and time zone; asking again for the same person opens
    another page in that person's context (``locale``/``timezone_id``/options then are ignored).
    ``context_options`` go to ``browser.new_context`` (``base_url``, ``color_scheme``, ``viewport``...).
    """
    contexts: dict[str, BrowserContext] = {}

    def factory(person: str = "anon", *, locale: str = "en-GB", timezone_id: str = "UTC",
                **context_options: Any) -> Page:
        if person not in contexts:
            options: dict[str, Any] = {"viewport": VIEWPORT, **context_options}
            contexts[person] = browser.new_context(locale=locale, timezone_id=timezone_id, **options)
            contexts[person].set_default_timeout(ACTION_TIMEOUT_MS)
        page = contexts[person].new_page()
        console_guard.watch(page, person)
        return page

    yield factory
    for context in contexts.values():
        context.close()


@pytest.fixture(scope="session")
def axe_check() -> AxeCheck:
    """``axe_check(page, *, tags=WCAG 2 A/AA, context=None) -> violations`` (axe's dicts, every impact)."""
    source = axe_source()

    def check(page: Page, *, tags: Iterable[str] = WCAG_TAGS,
              context: str | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return run_axe(page, source, tags=tags, context=context)

    return check


@pytest.fixture(scope="session")
def assert_accessible(axe_check: AxeCheck) -> AssertAccessible:
    """``assert_accessible(page, *, known=(), impacts=("serious", "critical"))`` -> every violation.

    Fails listing each serious or critical violation (id, impact, help, target nodes) whose id is
    not in ``known``; ``known`` must be exact: an id listed there that the page no longer violates
    fails too, so that the list shrinks as pages are fixed.
    """

    def check(page: Page, *, known: Iterable[str] = (), impacts: Iterable[str] = BLOCKING_IMPACTS,
              tags: Iterable[str] = WCAG_TAGS) -> list[dict[str, Any]]:
        violations = axe_check(page, tags=tags)
        found = blocking(violations, impacts)
        expected = set(known)
        new = [v for v in found if v["id"] not in expected]
        assert not new, f"accessibility violations on {page.url}:\n{describe(new)}"
        gone = expected - {v["id"] for v in found}
        assert not gone, f"{sorted(gone)} no longer violated on {page.url}: remove them from `known`"
        return violations

    return check


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """``$HITL_TEST_ARTIFACTS`` or tests/browser/artifacts (git-ignored); made when first written to."""
    return Path(os.environ.get("HITL_TEST_ARTIFACTS") or HERE / "artifacts")


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, artifacts_dir: Path) -> Callable[[Page, str], Path]:
    """``screenshot(page, name) -> Path``: a full-page PNG at <artifacts>/<test name>/<name>.png."""
    folder = artifacts_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(page: Page, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalHost]:
    """`make run`'s host (python -m devhost, demo directory, SQLite, local SMTP sink) on a free port."""
    with running_host(tmp_path / "data", HITL_STORAGE="sqlite") as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    """After a passing test body: fail when a watched page logged an error that was not allowed."""
    yield  # re-raises the test's own failure, if any: then that is what the report shows
    guard = getattr(item, "funcargs", {}).get("console_guard")
    if isinstance(guard, ConsoleGuard):
        unexpected = guard.unexpected()
        assert not unexpected, "errors in the browser console (allow expected ones with console_guard.allow):\n" \
            + "\n".join(unexpected)
