"""Which FHIR references resolve to a resource of the source, and which do not.

FHIR R4 (http.html#resolving, references.html, bundle.html#references) says a Reference
resolves as follows, and nothing else resolves here; in particular a reference is never
resolved by the tail of its URL:

- relative ``Type/id`` (also ``Type/id/_history/v``: the engine keeps one version per id) to
  that resource of the source;
- absolute ``<base>/Type/id[/_history/v]`` only when ``<base>`` is one of the source's own
  bases (a server's configured base URL, the base a Bulk export or snapshot recorded, or
  ``--base-url``); another server's URL, or any absolute URL when the source has no base, does
  not resolve;
- ``#id`` only to a resource in the ``contained`` list of the same resource;
- ``urn:uuid:``/``urn:oid:`` only within their Bundle, which the reader rewrites to ``Type/id``
  (:mod:`fhir_cohort.fhir.sources`); anywhere else they do not resolve;
- a reference with only an ``identifier`` (a logical reference) or a conditional one
  (``Patient?identifier=..``) does not resolve; neither does one whose ``type`` contradicts it.

:meth:`ReferenceResolver.resolve` returns a ``(form, target)`` pair; the forms in
:data:`UNRESOLVED_FORMS` are what the reader counts as unresolved references.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "UNRESOLVED_FORMS",
    "ReferenceResolver",
    "base_from_export_request",
    "normalize_base",
    "recorded_base",
]

# Resolved: target is the id ("local") or the contained resource dict ("contained").
LOCAL = "local"
CONTAINED = "contained"
# Not a reference to a resource of the expected type at all (no reference, another type).
MISSING = "missing"
OTHER_TYPE = "other_type"
# References that name a target this source cannot resolve (counted as unresolved).
UNRESOLVED_FORMS: tuple[str, ...] = (
    "absolute_other_base",  # an absolute URL of another server than the source's own
    "absolute_no_base",  # an absolute URL while the source has no base (plain files)
    "contained_missing",  # "#id" with no contained resource of that id and type
    "contained_patient",  # "#id" naming a contained Patient: not a patient of the source
    "urn",  # urn:uuid / urn:oid outside its Bundle (or not an entry of it)
    "identifier",  # identifier-only (logical) reference
    "conditional",  # Type?search
    "type_mismatch",  # Reference.type contradicts the reference
    "malformed",  # not Type/id[/_history/v] after the base
)

_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")


def normalize_base(url: str) -> str:
    """A base URL in the form references are compared with: no query, fragment, user info or
    trailing slash; scheme and host lower-case (paths stay case-sensitive).

    >>> normalize_base("HTTPS://EHR.example.org/fhir/R4/?x=1")
    'https://ehr.example.org/fhir/R4'
    """
    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2].lower()  # no user info; the port kept as written
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def base_from_export_request(url: str) -> str | None:
    """The FHIR base of a Bulk kick-off URL (``<base>[/Patient|/Group/<id>]/$export``)."""
    path = normalize_base(url)
    head, sep, _ = path.partition("/$export")
    if not sep:
        return None
    segments = head.rsplit("/", 2)
    if len(segments) == 3 and segments[1] == "Group":
        return segments[0]
    if head.endswith("/Patient"):
        return head[: -len("/Patient")]
    return head or None


def recorded_base(folder: str | Path) -> str | None:
    """The base URL an export folder recorded: ``export_state.json`` / ``fetch_state.json``
    (written by this tool) or a Bulk ``manifest.json``'s ``request``; None for plain files."""
    root = Path(folder)
    if not root.is_dir():
        return None

    def read(name: str) -> str | None:
        try:
            return (root / name).read_text(encoding="utf-8")
        except OSError:
            return None

    return recorded_base_of(read)


def recorded_base_of(read: Callable[[str], str | None]) -> str | None:
    """:func:`recorded_base` of a folder whose files ``read(name)`` returns (None: no such
    file), for folders that are not local paths (the Spark engine's Hadoop URIs)."""
    for name, key in (
        ("export_state.json", "base_url"),
        ("fetch_state.json", "base_url"),
        ("manifest.json", "request"),
    ):
        text = read(name)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            return base_from_export_request(value) if key == "request" else normalize_base(value)
    return None


class ReferenceResolver:
    """Resolves Reference values against the source's own bases (picklable, cheap to build)."""

    def __init__(self, bases: Iterable[str | None] = ()) -> None:
        self.bases: tuple[str, ...] = tuple(
            sorted({normalize_base(b) for b in bases if isinstance(b, str) and b.strip()})
        )

    def __repr__(self) -> str:
        return f"ReferenceResolver({list(self.bases)!r})"

    def _strip_base(self, ref: str) -> str | None:
        """The part of an absolute reference after one of the own bases, or None."""
        if not self.bases:
            return None
        scheme, sep, rest = ref.partition("://")
        host, slash, path = rest.partition("/")
        norm = f"{scheme.lower()}{sep}{host.lower()}{slash}{path}"
        for base in self.bases:
            if norm.startswith(base) and norm[len(base) : len(base) + 1] == "/":
                return norm[len(base) + 1 :]
        return None

    def resolve(
        self, ref: Any, expected_type: str, container: Mapping[str, Any] | None = None
    ) -> tuple[str, Any]:
        """``(form, target)`` for a Reference dict that should point at ``expected_type``.

        ``("local", id)`` for a resource of the source, ``("contained", resource)`` for a
        resource contained in ``container``; ``("missing", None)`` when there is no reference,
        ``("other_type", None)`` when it names another type; else one of
        :data:`UNRESOLVED_FORMS` and None.
        """
        if not isinstance(ref, Mapping):
            return MISSING, None
        target = ref.get("reference")
        declared = ref.get("type")
        if not isinstance(target, str) or not target:
            return ("identifier", None) if ref.get("identifier") is not None else (MISSING, None)
        if target[0] == "#":
            for c in (container or {}).get("contained") or ():
                if isinstance(c, Mapping) and c.get("id") == target[1:] and target[1:]:
                    rtype = c.get("resourceType")
                    if isinstance(declared, str) and declared != rtype:
                        return "type_mismatch", None
                    if rtype != expected_type:
                        return (
                            ("contained_patient", None)
                            if rtype == "Patient"
                            else ("contained_missing", None)
                        )
                    return CONTAINED, c
            return "contained_missing", None
        if target.startswith("urn:"):
            return "urn", None
        if "?" in target:
            return "conditional", None
        if ":" in target:  # an absolute URL: ids and type names hold no colon
            rel = self._strip_base(target)
            if rel is None:
                return ("absolute_other_base" if self.bases else "absolute_no_base"), None
            target = rel
        parts = target.split("/")
        n = len(parts)
        if not (n == 2 or (n == 4 and parts[2] == "_history" and parts[3])):
            return "malformed", None
        rtype, rid = parts[0], parts[1]
        if not rid or _TYPE.fullmatch(rtype) is None:
            return "malformed", None
        if isinstance(declared, str) and declared != rtype:
            return "type_mismatch", None
        if rtype != expected_type:
            return OTHER_TYPE, None
        return LOCAL, rid
