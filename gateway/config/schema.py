"""JSON Schemas of gateway.yaml, policy files and policy test files, from the config model.

    python -m gateway.config.schema --write     regenerate schemas/*.schema.json
    python -m gateway.config.schema --check     exit 1 if a committed schema is stale

The schemas are pydantic's `model_json_schema` of `GatewayConfig`,
`PolicyFile` and `PolicyTestFile`, so they cannot drift from what the loader
accepts. One addition: wherever the model wants a number, a boolean, one of
fixed choices or a string of a fixed pattern, a string holding a `${VAR}`
reference is accepted too, since the loader substitutes the environment into
string values before validating them (`port: ${PORT}` is a whole number once
PORT is substituted). Editors (the YAML language server) read the schema
named on a file's `# yaml-language-server: $schema=...` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.config.model import GatewayConfig, PolicyFile
from gateway.config.policytest import PolicyTestFile

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
REGENERATE = "python -m gateway.config.schema --write"

# file name -> (model, title)
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "gateway.schema.json": (GatewayConfig, "azdo-gateway configuration (gateway.yaml)"),
    "policy.schema.json": (PolicyFile, "azdo-gateway policy file (clients and routes)"),
    "policy-test.schema.json": (PolicyTestFile, "azdo-gateway policy tests (azdo-gateway test)"),
}

ENV_REFERENCE = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}",
    "description": "a ${VAR}, ${VAR:-default} or ${VAR-default} reference, substituted "
    "from the environment when the file is loaded",
}
_SCALARS = {"integer", "number", "boolean"}


def _needs_env(node: dict[str, Any]) -> bool:
    """A value a plain `${VAR}` string would not satisfy."""
    return (
        node.get("type") in _SCALARS
        or "enum" in node
        or "const" in node
        or (node.get("type") == "string" and "pattern" in node)
    )


def _allow_env(node: Any, key: str | None = None) -> Any:
    """Accept a ${VAR} string wherever a scalar the loader would substitute is wanted."""
    if isinstance(node, list):
        return [_allow_env(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _allow_env(v, k) for k, v in node.items()}
    if key == "properties":  # property name -> schema: not a schema itself
        return {
            name: schema if name == "type" else _wrap(schema)  # `type` discriminates unions
            for name, schema in out.items()
        }
    for k in ("items", "additionalProperties"):
        if isinstance(out.get(k), dict):
            out[k] = _wrap(out[k])
    for k in ("anyOf", "oneOf"):
        if isinstance(out.get(k), list) and any(
            isinstance(m, dict) and _needs_env(m) for m in out[k]
        ):
            out[k] = [*out[k], {"$ref": "#/$defs/EnvReference"}]
    return out


def _wrap(schema: Any) -> Any:
    if not isinstance(schema, dict) or not _needs_env(schema):
        return schema
    meta = {k: schema[k] for k in ("title", "description", "default") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in meta}
    return {**meta, "anyOf": [inner, {"$ref": "#/$defs/EnvReference"}]}


def generate(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = _allow_env(model.model_json_schema(mode="validation"))
    schema.setdefault("$defs", {})["EnvReference"] = ENV_REFERENCE
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": title,
    }


def rendered() -> dict[str, str]:
    """file name -> the text it must hold."""
    return {
        name: json.dumps(generate(model, title), indent=2, sort_keys=False) + "\n"
        for name, (model, title) in SCHEMAS.items()
    }


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """The schema files in `directory` that differ from the model (or are missing)."""
    out = []
    for name, text in rendered().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.config.schema", description=__doc__)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the schema files")
    group.add_argument("--check", action="store_true", help="exit 1 if one is out of date")
    p.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"default: {SCHEMA_DIR}")
    args = p.parse_args(argv)
    if args.check:
        names = stale(args.dir)
        for name in names:
            print(f"{args.dir / name}: out of date; run: {REGENERATE}", file=sys.stderr)
        return 1 if names else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (args.dir / name).write_text(text, encoding="utf-8")
        print(args.dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
