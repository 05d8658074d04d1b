"""GETting JSON from a service that may be hostile: the trading bridge, the training backend.

Every request is bounded as a whole, not per read: ``timeout`` runs from connecting to
the last byte (a server dripping one byte every half second is cut off like a silent
one), and the body is read as it streams, up to ``max_bytes`` (a 100 MB answer is
refused after ``max_bytes``, never buffered whole). Failures are counted by reason
through ``reject`` (:data:`~exporter.sources.peers.contract.REJECT_REASONS`) and returned
as :class:`Failed`; a service that cannot be reached at all raises
:class:`Unreachable`.

Requests run on an asyncio loop owned by the calling thread (a sampler's), so a
deadline can cancel a request wherever it is, and several endpoints are fetched at
once (:meth:`JsonClient.get_many`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""How a request fails on a kept-alive connection the server closed just as the request
went out: a server closing idle connections after as long as runwatch waits between polls
(uvicorn's 5 s, the bridge's 5 s interval) meets it now and then. Not a service that is
down (that is a refused connect): the GET is sent again, within its deadline."""
STALE_RETRIES = 3  # then a failure counts (connect_failed): a server that resets every time


class Unreachable(Exception):
    """The service did not answer at all (refused, reset, unknown host)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """A request that got no usable JSON, and why (already counted)."""

    reason: str


class JsonClient:
    """GETs JSON documents from one base URL; use it from one thread only."""

    def __init__(
        self, base_url: str, timeout: float, max_bytes: int, reject: Callable[[str], None],
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._reject = reject
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers)

    def get(self, path: str, optional: bool = False) -> Any:
        """The JSON at ``path``, or Failed. With ``optional``, a 404 is None, uncounted: an
        endpoint this service does not have."""
        return self._loop.run_until_complete(self._get(path, optional))

    def get_many(self, paths: list[str]) -> dict[str, Any]:
        """Each path's JSON or Failed, fetched at once; raises Unreachable when one could
        not connect at all."""
        results = self._loop.run_until_complete(self._get_all(paths))
        return dict(zip(paths, results, strict=True))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    async def _get_all(self, paths: list[str]) -> list[Any]:
        results = await asyncio.gather(*(self._get(p, False) for p in paths),
                                       return_exceptions=True)  # fmt: skip
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def _get(self, path: str, optional: bool) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._body_again_if_stale(path, optional)
        except (TimeoutError, httpx.TimeoutException):
            return self._failed("timeout")
        except httpx.TransportError as exc:
            self._reject("connect_failed")
            raise Unreachable(f"{self.base_url}: {str(exc) or type(exc).__name__}") from None
        if body is None or isinstance(body, Failed):
            return body
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._failed("invalid_json")

    async def _body_again_if_stale(self, path: str, optional: bool) -> bytes | Failed | None:
        """``_body``, sent again when its kept-alive connection turns out closed: that
        connection leaves the pool, so the next try takes another, or a new one."""
        for _ in range(STALE_RETRIES):
            with contextlib.suppress(*STALE_CONNECTION):
                return await self._body(path, optional)
        return await self._body(path, optional)

    async def _body(self, path: str, optional: bool) -> bytes | Failed | None:
        async with self._client.stream("GET", path) as response:
            if optional and response.status_code == 404:
                return None
            if not response.is_success:
                return self._failed("http_error")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                return self._failed("response_too_large")
            body = bytearray()
            async for chunk in response.aiter_bytes():  # decoded: a gzip bomb counts whole
                body += chunk
                if len(body) > self._max_bytes:
                    return self._failed("response_too_large")
            return bytes(body)

    def _failed(self, reason: str) -> Failed:
        self._reject(reason)
        return Failed(reason)
