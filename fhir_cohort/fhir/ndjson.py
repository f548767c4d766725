"""NDJSON files: the one reader and the one writer of the ``fhir`` package.

:func:`iter_ndjson` reads every NDJSON file the package reads (on-disk sources, fetch
snapshots and staging files, Bulk error files): gzip by suffix, a BOM on line 1, invalid UTF-8
inside strings replaced by U+FFFD, optionally one line-aligned byte range. It yields parsed
values and leaves what counts as a good record to the caller. :func:`write_ndjson` writes one
atomically with mode 0600 (:func:`fhir_cohort.files.private_writer`).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_cohort.errors import SourceError
from fhir_cohort.files import private_writer

__all__ = [
    "BOM",
    "BadLine",
    "iter_lines",
    "iter_ndjson",
    "iter_objects",
    "parse_json",
    "parse_line",
    "read_bytes",
    "read_json",
    "write_ndjson",
]

# Sees each raw line (bytes, newline included) and may reject it before it is parsed.
LineFilter = Callable[[bytes], bool]
# Sees a block of whole lines (each ending with a newline but perhaps the file's last) and
# returns the (index in the block, line) of the lines to parse, in order: a line filter
# applied to a whole block at once (fhir_cohort.engine.read).
BlockFilter = Callable[[bytes], list[tuple[int, bytes]]]
# Bytes read per block by a block filter: big enough that per-block costs vanish, small
# enough that a worker holds little.
BLOCK_BYTES = 4 * 1024 * 1024

BOM = b"\xef\xbb\xbf"  # accepted at the start of a file
# What reading a damaged file raises: truncated gzip is EOFError, corrupt deflate zlib.error.
_READ_ERRORS = (OSError, EOFError, zlib.error)
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not JSON. ``reason`` names the damage, never the line's content."""

    reason: str


def _json_reason(exc: orjson.JSONDecodeError) -> str:
    # orjson refuses more than 1024 levels; its message holds positions only, never content.
    return "invalid JSON (nested too deeply)" if "depth" in str(exc) else "invalid JSON"


def _why(exc: BaseException) -> str:
    """A read failure's kind, without the OS message (which repeats the path)."""
    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile):
        return f"damaged or truncated gzip: {type(exc).__name__}"
    return type(exc).__name__


def _open_bytes(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _lenient(data: bytes, exc: orjson.JSONDecodeError) -> tuple[Any, bool]:
    """After ``orjson.loads(data)`` raised ``exc``: the value with invalid UTF-8 replaced, or
    a BadLine. Bytes outside strings stay invalid JSON after replacement, so only text changes.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return orjson.loads(data.decode("utf-8", "replace")), True
        except orjson.JSONDecodeError:
            pass
    return BadLine(_json_reason(exc)), False


def parse_line(line: bytes) -> tuple[Any, bool]:
    """One NDJSON line, as :func:`iter_ndjson` parses it: (value or :class:`BadLine`, whether
    invalid UTF-8 was replaced). For code that sees lines one by one (a download being checked,
    a file being filtered); a BOM is the caller's to strip."""
    try:
        return orjson.loads(line), False
    except orjson.JSONDecodeError as exc:
        return _lenient(line, exc)


def read_json(path: str | Path) -> tuple[Any, bool]:
    """A whole JSON file (a Bundle): (value or :class:`BadLine`, whether UTF-8 was replaced).

    Gzip by suffix and a BOM as in :func:`iter_ndjson`; an unreadable file is a SourceError.
    """
    return parse_json(read_bytes(path))


def read_bytes(path: str | Path) -> bytes:
    """A whole file's bytes, decompressed when its name ends in .gz; an unreadable file is
    a SourceError naming it."""
    name = os.fspath(path)
    try:
        if name.lower().endswith(".gz"):
            with gzip.open(name, "rb") as fh:
                return fh.read()
        # Without a file object: a folder of Bundles is thousands of small files, and the
        # buffered reader's layers cost more than the read itself.
        fd = os.open(name, _O_READ)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1)
            if len(data) != size:  # a read cut short (2 GB), a file that grew, a pipe: on
                rest = [data]
                while chunk := os.read(fd, 1 << 20):
                    rest.append(chunk)
                data = b"".join(rest)
            return data
        finally:
            os.close(fd)
    except _READ_ERRORS as exc:
        raise SourceError(f"{Path(path)}: cannot read ({_why(exc)})") from exc


def parse_json(data: bytes) -> tuple[Any, bool]:
    """:func:`read_json` of bytes already read (and decompressed)."""
    if data.startswith(BOM):
        data = data[3:]
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError as exc:
        return _lenient(data, exc)


