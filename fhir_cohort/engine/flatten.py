"""Resource dicts -> rows of the tidy tables (column order of ``fhir_cohort.engine.tables``).

Pure, no I/O, allocation-light: rows are plain tuples. Only codings in ``relevant`` (normalised
(system, code) pairs some criterion can use) produce condition/observation/medication rows.

Medication resolution: a ``medicationReference`` to a separate Medication resource needs that
Medication. Feed Medications first (``DiskSource`` orders Medication files first; call
:meth:`Flattener.add_medication` or just :meth:`Flattener.flatten` on them). A resource whose
Medication has not been seen yet is held back and flattened by :meth:`Flattener.finish`, so
stream order never loses a row; call ``finish()`` once after the last resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any

from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir.wire import (
    duration_days,
    format_token,
    normalizers,
    parse_date,
    reference_id,
    supply_end,
)

__all__ = ["Flattener", "MedicationLineFilter", "make_line_filter"]

Row = tuple[Any, ...]
ErrorHandler = Callable[[MalformedResourceError], None]

_MED_TYPES = frozenset(
    {"MedicationStatement", "MedicationRequest", "MedicationDispense", "MedicationAdministration"}
)
_OPEN_STATUSES = frozenset({"active", "on-hold"})
_TITER = re.compile(r"1\s*:\s*\d")
_CACHE_LIMIT = 200_000


def _first_code(cc: Any) -> str | None:
    """Code of the first coding of a status-like CodeableConcept."""
    if isinstance(cc, dict):
        for c in cc.get("coding") or ():
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                return c["code"]
    return None


def _num(x: Any) -> float | None:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return float(x)
    return None


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


class Flattener:
    """Turns resources into (table name, row) pairs.

    ``relevant``: normalised (system, code) pairs any criterion can use.
    ``medication_words``: lower-case ingredient names / brand synonyms; a medication without a
    relevant coding gives a text row only when its text or a coding display contains one of them
    (ASCII case-insensitive). ``None`` means any medication text gives a text row.
    Structural problems (no id, no usable Patient subject) go to ``on_error`` (or raise with
    ``strict``) only for resources that would otherwise give rows.
    """

    def __init__(
        self,
        relevant: Iterable[tuple[str, str]],
        medication_words: Iterable[str] | None = None,
        *,
        on_error: ErrorHandler | None = None,
        strict: bool = False,
    ) -> None:
        self.relevant: frozenset[tuple[str, str]] = frozenset(relevant)
        self.medication_words: tuple[bytes, ...] | None = (
            None
            if medication_words is None
            else tuple(sorted({w.strip().lower().encode() for w in medication_words if w.strip()}))
        )
        self.on_error = on_error
        self.strict = strict
        self.medications: dict[str, dict[str, Any]] = {}
        self.pending: list[tuple[dict[str, Any], str]] = []
        self._norm_system, self._norm_code = normalizers()
        self._sys_cache: dict[str, str] = {}
        self._code_cache: dict[tuple[str, str], tuple[str, str]] = {}
        self._word_cache: dict[str, bool] = {}

    # -- errors --------------------------------------------------------------------------------

    def _report(self, location: str, reason: str) -> None:
        err = MalformedResourceError(location, reason)
        if self.strict:
            raise err
        if self.on_error is not None:
            self.on_error(err)

    # -- codings -------------------------------------------------------------------------------

    def _norm(self, system: str, code: str) -> tuple[str, str]:
        key = (system, code)
        hit = self._code_cache.get(key)
        if hit is not None:
            return hit
        s = self._sys_cache.get(system)
        if s is None:
            s = self._norm_system(system)
            self._sys_cache[system] = s
        out = (s, self._norm_code(s, code))
        if len(self._code_cache) >= _CACHE_LIMIT:
            self._code_cache.clear()
        self._code_cache[key] = out
        return out

    def _codings(self, cc: Any) -> Iterable[tuple[str, str, str | None]]:
        """Normalised (system, code, display) of every coding with a system and a code."""
        for c in _get(cc, "coding") or ():
            if not isinstance(c, dict):
                continue
            system, code = c.get("system"), c.get("code")
            if isinstance(system, str) and isinstance(code, str) and code:
                s, k = self._norm(system, code)
                d = c.get("display")
                yield s, k, d if isinstance(d, str) else None

    def _relevant(self, cc: Any) -> list[tuple[str, str, str | None]]:
        rel = self.relevant
        return [t for t in self._codings(cc) if (t[0], t[1]) in rel]

    def tokens(self, cc: Any) -> tuple[str, ...]:
        """Every coding of a CodeableConcept (or list of them) as normalised "system|code"."""
        if isinstance(cc, list):
            return tuple(format_token(s, k) for x in cc for s, k, _ in self._codings(x))
        return tuple(format_token(s, k) for s, k, _ in self._codings(cc))

    def _patient(self, resource: dict[str, Any], location: str) -> str | None:
        pid = reference_id(_get(resource.get("subject"), "reference"), "Patient")
        if pid is None:
            self._report(location, f"{resource.get('resourceType')} without a Patient subject")
        return pid

    # -- entry points --------------------------------------------------------------------------

    def add_medication(self, resource: dict[str, Any], location: str = "") -> None:
        """Remember a separate Medication resource for later medicationReference resolution."""
        mid = resource.get("id")
        if isinstance(mid, str) and mid:
            self.medications[mid] = resource
        else:
            self._report(location, "Medication without id")

    def flatten(self, resource: dict[str, Any], location: str) -> list[tuple[str, Row]]:
        """(table name, row) pairs for one resource; [] for types no table holds."""
        rtype = resource.get("resourceType")
        if rtype == "Medication":
            self.add_medication(resource, location)
            return []
        if rtype not in _HANDLED:
            return []
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            self._report(location, f"{rtype} without id")
            return []
        if rtype == "Patient":
            return [("patients", self._patient_row(resource))]
        if rtype == "Condition":
            return self._condition(resource, rid, location)
        if rtype == "Procedure":
            return self._procedure(resource, rid, location)
        if rtype == "Observation":
            return self._observation(resource, rid, location)
        return self._medication(resource, rtype, rid, location, final=False)

    def finish(self) -> list[tuple[str, Row]]:
        """Rows of resources held back for a Medication that had not been seen yet.

        A reference that still does not resolve falls back to medicationReference.display (as a
        text row) and is reported to ``on_error`` (never raised: the resource itself is valid).
        """
        held, self.pending = self.pending, []
        out: list[tuple[str, Row]] = []
        for resource, location in held:
            out.extend(
                self._medication(resource, resource["resourceType"], resource["id"], location, True)
            )
        return out

    # -- Patient ---------------------------------------------------------------------------------

    @staticmethod
    def _patient_row(r: dict[str, Any]) -> Row:
        birth = r.get("birthDate")
        gender = r.get("gender")
        deceased: bool | None = None
        deceased_date: date | None = None
        db = r.get("deceasedBoolean")
        if isinstance(db, bool):
            deceased = db
        ddt = r.get("deceasedDateTime")
        if isinstance(ddt, str):
            deceased = True
            deceased_date = parse_date(ddt)
        return (
            r["id"],
            birth if isinstance(birth, str) else None,
            gender if isinstance(gender, str) else None,
            deceased,
            deceased_date,
        )

    # -- Condition / Procedure -------------------------------------------------------------------

    def _condition(self, r: dict[str, Any], rid: str, loc: str) -> list[tuple[str, Row]]:
        codings = self._relevant(r.get("code"))
        if not codings:
            return []
        pid = self._patient(r, loc)
        if pid is None:
            return []
        onset = parse_date(r.get("onsetDateTime")) or parse_date(
            _get(r.get("onsetPeriod"), "start")
        )
        abatement_date: date | None = None
        has_abatement = False
        for key in ("abatementDateTime", "abatementPeriod", "abatementAge", "abatementRange"):
            if key in r:
                has_abatement = True
        if isinstance(r.get("abatementString"), str):
            has_abatement = True
        if r.get("abatementBoolean") is True:
            has_abatement = True
        if has_abatement:
            period = r.get("abatementPeriod")
            abatement_date = (
                parse_date(r.get("abatementDateTime"))
                or parse_date(_get(period, "start"))
                or parse_date(_get(period, "end"))
            )
        head = (pid, "Condition", rid)
        tail = (
            _first_code(r.get("clinicalStatus")),
            _first_code(r.get("verificationStatus")),
            onset,
            abatement_date,
            has_abatement,
            parse_date(r.get("recordedDate")),
            self.tokens(r.get("severity")),
        )
        return [("conditions", (*head, s, k, d, *tail)) for s, k, d in codings]

    def _procedure(self, r: dict[str, Any], rid: str, loc: str) -> list[tuple[str, Row]]:
        codings = self._relevant(r.get("code"))
        if not codings:
            return []
        pid = self._patient(r, loc)
        if pid is None:
            return []
        status = r.get("status")
        performed = parse_date(r.get("performedDateTime")) or parse_date(
            _get(r.get("performedPeriod"), "start")
        )
        head = (pid, "Procedure", rid)
        tail = (
            f"procedure:{status}" if isinstance(status, str) else None,
            None,
            performed,
            None,
            False,
            None,
            (),
        )
        return [("conditions", (*head, s, k, d, *tail)) for s, k, d in codings]

    # -- Medications -----------------------------------------------------------------------------

    def _resolve_medication(
        self, r: dict[str, Any]
    ) -> tuple[Any, dict[str, Any] | None, str | None, bool]:
        """(CodeableConcept, Medication resource or None, reference display, missing).

        ``missing`` is True when a separate Medication is referenced but unknown so far.
        """
        cc = r.get("medicationCodeableConcept")
        if cc is not None:
            return cc, None, None, False
        ref = r.get("medicationReference")
        if ref is None:  # R5 CodeableReference, accepted for robustness
            med = r.get("medication")
            cc = _get(med, "concept")
            if cc is not None:
                return cc, None, None, False
            ref = _get(med, "reference")
        if not isinstance(ref, dict):
            return None, None, None, False
        display = ref.get("display") if isinstance(ref.get("display"), str) else None
        target = ref.get("reference")
        if not isinstance(target, str):
            return None, None, display, False
        if target.startswith("#"):
            for c in r.get("contained") or ():
                if (
                    isinstance(c, dict)
                    and c.get("id") == target[1:]
                    and c.get("resourceType") == "Medication"
                ):
                    return c.get("code"), c, display, False
            return None, None, display, False
        mid = reference_id(target, "Medication")
        med_res = self.medications.get(mid) if mid is not None else None
        if med_res is None:
            return None, None, display, mid is not None
        return med_res.get("code"), med_res, display, False

    def _word_text(self, cc: Any, extra: str | None) -> str | None:
        """The medication text that names a medication word (or any text if words is None)."""
        candidates: list[str] = []
        t = _get(cc, "text")
        if isinstance(t, str) and t:
            candidates.append(t)
        for c in _get(cc, "coding") or ():
            d = _get(c, "display")
            if isinstance(d, str) and d:
                candidates.append(d)
        if extra:
            candidates.append(extra)
        words = self.medication_words
        cache = self._word_cache
        for text in candidates:
            if words is None:
                return text
            # Medication strings repeat (the same product display on every dispense): remember
            # the answer instead of scanning hundreds of words again.
            hit = cache.get(text)
            if hit is None:
                low = text.encode("utf-8", "surrogatepass").lower()
                hit = any(w in low for w in words)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[text] = hit
            if hit:
                return text
        return None

    def _medication(
        self, r: dict[str, Any], rtype: str, rid: str, loc: str, final: bool
    ) -> list[tuple[str, Row]]:
        cc, med, ref_display, missing = self._resolve_medication(r)
        if missing and not final:
            self.pending.append((r, loc))
            return []
        codings = self._relevant(cc)
        if not codings and med is not None:
            # A compounded Medication may be coded only by its ingredients.
            for ing in med.get("ingredient") or ():
                codings.extend(self._relevant(_get(ing, "itemCodeableConcept")))
        text_only: str | None = None
        if not codings:
            text_only = self._word_text(cc, ref_display)
            if text_only is None:
                if missing:
                    self._report_soft(loc, f"{rtype} references a Medication not in the source")
                return []
        if missing:
            self._report_soft(loc, f"{rtype} references a Medication not in the source")
        pid = self._patient(r, loc)
        if pid is None:
            return []
        status = r.get("status") if isinstance(r.get("status"), str) else None
        intent = r.get("intent") if isinstance(r.get("intent"), str) else None
        dnp = r.get("doNotPerform") if isinstance(r.get("doNotPerform"), bool) else None
        start, end, end_rule = _INTERVALS[rtype](r, status)
        route_codes, route_text = self._routes(r, rtype)
        form = _get(med, "form")
        form_codes = self.tokens(form) if form is not None else ()
        form_text = _get(form, "text") if isinstance(_get(form, "text"), str) else None
        cc_text = _get(cc, "text") if isinstance(_get(cc, "text"), str) else None
        head = (pid, rtype, rid, status, intent, dnp)
        tail = (start, end, end_rule, route_codes, route_text, form_codes, form_text)
        if text_only is not None:
            return [("medications", (*head, None, None, None, text_only, *tail))]
        return [("medications", (*head, s, k, d, cc_text, *tail)) for s, k, d in codings]

    def _report_soft(self, location: str, reason: str) -> None:
        if self.on_error is not None:
            self.on_error(MalformedResourceError(location, reason))

    def _routes(self, r: dict[str, Any], rtype: str) -> tuple[tuple[str, ...], str | None]:
        if rtype == "MedicationAdministration":
            dosages: Any = [r.get("dosage")]
        elif rtype == "MedicationStatement":
            dosages = r.get("dosage") or ()
        else:
            dosages = r.get("dosageInstruction") or ()
        codes: list[str] = []
        texts: list[str] = []
        for dose in dosages:
            route = _get(dose, "route")
            if route is None:
                continue
            codes.extend(self.tokens(route))
            t = _get(route, "text")
            if isinstance(t, str) and t and t not in texts:
                texts.append(t)
        return tuple(dict.fromkeys(codes)), ("; ".join(texts) if texts else None)

    # -- Observation -----------------------------------------------------------------------------

    def _observation(self, r: dict[str, Any], rid: str, loc: str) -> list[tuple[str, Row]]:
        codings = self._relevant(r.get("code"))
        comps: list[tuple[tuple[str, str, str | None], dict[str, Any]]] = []
        for comp in r.get("component") or ():
            if isinstance(comp, dict):
                comps.extend((c, comp) for c in self._relevant(comp.get("code")))
        if not codings and not comps:
            return []
        pid = self._patient(r, loc)
        if pid is None:
            return []
        status = r.get("status") if isinstance(r.get("status"), str) else None
        when = (
            parse_date(r.get("effectiveDateTime"))
            or parse_date(_get(r.get("effectivePeriod"), "start"))
            or parse_date(r.get("effectiveInstant"))
            or parse_date(r.get("issued"))
        )
        out: list[tuple[str, Row]] = []
        if codings:
            values = self._obs_values(r)
            for s, k, d in codings:
                out.append(("observations", (pid, rid, status, s, k, d, when, *values)))
        for (s, k, d), comp in comps:
            values = self._obs_values(comp)
            out.append(("observations", (pid, rid, status, s, k, d, when, *values)))
        return out

    def _obs_values(self, o: dict[str, Any]) -> Row:
        """value_type .. interpretation_codes of an Observation or an Observation.component."""
        value_type = "none"
        value_string: str | None = None
        value_number: float | None = None
        comparator: str | None = None
        unit: str | None = None
        value_codes: tuple[str, ...] = ()
        num: float | None = None
        den: float | None = None
        if "valueQuantity" in o:
            q = o["valueQuantity"]
            value_type = "quantity"
            value_number = _num(_get(q, "value"))
            comparator = _get(q, "comparator")
            unit = _get(q, "unit") or _get(q, "code")
        elif "valueString" in o:
            value_type = "string"
            v = o["valueString"]
            value_string = v if isinstance(v, str) else None
        elif "valueCodeableConcept" in o:
            cc = o["valueCodeableConcept"]
            value_type = "codeable"
            value_codes = self.tokens(cc)
            # The text travels in value_string so a text-only answer can still be read.
            t = _get(cc, "text")
            if not isinstance(t, str):
                t = next((d for _, _, d in self._codings(cc) if d), None)
            value_string = t
        elif "valueRatio" in o:
            ratio = o["valueRatio"]
            value_type = "ratio"
            num = _num(_get(_get(ratio, "numerator"), "value"))
            den = _num(_get(_get(ratio, "denominator"), "value"))
        elif "valueBoolean" in o:
            value_type = "boolean"
            v = o["valueBoolean"]
            value_string = ("true" if v else "false") if isinstance(v, bool) else None
        elif "valueInteger" in o:
            value_type = "quantity"
            value_number = _num(o["valueInteger"])
        ref_high: float | None = None
        ref_cmp: str | None = None
        ref_string: str | None = None
        ranges = o.get("referenceRange")
        if isinstance(ranges, list) and ranges and isinstance(ranges[0], dict):
            high = ranges[0].get("high")
            ref_high = _num(_get(high, "value"))
            c = _get(high, "comparator")
            ref_cmp = c if isinstance(c, str) else None
            text = ranges[0].get("text")
            if isinstance(text, str) and _TITER.search(text):
                ref_string = text
        return (
            value_type,
            value_string,
            value_number,
            comparator if isinstance(comparator, str) else None,
            unit if isinstance(unit, str) else None,
            value_codes,
            num,
            den,
            ref_high,
            ref_cmp,
            ref_string,
            self.tokens(o.get("interpretation")),
        )


_HANDLED = frozenset({"Patient", "Condition", "Procedure", "Observation"}) | _MED_TYPES


# -- exposure intervals (spec I3.1) --------------------------------------------------------------

Interval = tuple[date | None, date | None, str]


def _timing_bounds(dosages: Any) -> tuple[dict[str, Any] | None, float | None]:
    """First timing.repeat.boundsPeriod and first boundsDuration (in days) of the dosages."""
    period: dict[str, Any] | None = None
    days: float | None = None
    for dose in dosages or ():
        rep = _get(_get(dose, "timing"), "repeat")
        if not isinstance(rep, dict):
            continue
        if period is None and isinstance(rep.get("boundsPeriod"), dict):
            period = rep["boundsPeriod"]
        if days is None and "boundsDuration" in rep:
            days = duration_days(rep["boundsDuration"])
    return period, days


def _statement_interval(r: Mapping[str, Any], status: str | None) -> Interval:
    period = r.get("effectivePeriod")
    bp, bd = _timing_bounds(r.get("dosage"))
    if isinstance(period, dict):
        start = parse_date(period.get("start"))
        end = parse_date(period.get("end"))
        if end is not None:
            return start, end, "explicit"
        if status in _OPEN_STATUSES:
            return start, None, "to_asof"
    else:
        start = parse_date(r.get("effectiveDateTime"))
    if start is None:
        start = parse_date(_get(bp, "start"))
    bp_end = parse_date(_get(bp, "end"))
    if bp_end is not None:
        return start, bp_end, "explicit"
    if start is not None and bd is not None:
        end = supply_end(start, bd)
        if end is not None:
            return start, end, "explicit"
    return start, None, "unknown"


def _request_interval(r: Mapping[str, Any], status: str | None) -> Interval:
    bp, bd = _timing_bounds(r.get("dosageInstruction"))
    dispense = r.get("dispenseRequest")
    start = (
        parse_date(_get(bp, "start"))
        or parse_date(_get(_get(dispense, "validityPeriod"), "start"))
        or parse_date(r.get("authoredOn"))
    )
    bp_end = parse_date(_get(bp, "end"))
    if bp_end is not None:
        return start, bp_end, "explicit"
    if start is not None:
        if bd is not None and (end := supply_end(start, bd)) is not None:
            return start, end, "explicit"
        supply = duration_days(_get(dispense, "expectedSupplyDuration"))
        if supply is not None:
            repeats = _get(dispense, "numberOfRepeatsAllowed")
            n = repeats if isinstance(repeats, int) and not isinstance(repeats, bool) else 0
            end = supply_end(start, supply * (1 + max(n, 0)))
            if end is not None:
                return start, end, "explicit"
    if status in _OPEN_STATUSES:
        return start, None, "to_asof"
    return start, None, "unknown"


def _dispense_interval(r: Mapping[str, Any], status: str | None) -> Interval:
    start = parse_date(r.get("whenHandedOver")) or parse_date(r.get("whenPrepared"))
    days = duration_days(r.get("daysSupply"), default_unit="d")
    if start is not None and days is not None and (end := supply_end(start, days)) is not None:
        return start, end, "explicit"
    return start, None, "unknown"


def _administration_interval(r: Mapping[str, Any], status: str | None) -> Interval:
    period = r.get("effectivePeriod")
    if isinstance(period, dict):
        start = parse_date(period.get("start"))
        end = parse_date(period.get("end")) or start
        return start or end, end, "per_dose"
    when = parse_date(r.get("effectiveDateTime"))
    return when, when, "per_dose"


_INTERVALS: dict[str, Callable[[Mapping[str, Any], str | None], Interval]] = {
    "MedicationStatement": _statement_interval,
    "MedicationRequest": _request_interval,
    "MedicationDispense": _dispense_interval,
    "MedicationAdministration": _administration_interval,
}


# -- line filter ---------------------------------------------------------------------------------

_CODE_VALUE = re.compile(rb'"code"\s*:\s*"((?:[^"\\]|\\.)*)"')
_RTYPE_ANY = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]*)"')
_RTYPE_KEEP = re.compile(rb'"resourceType"\s*:\s*"(?:Patient|Medication)"')
_ROW_TYPES_B = frozenset(t.encode() for t in _HANDLED)
_MED_TYPES_B = frozenset(t.encode() for t in _MED_TYPES)


_CODE_PLAIN = re.compile(rb'"code"\s*:\s*"([^"]*)"')


def _plain_line_has_code(line: bytes, spellings: frozenset[bytes], codes: frozenset[bytes]) -> bool:
    """Whether an ASCII line without escapes holds a relevant "code" value.

    One C-level findall and a set lookup against every common spelling decide nearly every
    line; values with blanks (" M32.14", "M32 .14") take the loose comparison that
    normalize_code makes, so no line that could give a row is dropped.
    """
    values = _CODE_PLAIN.findall(line)
    if not spellings.isdisjoint(values):
        return True
    return b" " in b"\x00".join(values) and any(
        _filter_key(v) in codes for v in values if b" " in v
    )


def _spellings(codes: Iterable[bytes]) -> Iterable[bytes]:
    """Each code as data may spell it: as is, lower case, and with a dot after 3 or 4
    characters (ICD-10-CM M32.14, ICD-9-CM 710.0 and E812.0)."""
    for code in codes:
        forms = [code]
        if len(code) > 3:
            forms += [code[:3] + b"." + code[3:], code[:4] + b"." + code[4:]]
        for f in forms:
            yield f
            yield f.lower()


def _one_object(line: bytes) -> bool:
    """Whether a raw line looks like one JSON object. Lines that do not (truncated, garbage)
    pass every filter, so the reader parses and reports them instead of dropping them."""
    if line.startswith(b"{") and line.endswith((b"}\n", b"}", b"}\r\n")):
        return True
    body = line.strip()
    return not body or (body.startswith(b"{") and body.endswith(b"}"))


def _filter_key(code: bytes) -> bytes:
    """Loose spelling used by the line filter: a superset of what normalize_code merges."""
    return code.strip().replace(b".", b"").replace(b" ", b"").upper()


class MedicationLineFilter:
    """Cheap, picklable pre-parse test of a raw NDJSON line (see :func:`make_line_filter`).

    Tests, cheapest and most selective first: the top-level resourceType (Patient and Medication
    always pass; types no table holds never do); then the JSON string tokens of the line against
    the relevant codes in filter spelling (dots and spaces removed, upper-cased; done on the
    whole line in C, so an ASCII line without escapes costs a few microseconds); lines that are
    not ASCII or contain escapes take an exact regex path instead. Medication* lines without a
    relevant code pass when medication text could matter (flatten decides by word): scanning
    their text for words in Python costs more than parsing them with orjson.
    """

    def __init__(self, relevant_codes: Iterable[str], words: Iterable[str] | None) -> None:
        self.codes: frozenset[bytes] = frozenset(
            _filter_key(c.encode("utf-8", "surrogatepass")) for c in relevant_codes
        )
        # Spellings data commonly uses for the same code (ICD with its dot, lower case), so
        # the common line is decided by exact set lookups on the code values alone.
        self.spellings: frozenset[bytes] = frozenset(_spellings(self.codes))
        self.text_matters = words is None or any(w.strip() for w in words)

    @staticmethod
    def _top_type(line: bytes) -> bytes | None:
        """The line's own resourceType, or None when a contained one could come first."""
        m = _RTYPE_ANY.search(line, 0, 200)
        if m is None:
            m = _RTYPE_ANY.search(line)
            if m is None:
                return None
        contained = line.find(b'"contained"', 0, m.start())
        if contained != -1:
            return None
        return m.group(1)

    def _has_code(self, line: bytes) -> bool:
        codes = self.codes
        if line.isascii() and b"\\" not in line:
            return _plain_line_has_code(line, self.spellings, codes)
        for m in _CODE_VALUE.finditer(line):
            value = m.group(1)
            # Escaped or non-ASCII values may normalise in ways bytes cannot follow: keep them.
            if b"\\" in value or not value.isascii() or _filter_key(value) in codes:
                return True
        return False

    def __call__(self, line: bytes) -> bool:
        if not _one_object(line):
            return True  # let the parser report it with its file:line
        rtype = self._top_type(line)
        if rtype is not None:
            if rtype == b"Patient" or rtype == b"Medication":
                return True
            if rtype not in _ROW_TYPES_B:
                return False
        elif _RTYPE_KEEP.search(line) is not None:
            return True
        if self._has_code(line):
            return True
        if rtype is not None and rtype not in _MED_TYPES_B:
            return False
        # medicationReference (R4) and medication (R5 CodeableReference) need resolution.
        if b'"medicationReference"' in line or b'"medication"' in line:
            return True
        return self.text_matters and b'"medication' in line


