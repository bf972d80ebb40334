"""Whether an address is this machine's: the one rule that lets a client relax for a local stand-in.

Both the Cosmos DB client (TLS verification for the local emulator) and the Graph directory
(plain ``http`` paging links) accept something less strict only on loopback; they share this
check so the rule cannot drift between them.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and any loopback IP (127.0.0.0/8, ::1)."""
    name = (host or "").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for http(s)://127.x.x.x, [::1] or localhost: only a local stand-in lives there."""
    return is_loopback_host(urlsplit(endpoint).hostname)


#: The variables through which a proxy is configured for aiohttp (either case).
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


def proxy_configured() -> bool:
    """Whether this process is told to use an HTTP proxy.

    The Azure SDK clients pass it as ``use_env_settings``: when True, aiohttp re-reads the proxy
    variables and ``~/.netrc`` on every request, which cost about a fifth of the CPU per decision on
    Cosmos DB (bench/app_cost.py). Without a proxy there is nothing to read, so the clients skip it;
    with one, they honour it as before."""
    import os

    return any(os.environ.get(name) for name in PROXY_VARIABLES)
