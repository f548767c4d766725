"""What a FHIR server does, fact by fact, with where each fact came from.

A :class:`ServerProfile` holds the limits that decide how to fetch from a server (may it be
searched without a patient, does it filter by ``code``, how many patients per request, how big
a page, which Bulk levels). Each limit is a :class:`Fact`: its value (``None``: unknown), its
origin (``probe``: measured on this server; ``capabilities``: its CapabilityStatement;
``vendor``: the vendor's published documentation in ``profiles/<vendor>.yaml``; ``user``:
``--server-profile FILE``) and the evidence (a request and its answer, or source tags with
their URLs). :func:`combine` merges profiles so that the first known value wins.

The vendor files record documented limits only; what the documentation does not state is
``null`` with an ``unverified`` reason, never a guess (tests/fhir/test_server_profile.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from fhir_cohort.errors import OptionError

__all__ = [
    "CODE_SUPPORT",
    "PROFILE_DIR",
    "US_CORE_CATEGORIES",
    "Fact",
    "ServerProfile",
    "VendorFile",
    "combine",
    "detect_vendor",
    "load_profile",
    "vendor_file",
    "vendor_names",
]

T = TypeVar("T")
Origin = Literal["probe", "capabilities", "vendor", "user"]
# How a server treats `code` on a type: filters by it (index), filters after reading the
# patient's rows (Epic's post-filter: correct, needs patient), returns other codes too, or
# refuses the parameter. Only the first two may be sent; the others are filtered client-side.
CodeSupport = Literal["honoured", "post-filter", "ignored", "rejected"]
CODE_SUPPORT: tuple[str, ...] = ("honoured", "post-filter", "ignored", "rejected")
BULK_LEVELS = frozenset({"system", "patient", "group"})
PROFILE_DIR = Path(__file__).parent / "profiles"

_BOOL_FACTS = (
    "population_search",
    "multi_patient",
    "include_medication",
    "last_updated",
    "type_filter",
    "type_param_repeat_ok",
    "one_export_at_a_time",
    "observation_category_required",
    "id_list",
)
_INT_FACTS = ("max_count", "max_group_size")
FACT_NAMES: tuple[str, ...] = (
    *_BOOL_FACTS,
    *_INT_FACTS,
    "bulk_levels",
    "observation_categories",
    "component_code",
)
# US Core's Observation categories (SMART Fetch's default Observation filter, S6 in the shared
# reference): what the probe names when a server wants a category and its vendor file lists none.
US_CORE_CATEGORIES: tuple[str, ...] = (
    "social-history",
    "vital-signs",
    "imaging",
    "laboratory",
    "survey",
    "exam",
    "procedure",
    "therapy",
    "activity",
)


@dataclass(frozen=True)
class Fact(Generic[T]):
    """One limit: ``value`` (None when unknown), where it came from and the evidence."""

    value: T | None = None
    origin: Origin | None = None
    source: str = ""  # "GET Condition?_count=1 -> HTTP 400 (4111)" or "[E1] https://..."
    note: str = ""

    @property
    def known(self) -> bool:
        return self.value is not None

    def to_json(self) -> dict[str, Any]:
        value: Any = self.value
        if isinstance(value, frozenset):
            value = sorted(value)
        out: dict[str, Any] = {"value": value, "origin": self.origin, "source": self.source}
        if self.note:
            out["note"] = self.note
        return out


UNKNOWN: Fact[Any] = Fact()


@dataclass(frozen=True)
class ServerProfile:
    """The server's limits; every field a :class:`Fact` (``code_honoured`` one per type)."""

    vendor: str | None = None  # a vendor file's name (epic, oracle-health, ...) or None
    vendor_why: str = ""  # how it was recognised: "software 'Epic'", "--server-profile"
    software: str | None = None
    population_search: Fact[bool] = UNKNOWN
    code_honoured: Mapping[str, Fact[str]] = field(default_factory=dict)
    multi_patient: Fact[bool] = UNKNOWN
    max_count: Fact[int] = UNKNOWN
    include_medication: Fact[bool] = UNKNOWN
    last_updated: Fact[bool] = UNKNOWN
    bulk_levels: Fact[frozenset[str]] = UNKNOWN
    type_filter: Fact[bool] = UNKNOWN
    type_param_repeat_ok: Fact[bool] = UNKNOWN
    one_export_at_a_time: Fact[bool] = UNKNOWN
    max_group_size: Fact[int] = UNKNOWN
    # Epic: a patient's Observation search that names no ``code`` must name a ``category``
    # (59108), one of ``observation_categories``; ``component_code``: how Observation's
    # component-code parameter is treated (a CodeSupport value, as code_honoured).
    observation_category_required: Fact[bool] = UNKNOWN
    observation_categories: Fact[frozenset[str]] = UNKNOWN
    component_code: Fact[str] = UNKNOWN
    # ``_id=a,b,c`` reads several resources in one search (Epic: "one or more server ids")
    id_list: Fact[bool] = UNKNOWN
    notes: tuple[str, ...] = ()
    requests: int = 0  # probe requests sent to build it (CapabilityStatement included)

    def code(self, resource_type: str) -> Fact[str]:
        return self.code_honoured.get(resource_type, UNKNOWN)

    def sends_code(self, resource_type: str) -> bool:
        """Whether a ``code`` filter on ``resource_type`` may go to the server: only where it is
        known to filter (by index or post-filter); elsewhere the client filters what arrives."""
        return self.code(resource_type).value in ("honoured", "post-filter")

    @property
    def patient_scoped(self) -> bool:
        """Known to refuse searches without a patient (Epic, Oracle Health)."""
        return self.population_search.value is False

    def patients_per_request(self, wanted: int) -> int:
        """``wanted`` where ``patient=a,b,c`` is known to work, else 1."""
        return wanted if self.multi_patient.value else 1

    def page_size(self, wanted: int) -> int:
        """``wanted`` capped at the server's known maximum ``_count``."""
        cap = self.max_count.value
        return min(wanted, cap) if cap else wanted

    def to_json(self) -> dict[str, Any]:
        """For run.json: every fact with its origin and evidence; no patient data."""
        out: dict[str, Any] = {
            "vendor": self.vendor,
            "vendor_why": self.vendor_why,
            "software": self.software,
            "requests": self.requests,
        }
        for name in ("population_search", "multi_patient", "max_count", "include_medication"):
            out[name] = getattr(self, name).to_json()
        out["code_honoured"] = {t: f.to_json() for t, f in sorted(self.code_honoured.items())}
        for name in (
            "last_updated",
            "bulk_levels",
            "type_filter",
            "type_param_repeat_ok",
            "one_export_at_a_time",
            "max_group_size",
            "observation_category_required",
            "observation_categories",
            "component_code",
            "id_list",
        ):
            out[name] = getattr(self, name).to_json()
        out["notes"] = list(self.notes)
        return out