class CodeLineFilter:
    """Filter for a file of one known type whose rows come from codes only (Condition,
    Procedure, Observation): one C-level findall and a set lookup per line.

    With :meth:`count_rejected` it also counts each rejected line by its "code" values (the
    findall it has already made) and keeps the first line of each key, so the unmapped-codes
    report costs one dict update per line (``fhir_cohort.engine.unmapped``).
    """

    def __init__(self, base: MedicationLineFilter) -> None:
        self.spellings = base.spellings
        self.codes = base.codes
        self.base = base
        self.rejected: dict[bytes, int] | None = None
        self.samples: dict[bytes, bytes] = {}
        self.on_new_key: Callable[[], None] | None = None

    def count_rejected(
        self,
        counts: dict[bytes, int],
        samples: dict[bytes, bytes],
        on_new_key: Callable[[], None] | None = None,
    ) -> None:
        """Count rejected lines into ``counts`` (key: their "code" values), keep the first line
        of each key in ``samples``; ``on_new_key`` runs after a key is added (to bound them)."""
        self.rejected, self.samples, self.on_new_key = counts, samples, on_new_key

    def __call__(self, line: bytes) -> bool:
        if not _one_object(line):
            return True  # let the parser report it with its file:line
        if line.isascii() and b"\\" not in line:
            rejected = self.rejected
            if rejected is None:
                return _plain_line_has_code(line, self.spellings, self.codes)
            values = _CODE_PLAIN.findall(line)
            if not self.spellings.isdisjoint(values):
                return True
            key = b"\x00".join(values)
            if b" " in key and any(_filter_key(v) in self.codes for v in values if b" " in v):
                return True
        else:
            if self.base._has_code(line):
                return True
            rejected = self.rejected
            if rejected is None:
                return False
            key = b"\x00".join(m.group(1) for m in _CODE_VALUE.finditer(line))
        n = rejected.get(key)
        if n is None:
            rejected[key] = 1
            self.samples[key] = line
            if self.on_new_key is not None:
                self.on_new_key()
        else:
            rejected[key] = n + 1
        return False


CODE_ONLY_TYPES = frozenset({"Condition", "Procedure", "Observation"})


def make_line_filter(
    relevant_codes: Iterable[str] | Iterable[tuple[str, str]],
    words: Iterable[str] | None,
    resource_type: str | None = None,
) -> MedicationLineFilter | CodeLineFilter:
    """A filter that rejects only lines that cannot produce a row for a Flattener built with the
    same relevant codes and words. It accepts Patient and Medication lines, lines holding a
    relevant code as a JSON string, and Medication* lines that reference a Medication or (when
    ``words`` is None or non-empty) name a medication at all; it rejects types no table holds.

    ``relevant_codes`` are codes or (system, code) pairs. It may accept lines that give no row.
    With ``resource_type`` of a file whose rows come from codes only (Condition, Procedure,
    Observation) the filter is a single findall and set lookup per line: about 1M lines/s, a
    third of the cost of ``orjson.loads`` (docs/benchmarks.md).
    """
    codes = [c[1] if isinstance(c, tuple) else c for c in relevant_codes]
    base = MedicationLineFilter(codes, words)
    if resource_type in CODE_ONLY_TYPES:
        return CodeLineFilter(base)
    return base
