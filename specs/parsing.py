"""Safe YAML parsing that remembers where every key and value was written.

PyYAML's ``SafeLoader`` composes the document into nodes (which carry line/column marks);
instead of letting PyYAML construct Python objects (which silently keeps the last of two
duplicate keys and expands aliases without limit), this module builds the data itself:

- every mapping key and value gets its position recorded in a ``SourceMap`` keyed by the
  field path (``("regions", "dallas", "plan")``);
- a key written twice in one mapping is a problem naming both lines;
- aliases are expanded with a budget (``max_alias_nodes``): a "billion laughs" document is
  refused after a bounded amount of work, in bounded memory;
- mapping keys are kept as written (``yes:`` stays the string ``"yes"``), floats become
  ``Decimal`` parsed from their text (money never passes through a binary float);
- custom tags, complex keys, sets and ordered maps are refused.

Nothing here raises: problems are collected and returned with whatever could be built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from specs.errors import SpecProblem

#: Default size cap of one spec file.
MAX_FILE_BYTES = 1024 * 1024
#: Default number of nodes that may be built by expanding aliases, per file.
MAX_ALIAS_NODES = 10_000
#: Deepest nesting accepted (the spec itself is about 6 levels deep).
MAX_DEPTH = 64
#: Characters that alias expansion may add to a file (the expanded size, not only the count
#: of aliases, is bounded: a short anchor holding a long string, aliased 10,000 times, is
#: refused).
MAX_ALIAS_CHARS = 256 * 1024
#: The longest number written (a spec's numbers are short; a million-digit exponent is not
#: one of them).
MAX_NUMBER_CHARS = 40
#: Whole numbers must fit in 64 bits (ids, counts and limits are all far below it).
MAX_INT = 2**63 - 1
#: Decimal numbers: at most this many significant digits, and a magnitude within
#: 10^-MAX_EXPONENT .. 10^MAX_EXPONENT.
MAX_DECIMAL_DIGITS = 30
MAX_EXPONENT = 30
#: The longest value quoted back in a problem.
MAX_SHOWN = 60
#: Most values (scalars, mappings, lists) one file may hold: a real fleet has hundreds, a
#: 10,000-region fleet ~50,000; a megabyte of tiny flow mappings ~500,000 would cost seconds
#: of building and validating for nothing.
MAX_VALUES = 250_000
_SURROGATE = re.compile("[\ud800-\udfff]")

FieldPath = tuple[str | int, ...]
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_SCALAR_TAGS = frozenset(
    {
        _STR_TAG,
        _FLOAT_TAG,
        _INT_TAG,
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:timestamp",
    }
)
#: What each tag reads as, for problems about a value that does not read as its tag.
_TAG_WORDS = {
    _FLOAT_TAG: "a number",
    _INT_TAG: "a whole number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date or time",
}


def shown(value: str, limit: int = MAX_SHOWN) -> str:
    """``repr`` of a value quoted back in a problem, cut to ``limit`` characters."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    return repr(value)