def combine(*profiles: ServerProfile) -> ServerProfile:
    """One profile from several, the first known value of each fact winning (pass them in
    order of trust: user, probe, capabilities, vendor). Vendor, software and notes likewise
    come from the first that has them; request counts add up."""
    first = profiles[0]
    values: dict[str, Any] = {}
    for f in fields(ServerProfile):
        name = f.name
        if name in FACT_NAMES:
            facts = [getattr(p, name) for p in profiles]
            # the first known value; else the first that says why it is unknown
            values[name] = next((f for f in facts if f.known), None) or next(
                (f for f in facts if f.source), UNKNOWN
            )
    codes: dict[str, Fact[str]] = {}
    for rtype in dict.fromkeys(t for p in profiles for t in p.code_honoured):
        facts = [p.code(rtype) for p in profiles]
        codes[rtype] = next((f for f in facts if f.known), None) or next(
            (f for f in facts if f.source), UNKNOWN
        )
    named = next((p for p in profiles if p.vendor), first)
    notes: list[str] = []
    for p in profiles:
        notes.extend(n for n in p.notes if n not in notes)
    return replace(
        first,
        vendor=named.vendor,
        vendor_why=named.vendor_why,
        software=next((p.software for p in profiles if p.software), None),
        code_honoured=codes,
        notes=tuple(notes),
        requests=sum(p.requests for p in profiles),
        **values,
    )


