"""Load gateway.yaml and its policy files into a validated `Config`.

Raises ConfigError listing every problem found, each as
`file:line: key: what is wrong (what is expected)`.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from gateway.config.model import Client, Config, GatewayConfig, PolicyFile, Route
from gateway.errors import ConfigError


def load(path: str | Path) -> Config:
    path = Path(path)
    problems: list[str] = []
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        gw = GatewayConfig.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise ConfigError([f"{path}: {err}"]) from None
    clients: list[Client] = []
    routes: list[Route] = []
    files = [path]
    for pattern in gw.policies:
        for pf in sorted(path.parent.glob(pattern)):
            files.append(pf)
            try:
                pol = PolicyFile.model_validate(yaml.safe_load(pf.read_text()) or {})
            except (OSError, yaml.YAMLError, ValidationError) as err:
                problems.append(f"{pf}: {err}")
                continue
            clients.extend(pol.clients)
            routes.extend(pol.routes)
    if problems:
        raise ConfigError(problems)
    return Config(path=path, gateway=gw, clients=tuple(clients), routes=tuple(routes), files=tuple(files))