def has_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone UTF-16 surrogate (``"\\ud800"`` in a quoted YAML
    string): not a character, and not writable as UTF-8."""
    return _SURROGATE.search(text) is not None


def _decimal_in_range(number: Decimal) -> bool:
    if number.is_zero():
        return True
    digits = len(number.as_tuple().digits)
    return digits <= MAX_DECIMAL_DIGITS and -MAX_EXPONENT <= number.adjusted() <= MAX_EXPONENT


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a file; line and column are 1-based."""

    file: str
    line: int
    column: int

    def render(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Spot:
    """Where a field sits: its key (None for list items and the root) and its value."""

    key: Position | None
    value: Position

    @property
    def best(self) -> Position:
        return self.key or self.value


@dataclass(slots=True)
class SourceMap:
    """Field path -> where it was written. The first definition of a path wins."""

    spots: dict[FieldPath, Spot] = field(default_factory=dict)
    default_file: str = "<spec>"

    def add(self, path: FieldPath, spot: Spot) -> None:
        self.spots.setdefault(path, spot)

    def update(self, other: SourceMap) -> None:
        for path, spot in other.spots.items():
            self.spots.setdefault(path, spot)

    def find(self, path: FieldPath) -> tuple[FieldPath, Spot] | None:
        """The spot of ``path`` or of its nearest recorded ancestor."""
        current = tuple(path)
        while True:
            spot = self.spots.get(current)
            if spot is not None:
                return current, spot
            if not current:
                return None
            current = current[:-1]

    def key_position(self, path: FieldPath) -> Position:
        """Where the field is named (its key), else where its value starts."""
        found = self.find(path)
        if found is None:
            return Position(self.default_file, 1, 1)
        return found[1].best

    def value_position(self, path: FieldPath) -> Position:
        """Where the field's value starts (or its nearest recorded ancestor's key)."""
        found = self.find(path)
        if found is None:
            return Position(self.default_file, 1, 1)
        exact, spot = found
        return spot.value if exact == tuple(path) else spot.best


@dataclass(slots=True)
class ParsedFile:
    """One file's data (None when it could not be parsed at all) and its problems."""

    source: str
    data: dict[str, Any] | None
    source_map: SourceMap
    problems: list[SpecProblem]

    @property
    def fatal(self) -> bool:
        return self.data is None


def dotted(path: FieldPath) -> str:
    """``("regions", "dallas", "nodes")`` -> ``regions.dallas.nodes``; list items as ``[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


class _RefusedError(Exception):
    """Stop building: the document is refused as a whole (alias bomb, too deep)."""

    def __init__(self, problem: SpecProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Builder:
    def __init__(self, source: str, max_alias_nodes: int) -> None:
        self.source = source
        self.max_alias_nodes = max_alias_nodes
        self.alias_nodes = 0
        self.alias_chars = 0
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.source_map = SourceMap(default_file=source)
        self.problems: list[SpecProblem] = []
        self.constructor = SafeConstructor()

    def position(self, mark: yaml.Mark) -> Position:
        return Position(self.source, mark.line + 1, mark.column + 1)

    def problem(
        self, mark: yaml.Mark, path: FieldPath, message: str, hint: str | None = None
    ) -> None:
        pos = self.position(mark)
        self.problems.append(
            SpecProblem(pos.file, pos.line, pos.column, dotted(path), message, hint)
        )

    def build(self, node: Node, path: FieldPath, depth: int, in_alias: bool) -> Any:
        ident = id(node)
        if ident in self.active:
            self.problem(
                node.start_mark,
                path,
                "an alias refers to the mapping or list that contains it",
                "recursive anchors are not supported",
            )
            return None
        if ident in self.seen:
            in_alias = True  # every revisit of a node is an alias expansion
        self.seen.add(ident)
        if in_alias:
            self.alias_nodes += 1
            if isinstance(node, ScalarNode):
                self.alias_chars += len(node.value)
            if self.alias_chars > MAX_ALIAS_CHARS:
                pos = self.position(node.start_mark)
                raise _RefusedError(
                    SpecProblem(
                        pos.file,
                        pos.line,
                        pos.column,
                        "",
                        f"anchors and aliases expand to more than {MAX_ALIAS_CHARS:,} "
                        "characters; refusing the document",
                        "write the values out or use fewer, shorter aliases",
                    )
                )
            if self.alias_nodes > self.max_alias_nodes:
                pos = self.position(node.start_mark)
                raise _RefusedError(
                    SpecProblem(
                        pos.file,
                        pos.line,
                        pos.column,
                        "",
                        f"anchors and aliases expand to more than {self.max_alias_nodes:,} "
                        "values; refusing the document (a 'billion laughs' file?)",
                        "write the values out or use fewer nested aliases",
                    )
                )
        if depth > MAX_DEPTH:
            pos = self.position(node.start_mark)
            raise _RefusedError(
                SpecProblem(
                    pos.file,
                    pos.line,
                    pos.column,
                    dotted(path),
                    f"nested more than {MAX_DEPTH} levels deep",
                    "a fleet spec is only a few levels deep",
                )
            )
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        self.active.add(ident)
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path, depth, in_alias)
            if isinstance(node, MappingNode):
                return self.mapping(node, path, depth, in_alias)
        finally:
            self.active.discard(ident)
        self.problem(node.start_mark, path, "unsupported YAML node")  # pragma: no cover
        return None  # pragma: no cover

    def scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        tag = node.tag
        value = node.value
        if has_surrogate(value):
            self.problem(
                node.start_mark,
                path,
                "the value holds a lone surrogate (an escape like \\ud800), not a character",
                "write the character itself, or a \\U escape of a real code point",
            )
            return None
        if tag == _STR_TAG:
            return value
        if tag not in _SCALAR_TAGS:
            self.problem(
                node.start_mark,
                path,
                f"unsupported YAML tag {shown(tag)}",
                "write plain values without '!' tags",
            )
            return None
        words = _TAG_WORDS.get(tag, "a value")
        if tag in (_FLOAT_TAG, _INT_TAG) and len(value) > MAX_NUMBER_CHARS:
            self.problem(
                node.start_mark,
                path,
                f"the number {shown(value, 20)} is longer than {MAX_NUMBER_CHARS} characters",
                "a spec's numbers are short: counts, ids, prices, rates",
            )
            return None
        if tag == _FLOAT_TAG:
            text = value.replace("_", "").strip()
            try:
                number = Decimal(text)
            except InvalidOperation:
                number = None
            if number is not None and number.is_finite():
                if not _decimal_in_range(number):
                    self.problem(
                        node.start_mark,
                        path,
                        f"the number {shown(value, 20)} is out of range",
                        f"numbers are at most {MAX_DECIMAL_DIGITS} digits, between "
                        f"1e-{MAX_EXPONENT} and 1e{MAX_EXPONENT}",
                    )
                    return None
                return number
        try:
            result = self.constructor.construct_object(node)
        except Exception:  # PyYAML raises KeyError, IndexError... for a value its tag refuses
            self.problem(
                node.start_mark,
                path,
                f"cannot read {shown(value)} as {words}",
                "remove the '!!' tag, or write a value of that type",
            )
            return None
        if isinstance(result, int) and not isinstance(result, bool) and abs(result) > MAX_INT:
            self.problem(
                node.start_mark,
                path,
                f"the number {shown(value, 20)} is out of range",
                "whole numbers must fit in 64 bits",
            )
            return None
        return result

    def merge(
        self, result: dict[str, Any], value: Node, path: FieldPath, depth: int, in_alias: bool
    ) -> None:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.problem(
                    source.start_mark,
                    path,
                    "'<<' merges only mappings (an alias to a mapping, or a list of them)",
                )
                continue
            merged = self.build(source, path, depth + 1, in_alias)
            if isinstance(merged, dict):
                for key, item in merged.items():
                    result.setdefault(key, item)

    def sequence(self, node: SequenceNode, path: FieldPath, depth: int, in_alias: bool) -> Any:
        if node.tag != _SEQ_TAG:
            self.problem(
                node.start_mark,
                path,
                f"unsupported YAML tag {node.tag!r}",
                "write a plain list",
            )
            return None
        items: list[Any] = []
        for index, child in enumerate(node.value):
            child_path = (*path, index)
            self.source_map.add(child_path, Spot(None, self.position(child.start_mark)))
            items.append(self.build(child, child_path, depth + 1, in_alias))
        return items

    def mapping(self, node: MappingNode, path: FieldPath, depth: int, in_alias: bool) -> Any:
        if node.tag != _MAP_TAG:
            self.problem(
                node.start_mark,
                path,
                f"unsupported YAML tag {node.tag!r}",
                "write a plain mapping",
            )
            return None
        result: dict[str, Any] = {}
        # merged keys ('<<: *base') first, so that keys written here override them
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                self.merge(result, value_node, path, depth, in_alias)
        first_seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(
                    key_node.start_mark,
                    path,
                    "a mapping key must be a plain name, not a list or mapping",
                )
                continue
            if key_node.tag not in _SCALAR_TAGS or has_surrogate(key_node.value):
                self.problem(
                    key_node.start_mark,
                    path,
                    f"the key {shown(key_node.value)} has the unsupported YAML tag "
                    f"{shown(key_node.tag)}"
                    if key_node.tag not in _SCALAR_TAGS
                    else "the key holds a lone surrogate (an escape like \\ud800)",
                    "keys are plain names, without '!' tags",
                )
                continue
            key = str(key_node.value)
            child_path = (*path, key)
            if key in first_seen:
                first = first_seen[key]
                self.problem(
                    key_node.start_mark,
                    child_path,
                    f"duplicate key {key!r}: already defined at line {first.line + 1}, "
                    f"column {first.column + 1}",
                    "YAML would silently keep only the last one; remove or rename one of them",
                )
            else:
                first_seen[key] = key_node.start_mark
            # the last definition wins, as in YAML (and it is an error anyway)
            self.source_map.spots[child_path] = Spot(
                self.position(key_node.start_mark), self.position(value_node.start_mark)
            )
            result[key] = self.build(value_node, child_path, depth + 1, in_alias)
        return result


def _problem_from_yaml_error(source: str, text: str, exc: yaml.YAMLError) -> SpecProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        parts = []
        if exc.context:
            context = exc.context.removesuffix("; first occurrence")
            joint = ", first at" if context != exc.context else " at"
            cmark = exc.context_mark
            if cmark is not None and (mark is None or cmark.line != mark.line):
                context += f"{joint} line {cmark.line + 1}, column {cmark.column + 1}"
            parts.append(context)
        if exc.problem and exc.problem != "second occurrence":
            parts.append(exc.problem)
        message = ": ".join(parts) or str(exc)
        hint: str | None = "this is not valid YAML"
        if "'\\t'" in message or "\t" in message:
            hint = "YAML does not allow tabs for indentation; use spaces"
        elif "expected a single document" in message:
            hint = "put each document in its own file"
        elif "found duplicate anchor" in message:
            hint = "give each anchor a distinct name"
        elif "found undefined alias" in message:
            hint = "define the anchor (&name) before using the alias (*name)"
        return SpecProblem(source, line, column, "", message, hint)
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        return SpecProblem(
            source,
            line,
            column,
            "",
            f"special character {exc.character!r} is not allowed",
            "remove control characters from the file",
        )
    return SpecProblem(source, 1, 1, "", f"cannot parse YAML: {exc}")  # pragma: no cover


#: libyaml (C) composes many times faster than the pure-Python parser (a 1 MiB file of flow
#: mappings: ~1 s instead of minutes on a loaded machine), but its composer recurses in C
#: without a depth guard. So the text is first *parsed* by libyaml (an event stream from a
#: state machine with explicit stacks: no recursion) to measure its nesting, and composed by
#: libyaml only when that is within ``MAX_DEPTH``; deeper input is refused without composing.
_C_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


class _TooDeepError(Exception):
    """The text nests collections deeper than ``MAX_DEPTH``, or holds more than
    ``MAX_VALUES`` values (measured before composing)."""

    def __init__(self, mark: Any, message: str | None = None, hint: str | None = None) -> None:
        super().__init__(message or "nested too deeply")
        self.mark: Any = mark
        self.message = message or f"nested more than {MAX_DEPTH} levels deep"
        self.hint = hint or "a fleet spec is only a few levels deep"


def _c_depth(text: str) -> int:
    """The deepest nesting of mappings and sequences in ``text``, from libyaml's events."""
    assert _C_LOADER is not None
    depth = deepest = values = 0
    for event in yaml.parse(text, Loader=_C_LOADER):
        if isinstance(event, yaml.NodeEvent):
            values += 1
            if values > MAX_VALUES:
                raise _TooDeepError(
                    event.start_mark,
                    f"the file holds more than {MAX_VALUES:,} values",
                    "a fleet spec holds hundreds; split the fleet or write less",
                )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH + 1:
                    raise _TooDeepError(event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return deepest


def _compose(text: str) -> Node | None:
    """Compose one document. Invalid input is always re-read by the pure-Python parser, so
    the problem reported (message and position) does not depend on libyaml being there."""
    if _C_LOADER is not None:
        try:
            _c_depth(text)
            return yaml.compose(text, Loader=_C_LOADER)
        except yaml.MarkedYAMLError as exc:
            if "maximum nesting depth" in str(exc.problem):  # libyaml's own limit (1,000)
                raise _TooDeepError(exc.problem_mark) from None
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_text(text: str, source: str, *, max_alias_nodes: int = MAX_ALIAS_NODES) -> ParsedFile:
    """Parse one YAML document whose top level must be a mapping."""
    empty = SourceMap(default_file=source)
    try:
        root = _compose(text)
    except yaml.YAMLError as exc:
        return ParsedFile(source, None, empty, [_problem_from_yaml_error(source, text, exc)])
    except _TooDeepError as deep:
        line, column = (deep.mark.line + 1, deep.mark.column + 1) if deep.mark else (1, 1)
        return ParsedFile(
            source,
            None,
            empty,
            [SpecProblem(source, line, column, "", deep.message, deep.hint)],
        )
    except RecursionError:
        return ParsedFile(
            source,
            None,
            empty,
            [
                SpecProblem(
                    source, 1, 1, "", "the document is nested too deeply", "flatten the file"
                )
            ],
        )
    if root is None:
        return ParsedFile(
            source,
            None,
            empty,
            [
                SpecProblem(
                    source,
                    1,
                    1,
                    "",
                    "the file is empty",
                    "a fleet spec is a mapping with metadata, plans, regions...",
                )
            ],
        )
    if not isinstance(root, MappingNode) or root.tag != _MAP_TAG:
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        mark = root.start_mark
        return ParsedFile(
            source,
            None,
            empty,
            [
                SpecProblem(
                    source,
                    mark.line + 1,
                    mark.column + 1,
                    "",
                    f"the top level must be a mapping of sections, found {kind}",
                    "start with 'apiVersion: fleet-reconciler/v1' and 'metadata:'",
                )
            ],
        )
    builder = _Builder(source, max_alias_nodes)
    builder.source_map.add((), Spot(None, builder.position(root.start_mark)))
    try:
        data = builder.build(root, (), 0, in_alias=False)
    except _RefusedError as refused:
        return ParsedFile(source, None, empty, [refused.problem])
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops us first
        return ParsedFile(
            source,
            None,
            empty,
            [SpecProblem(source, 1, 1, "", "the document is nested too deeply")],
        )
    return ParsedFile(source, data, builder.source_map, builder.problems)


def read_file_text(path_text: str, raw: bytes) -> tuple[str | None, SpecProblem | None]:
    """Decode a spec file's bytes as UTF-8 (a BOM is accepted)."""
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, SpecProblem(
            path_text,
            line,
            column,
            "",
            "the file is not valid UTF-8 text",
            "save it as UTF-8",
        )
