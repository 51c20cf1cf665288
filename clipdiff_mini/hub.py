"""Downloads from the Hugging Face hub that fail fast without network.

Pretrained CLIP weights (open_clip) and hub tokenizers (transformers) come
from the Hugging Face hub. Without network, huggingface_hub retries every
request five times with back-off: about a minute of warnings before the
course's own error message. Both loaders therefore ask first::

    with hub_downloads() as hub:     # a quick check: HUB_TIMEOUT_S (3 s) at worst
        ...download or read the local cache...
        # hub.online is False: the block ran in hub offline mode (local cache only)
        # and hub.reason says why, for the error message

* ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) set: offline, no check.
* otherwise one TCP connection to the hub's host (or to the HTTPS proxy, when
  one is configured) with a short timeout. Reached: the libraries run as
  usual and download. Not reached: the block runs in huggingface_hub's own
  offline mode, so files already in the local cache still load and a
  missing one fails at once, without retries.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Iterator

HUB_TIMEOUT_S = 3.0  # seconds to wait for the hub's host (DNS and TCP connect together)


@dataclass(frozen=True)
class HubAccess:
    """Whether the hub can be asked for files now; `reason` says why not (for error messages)."""

    online: bool
    reason: str = ""
    endpoint: str = ""


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` when set (a mirror), else https://huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def offline_by_environment() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` as huggingface_hub reads them (its constants)."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # no hub library: nothing could be downloaded anyway
        return True


def hub_access(timeout: float = HUB_TIMEOUT_S) -> HubAccess:
    """Can the hub be reached right now? Answers within about `timeout` seconds."""
    endpoint = hub_endpoint()
    if offline_by_environment():
        return HubAccess(False, "HF_HUB_OFFLINE=1: offline mode", endpoint)
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    target, via = (host, port), ""
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        target, via = (p.hostname or "", p.port or 80), f" through the proxy {p.hostname}:{p.port or 80}"
    error = _probe(*target, timeout=timeout)
    if error:
        return HubAccess(False, f"{endpoint} cannot be reached{via} ({error})", endpoint)
    return HubAccess(True, "", endpoint)


def _probe(host: str, port: int, timeout: float) -> str:
    """'' when a TCP connection to host:port opens within `timeout` s, else what went wrong.

    Hand-written because huggingface_hub has no quick reachability check (its
    requests retry with back-off). The name lookup runs in a daemon thread:
    ``getaddrinfo`` takes no timeout and can hang for tens of seconds on a
    machine whose DNS server does not answer.
    """
    result: list[str] = []

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append("")
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=connect, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"


@contextlib.contextmanager
def hub_offline_mode() -> Iterator[None]:
    """Run a block in huggingface_hub's offline mode: files come from the local cache or fail at once.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, into
    ``huggingface_hub.constants.HF_HUB_OFFLINE``, and consults that constant on
    every request (transformers and open_clip go through it); setting the
    environment variable later would change nothing.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # without the hub library nothing is downloaded anyway
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def hub_downloads(timeout: float = HUB_TIMEOUT_S) -> Iterator[HubAccess]:
    """Check the hub once; run the block as usual when it answers, in offline mode (cache only) when not."""
    access = hub_access(timeout)
    if access.online:
        yield access
        return
    with hub_offline_mode():
        yield access
