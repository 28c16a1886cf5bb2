"""Turn pydantic validation errors into problems users can act on.

Takes a `ValidationError`, the model that raised it, the data and the
`Document` it was read from; returns one `Problem` per thing wrong, each with
the file, the line, the key as written in the file and what was expected.
Unknown keys and choices get a did-you-mean. Values of secret keys, and
values that came from the environment, are never repeated in a message.
"""

from __future__ import annotations

import datetime as dt
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.config.reader import Document
from gateway.config.sources import PathKey, Problem, format_key

SECRET_KEYS = frozenset({"client_secret", "pat", "certificate_password"})

# What a required key holds, for "missing required key" messages.
HINTS = {
    "credential": "a key of `credentials` in the gateway configuration",
    "client_id": "the application (client) id",
    "certificate_file": "a PEM file with the certificate and its private key",
    "token_file": "the federated token file, e.g. ${AZURE_FEDERATED_TOKEN_FILE}",
    "cert_file": "a PEM certificate chain",
    "key_file": "a PEM private key",
    "name": "a unique name",
    "match": "{method: ..., path: ...}",
    "path": 'a path template, e.g. "/{organization}/{project}/_apis/git/**"',
    "id": "the key id printed by `azdo-gateway keygen`",
    "sha256": "the hash printed by `azdo-gateway keygen`",
    "per_minute": "requests per minute",
}

