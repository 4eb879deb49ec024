"""Regression: every ModelActor that built its own HTTP client also built its own TLS context
(loading the CA bundle: ~50-150 ms of CPU and a few hundred KiB per session), found by the stress
suite opening thousands of sessions. They now share one."""

from __future__ import annotations

import ssl
from typing import Any
from unittest import mock

import httpx
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors import ModelSettings
from actors.model import default_ssl_context, open_model_actor


@settings(max_examples=10)
@given(n=st.integers(2, 4), https=st.booleans())
@example(n=2, https=False).via("regression: a TLS context was built per actor, even for http:// loopback")
def test_model_actors_share_one_tls_context(n: int, https: bool) -> None:
    seen: list[Any] = []
    real = httpx.AsyncClient

    def spy(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        seen.append(kwargs.get("verify", True))
        return real(*args, **kwargs)

    async def main() -> None:
        base = "https://example.invalid/v1" if https else "http://127.0.0.1:9/v1"
        for _ in range(n):
            async with open_model_actor(ModelSettings(base_url=base, model="m")):
                pass

    with mock.patch("actors.model.httpx.AsyncClient", spy):
        trio.run(main)
    assert len(seen) == n
    assert all(isinstance(v, ssl.SSLContext) for v in seen)
    assert all(v is default_ssl_context() for v in seen)
    assert default_ssl_context().verify_mode == ssl.CERT_REQUIRED and default_ssl_context().check_hostname
