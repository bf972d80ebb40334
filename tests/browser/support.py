"""Helpers behind the browser fixtures (tests/browser/conftest.py): where chromium and axe-core are,
how axe runs under the pages' strict Content-Security-Policy, and the console-error guard.

Nothing here downloads a browser: ``make test`` installs Debian's ``chromium`` with apt-get and
axe-core with ``npm ci`` (tests/browser/package.json); when either is missing the tests fail and
say so (they never skip).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Error, Page

HERE = Path(__file__).resolve().parent
AXE_JS = HERE / "node_modules" / "axe-core" / "axe.min.js"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
MAKE_HINT = "run `make test` (or just `make browser-deps`), which installs it"
#: The rules a scan runs: WCAG 2.0, 2.1 and 2.2, levels A and AA.
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
#: The impacts ``assert_accessible`` fails on.
BLOCKING_IMPACTS = ("serious", "critical")


class BrowserSetupError(AssertionError):
    """chromium or axe-core is missing: the message names the make target that installs it."""


def find_chromium() -> str:
    """Debian's chromium (``/usr/bin/chromium``, else ``chromium`` on PATH)."""
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return str(DEBIAN_CHROMIUM)
    found = shutil.which("chromium")
    if found:
        return found
    raise BrowserSetupError(f"Debian's chromium is not installed ({DEBIAN_CHROMIUM} is missing): {MAKE_HINT} "
                            "with apt-get. Never `playwright install`: its download host is not used.")


def axe_source() -> str:
    """The text of axe.min.js, as ``npm ci`` put it in tests/browser/node_modules."""
    if not AXE_JS.is_file():
        raise BrowserSetupError(f"axe-core is not installed ({AXE_JS.relative_to(HERE.parents[1])} is missing): "
                                f"{MAKE_HINT} with `npm ci --prefix tests/browser`.")
    return AXE_JS.read_text(encoding="utf-8")


def run_axe(page: Page, source: str, *, tags: Iterable[str] = WCAG_TAGS,
            context: str | dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on ``page`` (every impact), for the WCAG rules in ``tags``.

    The source is *evaluated* through the DevTools protocol rather than added as a ``<script>``:
    ``page.add_script_tag`` inserts an inline script, which the pages' CSP (no ``unsafe-inline``)
    refuses, and ``bypass_csp`` would switch the CSP off for the page's own behaviour too. Evaluation
    by the protocol is not subject to the page's CSP, so the page keeps running under its real policy.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)  # the UMD bundle defines window.axe
    options = {"runOnly": {"type": "tag", "values": list(tags)}, "resultTypes": ["violations"]}
    results = page.evaluate("([context, options]) => window.axe.run(context || document, options)",
                            [context, options])
    return list(results["violations"])


def describe(violations: Iterable[dict[str, Any]]) -> str:
    """One block per violation: id, impact, help (and its URL), then each offending node's target."""
    lines: list[str] = []
    for v in violations:
        lines.append(f"- {v['id']} [{v.get('impact')}]: {v.get('help')} ({v.get('helpUrl')})")
        for node in v.get("nodes", []):
            lines.append(f"    at {' > '.join(map(str, node.get('target', [])))}: {node.get('html', '')[:160]}")
    return "\n".join(lines)


def blocking(violations: Iterable[dict[str, Any]], impacts: Iterable[str] = BLOCKING_IMPACTS) -> list[dict[str, Any]]:
    wanted = set(impacts)
    return [v for v in violations if v.get("impact") in wanted]


@dataclass
class ConsoleGuard:
    """Collects console errors and uncaught page errors (CSP violations show up as console errors).

    The test fails after its body when any was not allowed with :meth:`allow` (a regex searched in
    the message). Pages are registered by the ``new_page`` fixture.
    """

    errors: list[str] = field(default_factory=list)
    #: Allowed from the start: the 404 of the ``/favicon.ico`` the browser asks for on its own.
    allowed: list[re.Pattern[str]] = field(
        default_factory=lambda: [re.compile(r"console error: Failed to load resource: .* \(\S+/favicon\.ico\)$")])
    pages: list[Page] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def watch(self, page: Page, person: str) -> None:
        self.pages.append(page)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                where = message.location.get("url", "") if message.location else ""
                self.errors.append(f"[{person}] console error: {message.text} ({where or page.url})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"[{person}] uncaught error: {exc} ({page.url})"))

    def flush(self) -> None:
        """Deliver events still in flight: a round trip to each open page after its last message."""
        for page in self.pages:
            if not page.is_closed():
                try:
                    page.evaluate("0")
                except Error:  # the page navigated or crashed mid-flight: nothing more to read from it
                    pass

    def unexpected(self) -> list[str]:
        self.flush()
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]