# -- vendor files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VendorFile:
    """A vendor's file: its profile (origin ``vendor``) and how to recognise its servers."""

    name: str
    title: str
    profile: ServerProfile
    detect: Mapping[str, tuple[re.Pattern[str], ...]]  # software / publisher / url patterns
    sources: Mapping[str, str]  # tag -> "https://..." or "github.com/owner/repo path"


def vendor_names() -> tuple[str, ...]:
    """The vendor files shipped with the package (``profiles/*.yaml``)."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


@cache
def vendor_file(name: str) -> VendorFile:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise OptionError(
            f"no server profile named {name!r}; known: {', '.join(vendor_names())} "
            "(or give a profile file)"
        )
    return _parse(_read_yaml(path), str(path), origin="vendor")


def load_profile(spec: str) -> ServerProfile:
    """``--server-profile NAME|FILE``: a vendor's profile by name, or a file in the same schema
    whose facts count as the user's (origin ``user``). A file may name ``vendor:`` a known
    vendor to start from that vendor's profile and override some of its facts."""
    if spec in vendor_names():
        return replace(vendor_file(spec).profile, vendor_why="--server-profile")
    path = Path(spec)
    if not path.is_file():
        raise OptionError(
            f"--server-profile {spec}: neither a known profile ({', '.join(vendor_names())}) "
            "nor a file"
        )
    data = _read_yaml(path)
    own = _parse(data, str(path), origin="user", need_sources=False).profile
    base = data.get("vendor")
    if isinstance(base, str) and base in vendor_names():
        return replace(combine(own, vendor_file(base).profile), vendor_why="--server-profile")
    return replace(
        own, vendor=base if isinstance(base, str) else None, vendor_why="--server-profile"
    )


