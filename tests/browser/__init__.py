"""Real-browser tests: Playwright for Python driving Debian's chromium; accessibility scans with axe-core."""
