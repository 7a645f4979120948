"""Loading a fleet spec from YAML files or directories of them.

``load_spec(paths)`` reads each file (size-capped, safe YAML, duplicate keys refused, aliases
bounded), merges the files into one fleet (a name defined in two places is an error naming
both), validates the result and returns a ``LoadedSpec``; or raises ``SpecError`` carrying every
problem found, each as ``file:line:column: field.path: message (hint)``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from specs.durations import format_duration
from specs.errors import SpecError, SpecProblem
from specs.model import FleetSpec
from specs.parsing import (
    MAX_ALIAS_NODES,
    MAX_FILE_BYTES,
    FieldPath,
    ParsedFile,
    SourceMap,
    dotted,
    parse_text,
    read_file_text,
)
from specs.validating import validate_data

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_FILE_BYTES",
    "LoadedSpec",
    "SpecError",
    "SpecProblem",
    "canonical_document",
    "load_spec",
    "load_spec_text",
    "spec_hash",
]

#: Sections that several files may share: their entries are merged by name.
_MERGED: frozenset[FieldPath] = frozenset(
    {
        (),
        ("plans",),
        ("regions",),
        ("ip_pools",),
        ("warmup",),
        ("warmup", "schedules"),
        ("costs",),
        ("costs", "contracts"),
    }
)
#: Collections of named things: a name defined twice is an error naming both places.
_NAMED: frozenset[FieldPath] = frozenset(
    {("plans",), ("regions",), ("ip_pools",), ("warmup", "schedules"), ("costs", "contracts")}
)
#: Scalars each file may repeat, as long as they agree.
_REPEATABLE: frozenset[FieldPath] = frozenset({("apiVersion",), ("kind",)})
_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedSpec:
    """A validated fleet spec and where it came from."""

    spec: FleetSpec
    sources: tuple[Path, ...]
    spec_hash: str
    warnings: tuple[SpecProblem, ...] = ()
    source_map: SourceMap = field(default_factory=SourceMap, repr=False, compare=False)

    def locate(self, field_path: tuple[str | int, ...]) -> tuple[str, int, int]:
        """(file, line, column) where ``field_path`` (or its nearest written parent) is.

        Fields left at their defaults point at the nearest section that was written.
        """
        position = self.source_map.key_position(field_path)
        return position.file, position.line, position.column


def _canonical(value: Any) -> Any:
    """Plain JSON values; amounts normalized so ``9.990`` and ``9.99`` hash the same."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Decimal):
        normalized = value.normalize()
        return format(normalized if normalized != 0 else Decimal(0), "f")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Enum):
        return value.value
    return value


def canonical_document(spec: FleetSpec) -> dict[str, Any]:
    """The spec as plain JSON values (defaults included, amounts normalized, durations as
    written: ``30s``): what ``spec_hash`` hashes and ``reconcile diff`` compares."""
    document: dict[str, Any] = _canonical(spec.model_dump(mode="python"))
    return document


def spec_hash(spec: FleetSpec) -> str:
    """sha256 of the spec's canonical JSON (sorted keys, defaults included, amounts
    normalized): stable across runs, key order, file layout, comments and formatting."""
    document = _canonical(spec.model_dump(mode="python"))
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _whole_file_problem(path: str, message: str, hint: str | None = None) -> SpecProblem:
    return SpecProblem(path, 0, 0, "", message, hint)


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the link points, directly or not, at itself)"
    return exc.strerror or type(exc).__name__


def _expand(paths: Sequence[str | os.PathLike[str]], problems: list[SpecProblem]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        try:
            info = path.stat()
        except FileNotFoundError:
            problems.append(
                _whole_file_problem(
                    str(path),
                    "no such file or directory"
                    + (" (a dangling symbolic link)" if path.is_symlink() else ""),
                    "give a fleet spec file such as fleet.yaml, or a directory of them",
                )
            )
            continue
        except OSError as exc:
            problems.append(
                _whole_file_problem(str(path), f"cannot read: {_describe_os_error(exc)}")
            )
            continue
        if stat.S_ISDIR(info.st_mode):
            try:
                entries = sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix in _YAML_SUFFIXES and not p.name.startswith(".") and not p.is_dir()
                )
            except OSError as exc:
                problems.append(
                    _whole_file_problem(
                        str(path), f"cannot list directory: {_describe_os_error(exc)}"
                    )
                )
                continue
            if not entries:
                problems.append(
                    _whole_file_problem(
                        str(path),
                        "the directory holds no *.yaml or *.yml file",
                        "point at a fleet spec file or a directory of them",
                    )
                )
            candidates = entries
        else:
            candidates = [path]
        for candidate in candidates:
            try:
                key = candidate.resolve()
            except (OSError, RuntimeError):  # a symlink loop: reported when it is read
                key = candidate
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_bytes(path: Path, max_bytes: int) -> bytes | SpecProblem:
    """The file's first ``max_bytes + 1`` bytes, or why it cannot be a spec file.

    Opened without blocking (a FIFO would wait for a writer for ever) and without following a
    symlink loop; only regular files are read, and a file nobody may read (mode 000) is
    refused even when this process could read it anyway (root).
    """
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        return _whole_file_problem(name, f"cannot read: {_describe_os_error(exc)}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return _whole_file_problem(
                name,
                f"cannot read: {_kind(info.st_mode)}, not a regular file",
                "give a fleet spec file such as fleet.yaml",
            )
        if info.st_mode & 0o444 == 0:
            return _whole_file_problem(
                name,
                f"cannot read: the file is readable by nobody "
                f"(mode {stat.S_IMODE(info.st_mode):03o})",
                "chmod u+r the file if it is meant to be read",
            )
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        return _whole_file_problem(name, f"cannot read: {_describe_os_error(exc)}")
    finally:
        os.close(fd)