def detect_vendor(statement: Mapping[str, Any], base_url: str = "") -> tuple[str, str] | None:
    """The vendor whose file's patterns match the CapabilityStatement's ``software.name``,
    ``publisher`` or URL (``implementation.url``, else the base URL): (name, why)."""
    software = statement.get("software")
    implementation = statement.get("implementation")
    texts = {
        "software": (software or {}).get("name") if isinstance(software, Mapping) else None,
        "publisher": statement.get("publisher"),
        "url": ((implementation or {}).get("url") if isinstance(implementation, Mapping) else None)
        or base_url,
    }
    for key in ("software", "publisher", "url"):
        text = texts[key]
        if not isinstance(text, str) or not text:
            continue
        for name in vendor_names():
            if any(p.search(text) for p in vendor_file(name).detect.get(key, ())):
                return name, f"{key} {text!r}" if key != "url" else "its URL"
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OptionError(f"server profile {path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise OptionError(f"server profile {path}: not a mapping")
    return data


def _source_text(tag: str, entry: Any, where: str) -> str:
    if not isinstance(entry, Mapping):
        raise OptionError(f"{where}: source {tag} is not a mapping")
    if isinstance(entry.get("url"), str) and entry["url"].startswith("https://"):
        return entry["url"]
    if isinstance(entry.get("repo"), str) and isinstance(entry.get("path"), str):
        return f"github.com/{entry['repo']} {entry['path']}"
    raise OptionError(f"{where}: source {tag} needs an https url, or repo and path")


def _parse(
    data: Mapping[str, Any], where: str, *, origin: Origin, need_sources: bool = True
) -> VendorFile:
    sources = {
        str(tag): _source_text(str(tag), entry, where)
        for tag, entry in (data.get("sources") or {}).items()
    }
    limits = data.get("limits") or {}
    if not isinstance(limits, Mapping):
        raise OptionError(f"{where}: limits is not a mapping")
    unknown = set(limits) - {*FACT_NAMES, "code_honoured"}
    if unknown:
        raise OptionError(f"{where}: unknown limits {sorted(unknown)}; known: {list(FACT_NAMES)}")

    def fact(name: str, raw: Any, check: Any) -> Fact[Any]:
        key = f"{where}: limits.{name}"
        if not isinstance(raw, Mapping) or "value" not in raw:
            raise OptionError(f"{key}: needs value (null when unknown)")
        value = raw["value"]
        tags = raw.get("sources") or []
        if value is None:
            reason = raw.get("unverified")
            if need_sources and not reason:
                raise OptionError(f"{key}: an unknown value needs an unverified reason")
            return Fact(None, origin, "UNVERIFIED", str(reason or "")) if reason else UNKNOWN
        value = check(key, value)
        missing = [t for t in tags if t not in sources]
        if missing:
            raise OptionError(f"{key}: sources {missing} not listed under sources")
        if need_sources and not tags:
            raise OptionError(f"{key}: a known value needs its sources")
        cited = "; ".join(f"[{t}] {sources[t]}" for t in tags) or f"--server-profile {where}"
        return Fact(value, origin, cited, str(raw.get("note") or ""))

    values: dict[str, Any] = {}
    for name in _BOOL_FACTS:
        if name in limits:
            values[name] = fact(name, limits[name], _check_bool)
    for name in _INT_FACTS:
        if name in limits:
            values[name] = fact(name, limits[name], _check_int)
    if "bulk_levels" in limits:
        values["bulk_levels"] = fact("bulk_levels", limits["bulk_levels"], _check_levels)
    if "observation_categories" in limits:
        values["observation_categories"] = fact(
            "observation_categories", limits["observation_categories"], _check_categories
        )
    if "component_code" in limits:
        values["component_code"] = fact("component_code", limits["component_code"], _check_code)
    codes = limits.get("code_honoured") or {}
    if not isinstance(codes, Mapping):
        raise OptionError(f"{where}: limits.code_honoured is not a mapping of types")
    code_facts = {str(t): fact(f"code_honoured.{t}", raw, _check_code) for t, raw in codes.items()}
    notes = []
    for item in data.get("notes") or []:
        text = item.get("text") if isinstance(item, Mapping) else item
        tags = (item.get("sources") or []) if isinstance(item, Mapping) else []
        if not isinstance(text, str):
            raise OptionError(f"{where}: a note needs text")
        missing = [t for t in tags if t not in sources]
        if missing or (need_sources and not tags):
            raise OptionError(f"{where}: note {text[:40]!r}: sources {missing or 'missing'}")
        notes.append(text + "".join(f" [{t}]" for t in tags))
    vendor = data.get("vendor")
    profile = ServerProfile(
        vendor=vendor if isinstance(vendor, str) else None,
        vendor_why="",
        code_honoured=code_facts,
        notes=tuple(notes),
        **values,
    )
    detect = {
        key: tuple(re.compile(p, re.IGNORECASE) for p in (data.get("detect") or {}).get(key) or [])
        for key in ("software", "publisher", "url")
    }
    return VendorFile(
        name=str(vendor or Path(where).stem),
        title=str(data.get("title") or vendor or ""),
        profile=profile,
        detect=detect,
        sources=sources,
    )


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{key}: expected true, false or null, got {value!r}")
    return value


def _check_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{key}: expected a whole number above 0 or null, got {value!r}")
    return value


def _check_levels(key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not set(value) <= BULK_LEVELS:
        raise OptionError(f"{key}: expected a list of {sorted(BULK_LEVELS)}, got {value!r}")
    return frozenset(value)


def _check_categories(key: str, value: Any) -> frozenset[str]:
    ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
    if not ok or any(("," in v or "&" in v) for v in value):
        raise OptionError(f"{key}: expected a list of category codes, got {value!r}")
    return frozenset(value)


def _check_code(key: str, value: Any) -> str:
    if value not in CODE_SUPPORT:
        raise OptionError(f"{key}: expected one of {CODE_SUPPORT} or null, got {value!r}")
    return str(value)


def describe(profile: ServerProfile, types: Iterable[str] = ()) -> str:
    """One line for logs and the strategy note: the facts that decide the fetch."""
    parts = []
    if profile.vendor:
        parts.append(profile.vendor)
    pop = profile.population_search.value
    parts.append(
        "searches without a patient: " + ("unknown" if pop is None else "yes" if pop else "no")
    )
    for t in types:
        value = profile.code(t).value
        if value is not None:
            parts.append(f"{t} code: {value}")
    return "; ".join(parts)
