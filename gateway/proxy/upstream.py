"""The connection pool to Azure DevOps and what its failures mean.

`open_session(config)` builds the process's one keep-alive ClientSession.
`translate(err, host)` is the one place where aiohttp's exceptions become
the gateway's: a timeout is 504 `upstream_timeout`, a failed connection (refused,
DNS, TLS) is 502 `upstream_unreachable`, an answer that is not valid HTTP or
ends early is 502 `upstream_bad_response`. Gateway errors pass unchanged.
"""

from __future__ import annotations

import ssl

import aiohttp

from gateway.config.model import Config
from gateway.errors import BadRequest, GatewayError, UpstreamError, UpstreamTimeout


class BodyReadError(Exception):
    """Reading the client's request body failed (the client's fault, not upstream's)."""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store, plus `upstream.ca_file` when set."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def open_session(config: Config) -> aiohttp.ClientSession:
    up, limits = config.gateway.upstream, config.gateway.limits
    connector = aiohttp.TCPConnector(
        ssl=tls_context(up.ca_file),
        limit=limits.max_inflight,  # the pool never queues a request the gateway admitted
        limit_per_host=0,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=up.connect_timeout_s, sock_read=up.read_timeout_s
        ),
        auto_decompress=False,
        # SECURITY: no cookie jar. Upstream cookies are a session of the injected
        # identity and must never be replayed on behalf of another client.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Send only what the client sent: no default Accept-Encoding (bodies are
        # relayed undecoded), User-Agent, Accept or Content-Type.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        # No proxy or .netrc from the environment: where requests go is config.
        trust_env=False,
    )


def translate(err: BaseException, host: str) -> GatewayError:
    """The gateway error that an exception raised while talking to upstream means."""
    cause = err.__cause__
    if isinstance(cause, GatewayError):  # raised by the request body stream
        return cause
    if isinstance(cause, BodyReadError):
        return BadRequest(f"reading the request body failed: {cause}")
    if isinstance(err, TimeoutError):  # ServerTimeoutError and kin are TimeoutErrors too
        return UpstreamTimeout(f"upstream host {host!r} did not answer in time")
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return UpstreamError(
            f"upstream host {host!r}: TLS certificate not trusted "
            "(set upstream.ca_file for a private CA)",
            reason="upstream_unreachable",
        )
    if isinstance(err, aiohttp.ClientConnectorError | aiohttp.ClientSSLError):
        return UpstreamError(
            f"upstream host {host!r} is unreachable ({_describe(err)})",
            reason="upstream_unreachable",
        )
    return UpstreamError(
        f"upstream host {host!r} sent an invalid or incomplete answer ({_describe(err)})",
        reason="upstream_bad_response",
    )


def _describe(err: BaseException) -> str:
    if isinstance(err, aiohttp.ClientConnectorError):
        return err.os_error.strerror or type(err.os_error).__name__
    if isinstance(err, aiohttp.ClientResponseError):
        return err.message
    return type(err).__name__
