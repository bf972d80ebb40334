"""The browser fixtures themselves, on pages served by Playwright's router (no app involved): the
console guard sees CSP violations, axe runs under a CSP without ``unsafe-inline``, people have
separate cookies, and each context renders dates in its own time zone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, Route

from tests.browser.conftest import AxeCheck, PageFactory
from tests.browser.support import ConsoleGuard, blocking

ORIGIN = "http://app.test"
STRICT_CSP = "default-src 'none'; img-src 'self'; form-action 'self'; base-uri 'none'"


def serve(page: Page, body: str, csp: str = STRICT_CSP) -> None:
    """Answer every request of ``page`` with ``body`` under ``csp``, then open the origin."""
    def fulfil(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=body,
                      headers={"Content-Security-Policy": csp})

    page.route(f"{ORIGIN}/**", fulfil)
    page.goto(f"{ORIGIN}/")


def test_console_guard_records_a_csp_violation(new_page: PageFactory, console_guard: ConsoleGuard) -> None:
    page = new_page()
    serve(page, "<!doctype html><html lang='en'><title>t</title><script>document.title = 'ran'</script></html>")
    assert page.title() == "t"  # the inline script was refused
    errors = console_guard.unexpected()
    assert len(errors) == 1 and "Content Security Policy" in errors[0], errors
    console_guard.allow("Content Security Policy")  # expected here; the guard passes the test
    assert console_guard.unexpected() == []


def test_console_guard_records_an_uncaught_error(new_page: PageFactory, console_guard: ConsoleGuard) -> None:
    page = new_page()
    serve(page, "<!doctype html><html lang='en'><title>t</title></html>")
    page.evaluate("() => { setTimeout(() => { throw new Error('boom') }) }")
    page.wait_for_function("() => true")
    assert any("boom" in e for e in console_guard.unexpected())
    console_guard.allow("boom")


def test_axe_runs_under_a_strict_csp_and_the_page_keeps_it(
        new_page: PageFactory, axe_check: AxeCheck, console_guard: ConsoleGuard) -> None:
    page = new_page()
    serve(page, "<!doctype html><html lang='en'><head><title>t</title></head><body><main>"
                "<img src='/x.png'><button></button></main></body></html>")
    violations = axe_check(page)
    assert {v["id"] for v in blocking(violations)} >= {"image-alt", "button-name"}
    node = next(v for v in violations if v["id"] == "image-alt")["nodes"][0]
    assert node["target"] == ["img"]
    # the page's own scripts are still refused after the scan
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'document.title = 1';"
                  " document.head.append(s) }")
    assert page.title() == "t"
    console_guard.allow("Content Security Policy")


def test_people_have_their_own_cookies_time_zone_and_screenshots(
        new_page: PageFactory, screenshot: Callable[[Page, str], Path]) -> None:
    ana = new_page("ana", timezone_id="Europe/Berlin", locale="de-DE")
    bo = new_page("bo", timezone_id="America/New_York", locale="en-US")
    for page in (ana, bo):
        serve(page, "<!doctype html><html lang='en'><title>t</title><main><h1>Hello</h1></main></html>")
    ana.context.add_cookies([{"name": "who", "value": "ana", "url": ORIGIN}])
    assert [c["value"] for c in ana.context.cookies()] == ["ana"]
    assert bo.context.cookies() == []
    assert new_page("ana").context is ana.context  # the same person: another tab, same cookies
    noon_utc = "() => new Date(Date.UTC(2026, 0, 15, 12, 0)).toLocaleString(undefined, {hour: 'numeric'})"
    assert ana.evaluate(noon_utc) == "13 Uhr"
    assert bo.evaluate(noon_utc) == "7 AM"
    assert ana.viewport_size == {"width": 1280, "height": 900}
    shot = screenshot(ana, "hello ana")
    assert shot.name == "hello_ana.png" and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