def _read(path: Path, max_bytes: int, max_alias_nodes: int) -> ParsedFile:
    name = str(path)
    empty = SourceMap(default_file=name)
    raw = _read_bytes(path, max_bytes)
    if isinstance(raw, SpecProblem):
        return ParsedFile(name, None, empty, [raw])
    if len(raw) > max_bytes:
        return ParsedFile(
            name,
            None,
            empty,
            [
                _whole_file_problem(
                    name,
                    f"the file is larger than the {max_bytes:,}-byte limit",
                    "split the fleet into several files in one directory",
                )
            ],
        )
    text, problem = read_file_text(name, raw)
    if text is None:
        return ParsedFile(name, None, empty, [problem] if problem else [])
    return parse_text(text, name, max_alias_nodes=max_alias_nodes)


def _merge(
    target: dict[str, Any],
    target_map: SourceMap,
    source: dict[str, Any],
    source_map: SourceMap,
    path: FieldPath,
    problems: list[SpecProblem],
) -> None:
    for key, value in source.items():
        child: FieldPath = (*path, key)
        if key not in target:
            target[key] = value
            continue
        existing = target[key]
        if child in _MERGED and isinstance(existing, dict) and isinstance(value, dict):
            _merge(existing, target_map, value, source_map, child, problems)
            continue
        if child in _REPEATABLE and existing == value:
            continue
        first = target_map.key_position(child)
        again = source_map.key_position(child)
        if path in _NAMED:
            hint = "a name may be defined only once across the files of a fleet"
        elif len(child) == 1:
            hint = (
                "only plans, regions, ip_pools, warmup.schedules and costs.contracts "
                "may be spread over several files"
            )
        else:
            hint = "a setting may be given in only one file"
        problems.append(
            SpecProblem(
                again.file,
                again.line,
                again.column,
                dotted(child),
                f"defined twice: first at {first.render()}, again here",
                hint,
            )
        )


def _finish(
    parsed: list[ParsedFile], sources: tuple[Path, ...], problems: list[SpecProblem]
) -> LoadedSpec:
    for item in parsed:
        problems.extend(item.problems)
    # a value the parser could not read is reported once (not again as a null by the models)
    unreadable = {(p.file, p.line, p.column, p.field) for p in problems}
    if any(item.fatal for item in parsed) or not parsed:
        raise SpecError(_sorted(problems))
    merged: dict[str, Any] = {}
    merged_map = SourceMap(default_file=parsed[0].source)
    for item in parsed:
        assert item.data is not None
        _merge(merged, merged_map, item.data, item.source_map, (), problems)
        merged_map.update(item.source_map)
    spec, findings = validate_data(merged, merged_map)
    problems.extend(
        p for p in findings.errors if (p.file, p.line, p.column, p.field) not in unreadable
    )
    warnings = tuple(_sorted(findings.warnings))
    if problems or spec is None:
        raise SpecError(_sorted(problems), warnings=warnings)
    return LoadedSpec(
        spec=spec,
        sources=sources,
        spec_hash=spec_hash(spec),
        warnings=warnings,
        source_map=merged_map,
    )


def _sorted(problems: list[SpecProblem]) -> list[SpecProblem]:
    return sorted(dict.fromkeys(problems), key=SpecProblem.sort_key)


def load_spec(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_alias_nodes: int = MAX_ALIAS_NODES,
) -> LoadedSpec:
    """Load, merge and validate the spec in ``paths`` (files, or directories of *.yaml/*.yml).

    Raises ``SpecError`` with every problem found (never another exception for bad input).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    problems: list[SpecProblem] = []
    if not paths:
        raise SpecError([_whole_file_problem("<no path>", "no spec file given")])
    files = _expand(paths, problems)
    parsed = [_read(path, max_bytes, max_alias_nodes) for path in files]
    if problems and not parsed:
        raise SpecError(_sorted(problems))
    return _finish(parsed, tuple(files), problems)


def load_spec_text(
    text: str,
    *,
    source: str = "<text>",
    max_alias_nodes: int = MAX_ALIAS_NODES,
) -> LoadedSpec:
    """Load and validate a spec given as YAML text (``source`` names it in problems)."""
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(
            [
                _whole_file_problem(
                    source,
                    f"the text is longer than the {MAX_FILE_BYTES:,}-character limit",
                    "split the fleet into several files in one directory",
                )
            ]
        )
    parsed = parse_text(text, source, max_alias_nodes=max_alias_nodes)
    return _finish([parsed], (), [])