PATTERN_HINTS = {
    "name": "letters, digits, '.', '_' and '-', starting with a letter or digit",
    "sha256": "64 hexadecimal digits (the sha256 that `azdo-gateway keygen` prints)",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _members(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return ()


def _strip(tp: Any) -> Any:
    """Drop Annotated[...] and `| None` around a type."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        members = [m for m in _members(tp) if m is not type(None)]
        if _members(tp) and len(members) == 1:
            tp = members[0]
            continue
        return tp


def tags(tp: Any) -> dict[str, type[BaseModel]]:
    """For a union discriminated on `type`: tag -> model; else {}."""
    out: dict[str, type[BaseModel]] = {}
    for member in _members(_strip(tp)):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            return {}
        field = member.model_fields.get("type")
        if field is None:
            return {}
        for tag in typing.get_args(field.annotation):
            out[str(tag)] = member
    return out


def _child(tp: Any, elem: str | int) -> Any:
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(elem))
        return field.annotation if field is not None else None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        return args[1]
    if origin in (tuple, list) and isinstance(elem, int):
        return args[0]
    return None


def _resolve(
    model: Any, data: Any, loc: tuple[str | int, ...]
) -> tuple[PathKey, PathKey, Any, Any]:
    """Walk pydantic's `loc` through data and types.

    Returns (path in the data, the rest of loc that names union members,
    the type at the path, the type of its parent).
    """
    tp, parent, node = model, None, data
    path: list[str | int] = []
    rest = list(loc)
    while rest:
        elem = rest[0]
        tagged = tags(tp)
        if tagged and isinstance(elem, str) and elem in tagged:
            tp = tagged[elem]
            rest.pop(0)
            continue
        child = _child(tp, elem)
        if child is None and not (isinstance(node, dict) and len(rest) == 1):
            break
        parent, tp = tp, child
        path.append(elem)
        rest.pop(0)
        if isinstance(node, dict):
            node = node.get(str(elem))
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            node = node[elem]
        else:
            node = None
    return tuple(path), tuple(rest), tp, parent


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dt.datetime | dt.date):
        return f"the date {value.isoformat()}"
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _expected(err: ErrorDetails, tp: Any) -> str | None:
    """What the value should have been, for type errors; None for other errors."""
    kind = err["type"]
    ctx = err.get("ctx", {})
    if kind == "string_type":
        return "a string"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "a whole number"
    if kind in ("float_type", "float_parsing"):
        return "a number"
    if kind in ("bool_type", "bool_parsing"):
        return "true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "a mapping"
    if kind in ("list_type", "tuple_type"):
        return "a list"
    if kind.startswith("datetime"):
        return "a date and time (YYYY-MM-DDTHH:MM:SSZ)"
    if kind.startswith("date"):
        return "a date (YYYY-MM-DD)"
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(_strip(tp))]
        if choices:
            return " or ".join(f"'{c}'" for c in choices)
        return str(ctx.get("expected", "one of the allowed values"))
    if kind == "greater_than":
        return f"a number greater than {_number(ctx['gt'])}"
    if kind == "greater_than_equal":
        return f"a number of at least {_number(ctx['ge'])}"
    if kind == "less_than":
        return f"a number less than {_number(ctx['lt'])}"
    if kind == "less_than_equal":
        return f"a number of at most {_number(ctx['le'])}"
    return None


def _got(value: Any, hide: bool, env: tuple[str, ...]) -> str:
    """ ", got <value>" unless the value may be secret; then only where it came from."""
    if env:
        return f" (the value of {', '.join(env)})"
    return "" if hide else f", got {_kind(value)}"


def _message(
    err: ErrorDetails, path: PathKey, tp: Any, parent: Any, hide: bool, env: tuple[str, ...] = ()
) -> tuple[PathKey, str]:
    """(where to report, message) for one resolved error."""
    kind = err["type"]
    ctx = err.get("ctx", {})
    value = err["input"]
    got = _got(value, hide, env)
    last = path[-1] if path else ""
    if kind == "missing":
        hint = HINTS.get(str(last))
        return path[:-1], f"missing required key '{last}'" + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        allowed = list(_strip(parent).model_fields) if _is_model(parent) else []
        guess = did_you_mean(str(last), allowed)
        if guess:
            return path, f"unknown key '{last}' (did you mean '{guess}'?)"
        return path, f"unknown key '{last}' (expected one of: {', '.join(allowed)})"
    if kind == "union_tag_invalid":
        expected = list(tags(tp))
        tag = str(ctx.get("tag", value))
        guess = did_you_mean(tag, expected)
        hint = f"did you mean '{guess}'? " if guess else ""
        message = f"unknown type '{tag}' ({hint}expected one of: {', '.join(expected)})"
        return (*path, "type"), message
    if kind == "union_tag_not_found":
        return path, f"missing required key 'type' (one of: {', '.join(tags(tp))})"
    if kind == "literal_error" and isinstance(value, str):
        choices = [str(c) for c in typing.get_args(_strip(tp))]
        guess = did_you_mean(value, choices)
        if guess:
            return path, f"expected {_expected(err, tp)}, got '{value}' (did you mean '{guess}'?)"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return path, "must not be empty"
    if kind == "string_too_long":
        return path, f"expected at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(str(last), f"a value matching {ctx.get('pattern')}")
        if last == "sha256":
            # SECURITY: someone may paste the key itself here; never repeat it.
            if isinstance(value, str) and value.startswith("azgw_"):
                return path, "expected the key's sha256, not the key itself (keygen prints both)"
            return path, f"expected {hint}"
        return path, f"expected {hint}{got}"
    if kind in ("value_error", "assertion_error"):
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return path, msg
    wanted = _expected(err, tp)
    if wanted is not None:
        quote = ""
        if kind == "string_type" and isinstance(value, int | float | bool | dt.date) and got:
            quote = " (put it in quotes)"
        return path, f"expected {wanted}{got}{quote}"
    msg = err["msg"]
    return path, msg[:1].lower() + msg[1:]


def _is_model(tp: Any) -> bool:
    tp = _strip(tp)
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def problems_from(
    error: ValidationError, model: type[BaseModel], data: Any, doc: Document, prefix: PathKey = ()
) -> list[Problem]:
    """Problems for `error`, raised validating `data` (found at `prefix` in `doc`)."""
    out: dict[tuple[PathKey, str], None] = {}
    unions: dict[PathKey, list[tuple[ErrorDetails, Any]]] = {}
    for err in error.errors(include_url=False):
        path, rest, tp, parent = _resolve(model, data, tuple(err["loc"]))
        full = (*prefix, *path)
        if any(full[:n] in doc.unresolved for n in range(len(full) + 1)):
            continue  # already reported: a ${VAR} there could not be substituted
        hide = bool(path) and str(path[-1]) in SECRET_KEYS
        env = () if hide else doc.from_env.get(full, ())
        if rest and _expected(err, tp) is not None:
            unions.setdefault(full, []).append((err, tp))
            continue
        where, message = _message(err, path, tp, parent, hide, env)
        out[((*prefix, *where), message)] = None
    for full, errs in unions.items():
        expected = list(dict.fromkeys(str(_expected(e, t)) for e, t in errs))
        hide = bool(full) and str(full[-1]) in SECRET_KEYS
        got = _got(errs[0][0]["input"], hide, () if hide else doc.from_env.get(full, ()))
        out[(full, f"expected {' or '.join(expected)}{got}")] = None
    return [
        Problem(doc.file, _line(doc, where), format_key(where) if where else "", message)
        for where, message in out
    ]


def _line(doc: Document, path: PathKey) -> int | None:
    for end in range(len(path), -1, -1):
        line = doc.lines.get(path[:end])
        if line is not None:
            return line
    return None
