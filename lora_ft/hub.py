"""Whether the Hugging Face Hub can be asked at all: offline, the libraries retry for half a minute or more."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants


def reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host accepts a connection within timeout (False in offline mode: caches only)."""
    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the library try
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def unreachable_reason(name: str, kind: str) -> str | None:
    """Why name cannot be fetched now, with the fixes; None if local, offline (fails fast anyway) or the Hub is up."""
    if constants.HF_HUB_OFFLINE or Path(name).expanduser().exists() or reachable():
        return None
    return (f"{kind} {name!r} is not a local file or folder, and the Hugging Face Hub ({constants.ENDPOINT}) "
            "cannot be reached: connect to the network, set HF_HUB_OFFLINE=1 to use a copy already in your cache, "
            "or pass the path of a local copy")
