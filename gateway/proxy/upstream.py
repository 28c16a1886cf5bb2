"""What failures talking to Azure DevOps mean, and the trust used for its TLS.

`tls_context(ca_file)` is what the upstream pool verifies certificates with.
`translate(err, host)` is the one place where the upstream client's exceptions
become the gateway's: a timeout is 504 `upstream_timeout`, a failed connection (refused,
DNS, TLS) is 502 `upstream_unreachable`, an answer that is not valid HTTP or
ends early is 502 `upstream_bad_response`, a client body that could not be
read is 400. Gateway errors pass unchanged.
"""

from __future__ import annotations

import ssl

from gateway.errors import BadRequest, GatewayError, UpstreamError, UpstreamTimeout
from gateway.proxy.client import ConnectFailed


class BodyReadError(Exception):
    """Reading the client's request body failed (the client's fault, not upstream's)."""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store, plus `upstream.ca_file` when set."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def translate(err: BaseException, host: str) -> GatewayError:
    """The gateway error that an exception raised while talking to upstream means."""
    if isinstance(err, GatewayError):  # raised by the request body stream (too large)
        return err
    if isinstance(err, BodyReadError):
        return BadRequest(f"reading the request body failed: {err}")
    if isinstance(err, TimeoutError):
        return UpstreamTimeout(f"upstream host {host!r} did not answer in time")
    if isinstance(err, ConnectFailed) and err.certificate:
        return UpstreamError(
            f"upstream host {host!r}: TLS certificate not trusted "
            "(set upstream.ca_file for a private CA)",
            reason="upstream_unreachable",
        )
    if isinstance(err, ConnectFailed):
        return UpstreamError(
            f"upstream host {host!r} is unreachable ({err})", reason="upstream_unreachable"
        )
    return UpstreamError(
        f"upstream host {host!r} sent an invalid or incomplete answer ({err})",
        reason="upstream_bad_response",
    )