def iter_ndjson(
    path: str | Path,
    *,
    byte_range: tuple[int, int, int] | None = None,
    line_filter: LineFilter | None = None,
    on_lines: Callable[[int], None] | None = None,
    block_filter: BlockFilter | None = None,
) -> Iterator[tuple[int, Any, bool]]:
    """(line number, value, replaced) for each non-blank line of an NDJSON file.

    ``value`` is the parsed JSON (any type) or a :class:`BadLine`; ``replaced`` says invalid
    UTF-8 was decoded with U+FFFD to parse it. ``byte_range`` is ``(start, end, first_line)``
    of an uncompressed file, on line boundaries, with the number of the line at ``start``.
    ``line_filter`` may skip a raw line before it is parsed; ``on_lines`` is told, once the file
    is read, how many lines it had. A file that cannot be read is a :class:`SourceError`.
    ``block_filter`` (instead of ``line_filter``) sees the file in blocks of whole lines.
    """
    path = Path(path)
    if block_filter is not None:
        yield from _iter_blocks(path, byte_range, block_filter, on_lines)
        return
    try:
        with _open_bytes(path) as fh:
            lines: Iterator[bytes] | IO[bytes] = fh
            first = 1
            if byte_range is not None:
                start, end, first = byte_range
                fh.seek(start)
                # One read of the range, then C-speed line iteration over it.
                lines = io.BytesIO(fh.read(end - start))
            yield from iter_lines(lines, first, line_filter=line_filter, on_lines=on_lines)
    except _READ_ERRORS as exc:
        raise SourceError(f"{path}: cannot read ({_why(exc)})") from exc


def iter_lines(
    lines: Iterable[bytes],
    first: int = 1,
    *,
    line_filter: LineFilter | None = None,
    on_lines: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Any, bool]]:
    """:func:`iter_ndjson` over lines already read (by a file, or by Spark's text reader):
    ``first`` is the number of the first line (a BOM is stripped on line 1 only)."""
    loads = orjson.loads
    lineno = first - 1
    for lineno, line in enumerate(lines, first):
        if lineno == 1 and line.startswith(BOM):
            line = line[3:]
        if line_filter is not None and not line_filter(line):
            continue
        if not line.strip():
            continue
        try:
            value = loads(line)
        except orjson.JSONDecodeError as exc:
            yield (lineno, *_lenient(line, exc))
            continue
        yield lineno, value, False
    if on_lines is not None:
        on_lines(lineno - first + 1)


def _blocks(fh: IO[bytes], remaining: int | None) -> Iterator[bytes]:
    """Blocks of whole lines of ``fh`` (up to ``remaining`` bytes): each ends with a newline
    but the last, which is the file's last line when that has none."""
    carry = b""
    while True:
        n = BLOCK_BYTES if remaining is None else min(BLOCK_BYTES, remaining)
        data = fh.read(n) if n > 0 else b""
        if remaining is not None:
            remaining -= len(data)
        if not data:
            if carry:
                yield carry
            return
        if carry:
            data = carry + data
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            carry = b""
            yield data
        elif cut:
            carry = data[cut:]
            yield data[:cut]
        else:
            carry = data  # one line longer than a block: read on


def _iter_blocks(
    path: Path,
    byte_range: tuple[int, int, int] | None,
    block_filter: BlockFilter,
    on_lines: Callable[[int], None] | None,
) -> Iterator[tuple[int, Any, bool]]:
    """iter_ndjson with a block filter: the same lines, numbers and values."""
    loads = orjson.loads
    try:
        with _open_bytes(path) as fh:
            first, remaining = 1, None
            if byte_range is not None:
                start, end, first = byte_range
                fh.seek(start)
                remaining = end - start
            before = first - 1  # lines before the block
            for block in _blocks(fh, remaining):
                if before == 0 and block.startswith(BOM):
                    block = block[3:]
                for i, line in block_filter(block):
                    if not line.strip():
                        continue
                    try:
                        value = loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield (before + 1 + i, *_lenient(line, exc))
                        continue
                    yield before + 1 + i, value, False
                before += block.count(b"\n") + (not block.endswith(b"\n"))
            if on_lines is not None:
                on_lines(before - first + 1)
    except _READ_ERRORS as exc:
        raise SourceError(f"{path}: cannot read ({_why(exc)})") from exc


def iter_objects(path: str | Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of an NDJSON file the package wrote itself (a fetch snapshot or its
    staging file): a line that is not JSON means the file was damaged, a SourceError."""
    for lineno, value, _ in iter_ndjson(path):
        if type(value) is BadLine:
            raise SourceError(f"{path}:{lineno}: not JSON")
        if isinstance(value, dict):
            yield value


def write_ndjson(path: str | Path, records: Iterable[Any]) -> None:
    """Write ``records`` one JSON per line, atomically, 0600 (missing folders 0700)."""
    with private_writer(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
