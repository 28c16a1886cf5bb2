"""A personal access token (Azure DevOps Server, or a service account), injected as Basic.

Takes a `pat` credential (`pat` or `pat_file`, optional `user`) and gives the
`Authorization` header value. It never expires and needs no identity provider.
"""

from __future__ import annotations

import base64
from pathlib import Path

from gateway.config.model import PatCredential
from gateway.tokens.base import TokenAcquisitionError


def pat_header(config: PatCredential) -> str:
    """`Basic base64(user:pat)`; raises TokenAcquisitionError if `pat_file` is unusable."""
    if config.pat is not None:
        pat = config.pat.get_secret_value()
    else:
        assert config.pat_file is not None
        try:
            pat = Path(config.pat_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise TokenAcquisitionError(
                "credential_file_unreadable", f"cannot read pat_file {config.pat_file}: {err}"
            ) from None
    if not pat:
        raise TokenAcquisitionError("config_error", "the PAT is empty")
    raw = f"{config.user}:{pat}".encode()
    return "Basic " + base64.b64encode(raw).decode()
