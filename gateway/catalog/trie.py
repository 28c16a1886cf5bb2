"""Segment trie: operation path templates compiled once, matched without regexes.

A template is split on `/`; each segment is a literal (matched case-insensitively,
as Azure DevOps does), a `{param}` (any one non-empty segment), a
`prefix{param}suffix` segment (such as npm's `@{packageScope}`), or a final `**`
(any number of segments, possibly none). At every position a literal beats a
prefixed parameter, which beats a plain parameter, which beats `**`; when the more
specific branch leads nowhere, the next one is tried. The cost of a match depends
on the path's length, not on the number of templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REST = "**"


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str  # "literal", "param", "mixed", "rest"
    text: str  # literal text (lower case), or the parameter name
    prefix: str = ""
    suffix: str = ""


def parse_template(template: str) -> tuple[Segment, ...]:
    """Split a path template into segments; raise TemplateError if it is malformed."""
    if not template.startswith("/"):
        raise TemplateError(f"path template must start with '/': {template!r}")
    raw = template.rstrip("/").split("/")[1:] if template != "/" else []
    out: list[Segment] = []
    for i, seg in enumerate(raw):
        if seg == REST:
            if i != len(raw) - 1:
                raise TemplateError(f"'**' may only be the last segment: {template!r}")
            out.append(Segment("rest", REST))
            continue
        if not seg:
            raise TemplateError(f"empty segment in path template {template!r}")
        opening, closing = seg.find("{"), seg.find("}")
        if opening < 0 and closing < 0:
            out.append(Segment("literal", seg.lower()))
            continue
        if opening < 0 or closing < opening + 2 or seg.count("{") != 1 or seg.count("}") != 1:
            raise TemplateError(f"malformed parameter segment {seg!r} in {template!r}")
        name = seg[opening + 1 : closing]
        prefix, suffix = seg[:opening].lower(), seg[closing + 1 :].lower()
        if prefix or suffix:
            out.append(Segment("mixed", name, prefix, suffix))
        else:
            out.append(Segment("param", name))
    return tuple(out)


class Node:
    __slots__ = ("literal", "mixed", "param", "rest", "entries")

    def __init__(self) -> None:
        self.literal: dict[str, Node] = {}
        self.mixed: list[tuple[str, str, Node]] = []
        self.param: Node | None = None
        self.rest: list[object] | None = None  # entries ending in '**'
        self.entries: list[object] = []  # entries ending exactly here


class Trie:
    """One host + method: templates in, `(entries, captures)` out."""

    __slots__ = ("root",)

    def __init__(self) -> None:
        self.root = Node()

    def add(self, segments: Sequence[Segment], entry: object) -> None:
        node = self.root
        for seg in segments:
            if seg.kind == "rest":
                if node.rest is None:
                    node.rest = []
                node.rest.append(entry)
                return
            if seg.kind == "literal":
                node = node.literal.setdefault(seg.text, Node())
            elif seg.kind == "mixed":
                for prefix, suffix, child in node.mixed:
                    if (prefix, suffix) == (seg.prefix, seg.suffix):
                        node = child
                        break
                else:
                    child = Node()
                    node.mixed.append((seg.prefix, seg.suffix, child))
                    # longer affixes first: the more specific wins
                    node.mixed.sort(key=lambda m: -(len(m[0]) + len(m[1])))
                    node = child
            else:
                if node.param is None:
                    node.param = Node()
                node = node.param
        node.entries.append(entry)

    def match(
        self, lowered: Sequence[str], original: Sequence[str]
    ) -> tuple[list[object], list[str]] | None:
        """Entries of the best template for these segments, and the captured values.

        Depth-first, most specific branch first, iterative: a stack remembers where
        a less specific branch could still be tried.
        """
        caps: list[str] = []
        stack: list[tuple[Node, int, int, int]] = []  # node, index, len(caps), next stage
        node, i, stage, n = self.root, 0, 0, len(lowered)
        while True:
            if i == n:
                if stage == 0:
                    if node.entries:
                        return node.entries, caps
                    if node.rest is not None:
                        caps.append("")
                        return node.rest, caps
            else:
                seg = lowered[i]
                mixed = node.mixed
                if stage == 0:
                    stage = 1
                    child = node.literal.get(seg)
                    if child is not None:
                        if mixed or node.param is not None or node.rest is not None:
                            stack.append((node, i, len(caps), 1))
                        node, i, stage = child, i + 1, 0
                        continue
                advanced = False
                while stage <= len(mixed):  # stage k: the k-th prefixed parameter
                    prefix, suffix, child = mixed[stage - 1]
                    stage += 1
                    if (
                        len(seg) > len(prefix) + len(suffix)
                        and seg.startswith(prefix)
                        and seg.endswith(suffix)
                    ):
                        stack.append((node, i, len(caps), stage))
                        caps.append(original[i][len(prefix) : len(seg) - len(suffix)])
                        node, i, stage = child, i + 1, 0
                        advanced = True
                        break
                if advanced:
                    continue
                if stage == len(mixed) + 1:  # then a plain parameter
                    stage += 1
                    if node.param is not None:
                        if node.rest is not None:
                            stack.append((node, i, len(caps), stage))
                        caps.append(original[i])
                        node, i, stage = node.param, i + 1, 0
                        continue
                if node.rest is not None:  # then '**'
                    caps.append("/".join(original[i:]))
                    return node.rest, caps
            if not stack:
                return None
            node, i, ncaps, stage = stack.pop()
            del caps[ncaps:]
