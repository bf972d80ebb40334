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
