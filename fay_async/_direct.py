"""Requests of the httpx client a FayClient owns, handed straight to its httpx transport.

``httpx.AsyncClient.request`` merges headers, URL, cookies, auth and the timeout into
every request, and wraps every response for redirects, event hooks and cookies: on a
status call that is most of the CPU the client side spends. The httpx client a FayClient
makes for itself has none of that to apply (the same headers and timeout for every
request, no auth, no hooks, no redirects followed), so its requests are built from parts
prepared once and handed to the transport the client would have picked for the base URL:
the proxy the environment names, if one applies to it.

What the client does with a response that matters here is kept: the body is read whole,
and the response closed if reading it fails; an httpx error carries its request. Cookies
the service sets go to the client's jar, and from then on every request goes through the
client, which sends them back. A borrowed client (``http_client=``) is never bypassed:
its hooks, auth and headers are the user's.
"""

from __future__ import annotations

import functools
import ssl
import sys
from collections.abc import KeysView, Mapping
from typing import Any

import httpx

from ._retries import RawResponse

__all__ = ["DirectSender", "own_client"]

#: Methods whose request without a body gets ``Content-Length: 0`` from httpx.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """A parsed URL; a path asked for again (a research polled) is not parsed again."""
    return httpx.URL(text)


@functools.lru_cache(maxsize=1024)
def _url_text(text: str) -> str:
    """The URL as an ``httpx.Request`` for ``text`` would send it (parsed, encoded)."""
    return str(_url(text))


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: building one takes milliseconds."""
    return httpx.create_ssl_context()


def own_client(
    base_url: str,
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    transport: httpx.AsyncBaseTransport | None,
) -> tuple[httpx.AsyncClient, DirectSender]:
    """The httpx client a FayClient owns, on ``transport`` if given, and its sender.

    Headers and timeout are set on the client once, not merged into every request.
    """
    if transport is not None:
        client = httpx.AsyncClient(transport=transport, headers=headers, timeout=timeout)
    else:
        client = httpx.AsyncClient(verify=_ssl_context(), headers=headers, timeout=timeout)
    return client, DirectSender(client, base_url)


class DirectSender:
    """Sends requests with ``client``'s headers straight to its transport for ``base_url``.

    :attr:`usable` turns false for good once the service sets a cookie: the client sends
    from then on.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        base = httpx.URL(base_url)
        self._client = client
        # The pool, or the proxy the environment names for this host: every URL sent here
        # has the base URL's scheme, host and port, which are all a choice depends on.
        self._transport = client._transport_for_url(base)
        self.usable = True
        # What httpx.Request would add in front (Host; a zero length for a POST without a
        # body), added once instead of on every request.
        host = (b"Host", base.netloc)
        self._headers = httpx.Headers([host, *client.headers.raw])
        self._empty_body_headers = httpx.Headers(
            [host, (b"Content-Length", b"0"), *client.headers.raw]
        )
        # An AiohttpTransport (exactly: a subclass may do more in handle_async_request) is
        # handed the parts of a request without a body, and its answer taken without an
        # httpx.Request or httpx.Response around them: a third of what a status call costs
        # the client on aiohttp. Its module is imported if the transport is one.
        self._aiohttp: Any = None
        module = sys.modules.get("fay_async.aiohttp")
        if module is not None and type(self._transport) is module.AiohttpTransport:
            self._aiohttp = self._transport
            self._items = module._header_items(tuple(self._headers.raw))
            self._empty_body_items = module._header_items(tuple(self._empty_body_headers.raw))

    def build(
        self,
        method: str,
        url: str,
        json: Mapping[str, Any] | None,
        timeout: Mapping[str, float | None],
    ) -> httpx.Request:
        """The request ``client.build_request`` would make (with ``timeout`` as a dict)."""
        extensions = {"timeout": dict(timeout)}
        if json is not None:
            return httpx.Request(
                method, _url(url), headers=self._headers, json=json, extensions=extensions
            )
        headers = self._empty_body_headers if method in _BODY_METHODS else self._headers
        request = httpx.Request(
            method, _url(url), headers=headers, stream=httpx.ByteStream(b""), extensions=extensions
        )
        request.read()
        return request

    async def send(
        self,
        method: str,
        url: str,
        json: Mapping[str, Any] | None,
        timeout: Mapping[str, float | None],
    ) -> httpx.Response | RawResponse:
        """Send one request and read its response whole; httpx's errors as httpx raises them.

        A 2xx answer through an AiohttpTransport with nothing to decode or keep comes back
        as a :class:`RawResponse`, any other answer as the ``httpx.Response``.
        """
        if json is None and self._aiohttp is not None:
            return await self._exchange(method, url, timeout)
        request = self.build(method, url, json, timeout)
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.RequestError as error:
            _attach(error, request)
            raise
        return await self._read(response, request)

    async def _exchange(
        self, method: str, url: str, timeout: Mapping[str, float | None]
    ) -> httpx.Response | RawResponse:
        """What :meth:`send` does on an AiohttpTransport for a request without a body."""
        text = _url_text(url)  # an invalid URL fails here, as it would building a request
        items = self._empty_body_items if method in _BODY_METHODS else self._items
        try:
            answer = await self._aiohttp._exchange(method, text, items, b"", timeout)
        except httpx.RequestError as error:
            error.request = self.build(method, url, None, timeout)
            raise
        if answer.plain and 200 <= answer.status < 300:
            return RawResponse(answer.status, answer.content)
        request = self.build(method, url, None, timeout)
        return await self._read(answer.response(request), request)

    async def _read(self, response: httpx.Response, request: httpx.Request) -> httpx.Response:
        """``response`` to ``request`` read whole, as ``httpx.AsyncClient`` would."""
        response.request = request
        stream = response.stream
        names = response.headers.keys()  # one pass over the headers, lower case
        if type(stream) is httpx.ByteStream and "content-encoding" not in names:
            # A body in memory already (AiohttpTransport's) with nothing to decode: taken
            # as it is rather than through httpx's decoding pipeline, a tenth of a call.
            response._content = b"".join(stream)
            return self._after(response, names)
        try:
            await response.aread()
        except BaseException as error:
            await response.aclose()
            if isinstance(error, httpx.RequestError):
                _attach(error, request)
            raise
        return self._after(response, names)

    def _after(self, response: httpx.Response, names: KeysView[str]) -> httpx.Response:
        if "set-cookie" in names:
            self._client.cookies.extract_cookies(response)
            self.usable = False
        return response


def _attach(error: httpx.RequestError, request: httpx.Request) -> None:
    """Give ``error`` its request, as ``httpx.AsyncClient`` does, if the transport did not."""
    try:
        error.request  # noqa: B018 - raises RuntimeError when it has none
    except RuntimeError:
        error.request = request
