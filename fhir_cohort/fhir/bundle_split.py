"""Split a Bundle's bytes into its entries without building them (msgspec), for the reader.

Parsing a whole Bundle with orjson builds every entry's objects, and most entries of a real
Bundle (Encounters, Observations without a relevant code) are then thrown away. msgspec
validates the whole document at C speed and gives each entry as a span of the input
(``msgspec.Raw``) and, in a second decode, the few fields of each entry's resource that decide
whether it must be read (``resourceType``, ``id``, ``subject``, and ``code`` and ``component``
as spans). Only the entries that are read are then parsed, with orjson, from their spans.

:func:`split_bundle` returns None whenever that could read a file differently from
``orjson.loads`` of the whole file, and the reader then parses it whole as before: msgspec is
not installed, the bytes are not valid UTF-8 (orjson's reading replaces it and reports the
file), the document is not a Bundle object with an ``entry`` array of objects whose
``resource`` is an object or null and whose ``resourceType`` is a string, anything msgspec
rejects (the whole parse then reports it), or a number orjson would refuse as infinite.
Whitespace, key order, duplicate keys (the last one wins in both) and escapes are msgspec's to
handle, so pretty-printed Bundles split too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:
    import msgspec
except ImportError:  # a declared dependency; without it every Bundle is parsed whole
    msgspec = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "SplitBundle", "split_bundle"]

AVAILABLE = msgspec is not None
_BOM = b"\xef\xbb\xbf"
# Digits as "0", "E" and "+" as "e", the rest as is: what _maybe_infinite searches with memmem
# (an exponent of three digits or more, signed or not, holds "e000").
_DIGITS = bytes.maketrans(b"123456789E+", b"000000000ee")
_LONG_RUN = b"0" * 300


@dataclass(frozen=True, slots=True)
class SplitBundle:
    """A Bundle's entries: ``spans[i]`` the bytes of entry i, ``heads[i]`` its fullUrl and
    resource head (``heads[i].resource`` None when the entry has no resource or a null one)."""

    spans: list[Any]
    heads: list[Any]


if msgspec is not None:
    # gc=False: nothing here refers back to a head, and tracking a million small objects
    # costs more than decoding them.
    class ResourceHead(msgspec.Struct, gc=False):
        """The fields of an entry's resource the reader's entry filter decides on; ``subject``,
        ``code`` and ``component`` as the spans of their values (empty when absent)."""

        resourceType: str | None = None
        id: object = None
        subject: msgspec.Raw = msgspec.Raw()
        code: msgspec.Raw = msgspec.Raw()
        component: msgspec.Raw = msgspec.Raw()

    class EntryHead(msgspec.Struct, gc=False):
        fullUrl: object = None
        resource: ResourceHead | None = None

    class _Heads(msgspec.Struct):
        entry: list[EntryHead] = msgspec.field(default_factory=list)

    class _Spans(msgspec.Struct):
        resourceType: object = None
        entry: list[msgspec.Raw] = msgspec.field(default_factory=list)

    _SPANS = msgspec.json.Decoder(_Spans)
    _HEADS = msgspec.json.Decoder(_Heads)
    _REFUSED: tuple[type[BaseException], ...] = (msgspec.MsgspecError, RecursionError, ValueError)


def split_bundle(data: bytes) -> SplitBundle | None:
    """The entries of a Bundle file's bytes (decompressed), or None: parse it whole."""
    if msgspec is None:
        return None
    if data.startswith(_BOM):
        data = data[3:]
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        spans = _SPANS.decode(data)
        if spans.resourceType != "Bundle":
            return None
        heads = _HEADS.decode(data)
    except _REFUSED:
        return None
    if len(heads.entry) != len(spans.entry) or _maybe_infinite(data):
        return None
    return SplitBundle(spans.entry, heads.entry)


def _maybe_infinite(data: bytes) -> bool:
    """Whether the bytes may hold a number orjson refuses as infinite (msgspec does not read
    the numbers it skips): 300 digits in a row, or a number token with an exponent of three
    digits or more. A string that looks like one only costs the whole parse. C-speed searches;
    Python looks only at an "e" before three digits (hex in ids: a few per Bundle)."""
    t = data.translate(_DIGITS)
    if _LONG_RUN in t:
        return True
    i = t.find(b"e000")
    while i != -1:
        if _number_token(t, i - 1 if t[i - 1] == _E else i, i + 4):
            return True
        i = t.find(b"e000", i + 1)
    return False


def _number_token(t: bytes, i: int, j: int) -> bool:
    """Whether the exponent at t[i:j] (digits as "0") belongs to a number token: digits (and
    a dot) before it, then perhaps a minus and blanks after ":", "," or "["; more digits after
    it, then a blank, ",", "}" or "]"."""
    k = i
    while k and t[k - 1] in _MANTISSA:
        k -= 1
    if k == i:
        return False
    if k and t[k - 1] == _MINUS:
        k -= 1
    while k and t[k - 1] in _BLANKS:
        k -= 1
    if k and t[k - 1] not in _VALUE_START:
        return False
    while j < len(t) and t[j] == _ZERO:
        j += 1
    return j == len(t) or t[j] in _VALUE_END


_MANTISSA = frozenset(b"0.")
_MINUS = ord("-")
_E = ord("e")
_ZERO = ord("0")
_BLANKS = frozenset(b" \t\r\n")
_VALUE_START = frozenset(b":,[")
_VALUE_END = frozenset(b" \t\r\n,}]")
