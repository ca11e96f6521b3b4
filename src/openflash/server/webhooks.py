"""Webhooks: a ``/run`` job's result POSTed to the URL its request named, when the job ends.

As Runpod's ``/run`` does with its ``webhook`` field: the body is what ``/status/{id}`` answers
for the ended job (``id``, ``status``, ``output`` or ``error``, ``delayTime``,
``executionTime``), sent as JSON; any 2xx answer acknowledges it. A failed delivery (an answer
other than 2xx, no answer, a refused connection) is tried again: ``FLASH_WEBHOOK_ATTEMPTS``
attempts in all (default 3: Runpod's one call and its 2 retries), the first retry after
``FLASH_WEBHOOK_DELAY_S`` seconds (default 10, Runpod's delay) and each later one after twice the
previous delay. Every attempt is told to the terminal and the dashboard. A delivery is a task of
its own on the server's loop, its POST in a thread, so it never holds up other jobs.

The URL is checked when the job is submitted: http or https, with a host. Logs, events and
errors name it without its user, password, query or fragment (``redact``), which may hold
credentials; a user and password in it are sent as HTTP basic authentication.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from openflash.errors import ConfigError

__all__ = ["WebhookPolicy", "deliver", "redact", "webhook_error"]

#: Seconds one POST may take before it counts as failed.
POST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WebhookPolicy:
    """How a webhook is delivered: ``attempts`` in all, the n-th retry ``delay * 2**(n-1)`` s
    after the previous attempt."""

    attempts: int = 3
    delay: float = 10.0

    @classmethod
    def from_env(cls) -> WebhookPolicy:
        attempts = os.environ.get("FLASH_WEBHOOK_ATTEMPTS", "").strip() or "3"
        delay = os.environ.get("FLASH_WEBHOOK_DELAY_S", "").strip() or "10"
        try:
            policy = cls(int(attempts), float(delay))
        except ValueError:
            policy = cls(0, -1.0)
        if policy.attempts < 1 or policy.delay < 0:
            raise ConfigError(
                f"FLASH_WEBHOOK_ATTEMPTS={attempts!r} or FLASH_WEBHOOK_DELAY_S={delay!r} is "
                "not usable",
                hint="FLASH_WEBHOOK_ATTEMPTS is a whole number >= 1 (default 3), "
                "FLASH_WEBHOOK_DELAY_S seconds >= 0 (default 10)",
            )
        return policy

    def pause(self, retry: int) -> float:
        """Seconds before the ``retry``-th retry (1 for the first)."""
        return float(self.delay * 2 ** (retry - 1))


def webhook_error(url: Any) -> str | None:
    """Why ``url`` cannot be a webhook (a sentence with what to do), or None if it can."""
    if not isinstance(url, str) or not url.strip():
        return "webhook must be a URL string, e.g. https://example.com/done"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        return f"webhook {redact(url)!r} is not a valid URL; send e.g. https://example.com/done"
    if parts.scheme not in ("http", "https"):
        return (
            f"webhook must be an http or https URL, not {parts.scheme or 'one without a scheme'}"
            "; send e.g. https://example.com/done"
        )
    if not parts.hostname:
        return f"webhook {redact(url)!r} has no host; send e.g. https://example.com/done"
    return None


def redact(url: str) -> str:
    """``url`` as logs may show it: scheme, host, port and path; no user, password or query."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    hidden = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{hidden}"


def _post(url: str, body: bytes) -> str | None:
    """POST ``body``; None on a 2xx answer, else why it failed (never naming the URL). A user
    and password in the URL are sent as HTTP basic authentication."""
    parts = urlsplit(url.strip())
    headers = {"Content-Type": "application/json", "User-Agent": "openflash-webhook"}
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    request = urllib.request.Request(urlunsplit(parts), data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as answer:
            code = answer.status
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except urllib.error.URLError as e:
        reason = e.reason
        return f"no answer ({getattr(reason, 'strerror', None) or type(reason).__name__})"
    except (OSError, ValueError) as e:
        return f"no answer ({getattr(e, 'strerror', None) or type(e).__name__})"
    return None if 200 <= code < 300 else f"HTTP {code}"


async def deliver(
    url: str, payload: dict[str, Any], policy: WebhookPolicy, say: Callable[[str, str], None]
) -> bool:
    """POST ``payload`` to ``url`` under ``policy``; True once a 2xx answer came."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    shown, job = redact(url), payload.get("id")
    for attempt in range(1, policy.attempts + 1):
        failure = await asyncio.to_thread(_post, url, body)
        if failure is None:
            say(f"webhook of job {job}: delivered to {shown} (attempt {attempt})", "info")
            return True
        if attempt == policy.attempts:
            say(
                f"webhook of job {job}: attempt {attempt} of {policy.attempts} to {shown} "
                f"failed ({failure}); given up, the result stays at /status/{job}",
                "error",
            )
            return False
        pause = policy.pause(attempt)
        say(
            f"webhook of job {job}: attempt {attempt} of {policy.attempts} to {shown} failed "
            f"({failure}); next in {pause:g} s",
            "warning",
        )
        await asyncio.sleep(pause)
    return False
