"""Resource dicts -> rows of the tidy tables (column order of ``fhir_cohort.engine.tables``).

Pure, no I/O, allocation-light: rows are plain tuples. Only codings in ``relevant`` (normalised
(system, code) pairs some criterion can use) produce condition/observation/medication rows.

References resolve only as FHIR says (:mod:`fhir_cohort.fhir.references`): the subject must be
a Patient of the source (relative, or absolute with the source's own base), never one found by
the tail of another server's URL, a ``urn:uuid`` outside its Bundle or a contained Patient;
the rest are counted in the ledger as unresolved references. Every parsed copy of a resource and
the copy behind each row go to the :class:`~fhir_cohort.engine.dedup.Ledger`, which keeps one
version per resource.

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

from fhir_cohort.engine.dedup import Ledger, version_key, winner
from fhir_cohort.errors import MalformedResourceError
from fhir_cohort.fhir.references import CONTAINED, LOCAL, MISSING, OTHER_TYPE, ReferenceResolver
from fhir_cohort.fhir.resource_types import RESOURCE_TYPES
from fhir_cohort.fhir.wire import (
    add_days,
    date_bounds,
    duration_days,
    format_token,
    normalizers,
    parse_date,
    supply_end,
)

__all__ = ["Flattener", "MedicationLineFilter", "make_line_filter"]

Row = tuple[Any, ...]
ErrorHandler = Callable[[MalformedResourceError], None]

_MED_TYPES = frozenset(
    {"MedicationStatement", "MedicationRequest", "MedicationDispense", "MedicationAdministration"}
)
_OPEN_STATUSES = frozenset({"active", "on-hold"})
_HAS_DIGIT = re.compile(r"\d")
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


def _text(cc: Any) -> str | None:
    """CodeableConcept.text (a condition query may read a class named there)."""
    t = _get(cc, "text")
    return t if isinstance(t, str) and t else None


def _bounds(*values: Any) -> tuple[date | None, date | None]:
    """(earliest day, latest day or None) of the first readable FHIR date among ``values``.

    A partial date ("2026-09", "2026") is a range (v1.1); the latest day is None when the date is
    full, so the common case costs one parse_date and stores nothing extra.
    """
    for v in values:
        lo = parse_date(v)
        if lo is not None:
            if len(v) >= 10:
                return lo, None
            b = date_bounds(v)
            return lo, (b[1] if b is not None else None)
    return None, None


def _age(q: Any) -> tuple[float, str] | None:
    """(value, unit) of an Age quantity, raw: the engine dates it from the birthDate."""
    value = _num(_get(q, "value"))
    unit = _get(q, "code") if isinstance(_get(q, "code"), str) else _get(q, "unit")
    if value is None or not isinstance(unit, str) or not unit:
        return None
    return value, unit


def _concept_texts(cc: Any, parts: list[str]) -> list[str]:
    """Append the codings' displays and the text of a route / dose form CodeableConcept to
    ``parts`` (no repeats), so words such as "Inhalation" or "Topical" are seen even when the
    code is unknown."""
    if isinstance(cc, dict):
        for c in cc.get("coding") or ():
            d = _get(c, "display")
            if isinstance(d, str) and d and d not in parts:
                parts.append(d)
        t = cc.get("text")
        if isinstance(t, str) and t and t not in parts:
            parts.append(t)
    return parts


class Flattener:
    """Turns resources into (table name, row) pairs.

    ``relevant``: normalised (system, code) pairs any criterion can use.
    ``medication_words``: lower-case ingredient names / brand synonyms; a medication without a
    relevant coding gives a text row only when its text or a coding display contains one of them
    (ASCII case-insensitive). ``None`` means any medication text gives a text row.
    Structural problems (no id, no Patient subject) go to ``on_error`` (or raise with
    ``strict``) only for resources that would otherwise give rows.
    ``refs`` resolves references against the source's own bases (default: none, so absolute
    URLs do not resolve); ``ledger`` records copies, rows and unresolved references.
    """

    def __init__(
        self,
        relevant: Iterable[tuple[str, str]],
        medication_words: Iterable[str] | None = None,
        *,
        on_error: ErrorHandler | None = None,
        strict: bool = False,
        refs: ReferenceResolver | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.relevant: frozenset[tuple[str, str]] = frozenset(relevant)
        self.medication_words: tuple[bytes, ...] | None = (
            None
            if medication_words is None
            else tuple(sorted({w.strip().lower().encode() for w in medication_words if w.strip()}))
        )
        self.on_error = on_error
        self.strict = strict
        self.refs = refs if refs is not None else ReferenceResolver()
        self.ledger = ledger if ledger is not None else Ledger()
        self.medications: dict[str, dict[str, Any]] = {}
        # (version, lastUpdated, location key) of each medication, to keep the latest copy.
        self.medication_keys: dict[str, tuple[int, int, int]] = {}
        self.pending: list[tuple[dict[str, Any], str, int]] = []
        self._subject: tuple[Any, tuple[str, Any]] = (None, (MISSING, None))
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

    def _subject_of(self, resource: dict[str, Any]) -> tuple[str, Any]:
        """(form, target) of the resource's subject, resolved once per resource."""
        if self._subject[0] is not resource:
            self._subject = (
                resource,
                self.refs.resolve(resource.get("subject"), "Patient", resource),
            )
        return self._subject[1]

    def subject_unresolved(self, resource: dict[str, Any]) -> bool:
        """Whether the last flattened resource's subject is a reference that did not resolve."""
        subject = self._subject
        return subject[0] is resource and subject[1][0] not in (LOCAL, MISSING, OTHER_TYPE)

    def _patient(self, resource: dict[str, Any], location: str) -> str | None:
        """The subject's Patient id; a missing or non-Patient subject is reported as
        malformed, a reference that does not resolve is counted as unresolved."""
        form, target = self._subject_of(resource)
        if form == LOCAL:
            return target  # type: ignore[no-any-return]
        rtype = str(resource.get("resourceType"))
        if form in (MISSING, OTHER_TYPE):
            self._report(location, f"{rtype} without a Patient subject")
        else:
            # A contained Patient (form "contained") is nobody the source screens.
            form = "contained_patient" if form == CONTAINED else form
            self.ledger.unresolved_reference(location, rtype, "subject", form)
        return None

    # -- entry points --------------------------------------------------------------------------

    def add_medication(self, resource: dict[str, Any], location: str = "", src: int = 0) -> None:
        """Remember a separate Medication resource for later medicationReference resolution.

        Of two copies with the same id the later one (dedup rule) is kept.
        """
        mid = resource.get("id")
        if not isinstance(mid, str) or not mid:
            self._report(location, "Medication without id")
            return
        self.ledger.copy_of("Medication", mid, None, resource, src)
        key = (*version_key(resource), src)
        old = self.medication_keys.get(mid)
        if old is None or winner([old, key])[0] == 1:
            self.medications[mid] = resource
            self.medication_keys[mid] = key

    def flatten(
        self, resource: dict[str, Any], location: str, src: int = 0
    ) -> list[tuple[str, Row]]:
        """(table name, row) pairs for one resource; [] for types no table holds.

        ``src`` is the location key of the resource (:func:`fhir_cohort.engine.dedup.location_key`)
        that the ledger records with the copy and its rows.
        """
        rtype = resource.get("resourceType")
        if rtype == "Medication":
            self.add_medication(resource, location, src)
            return []
        if rtype not in _HANDLED:
            return []
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            self._report(location, f"{rtype} without id")
            return []
        ledger = self.ledger
        if rtype == "Patient":
            ledger.copy_of(rtype, rid, rid, resource, src)
            ledger.row("patients", src)
            return [("patients", self._patient_row(resource))]
        self._subject = (resource, self.refs.resolve(resource.get("subject"), "Patient", resource))
        form, target = self._subject[1]
        ledger.copy_of(rtype, rid, target if form == LOCAL else None, resource, src)
        if rtype == "Condition":
            out = self._condition(resource, rid, location)
        elif rtype == "Procedure":
            out = self._procedure(resource, rid, location)
        elif rtype == "Observation":
            out = self._observation(resource, rid, location)
        else:
            out = self._medication(resource, rtype, rid, location, final=False, src=src)
        for table, _ in out:
            ledger.row(table, src)
        return out

    def finish(
        self, on_empty: Callable[[dict[str, Any]], None] | None = None
    ) -> list[tuple[str, Row]]:
        """Rows of resources held back for a Medication that had not been seen yet.

        A reference that still does not resolve falls back to medicationReference.display (as a
        text row) and is reported to ``on_error`` (never raised: the resource itself is valid).
        ``on_empty`` sees each held-back resource that still gives no row (the unmapped report).
        """
        held, self.pending = self.pending, []
        out: list[tuple[str, Row]] = []
        for resource, location, src in held:
            rows = self._medication(
                resource, resource["resourceType"], resource["id"], location, True
            )
            if not rows and on_empty is not None:
                on_empty(resource)
            for table, _ in rows:
                self.ledger.row(table, src)
            out.extend(rows)
        return out

    # -- Patient ---------------------------------------------------------------------------------

    @staticmethod
    def _patient_row(r: dict[str, Any]) -> Row:
        birth = r.get("birthDate")
        gender = r.get("gender")
        deceased: bool | None = None
        deceased_date: date | None = None
        deceased_high: date | None = None
        db = r.get("deceasedBoolean")
        if isinstance(db, bool):
            deceased = db
        ddt = r.get("deceasedDateTime")
        if isinstance(ddt, str):
            # A present but unreadable date still says deceased; the engine treats it as undated.
            deceased = True
            deceased_date, deceased_high = _bounds(ddt)
        return (
            r["id"],
            birth if isinstance(birth, str) else None,
            gender if isinstance(gender, str) else None,
            deceased,
            deceased_date,
            deceased_high,
        )

    # -- Condition / Procedure -------------------------------------------------------------------

    def _condition(self, r: dict[str, Any], rid: str, loc: str) -> list[tuple[str, Row]]:
        codings = self._relevant(r.get("code"))
        if not codings:
            return []
        pid = self._patient(r, loc)
        if pid is None:
            return []
        onset, onset_high = _bounds(r.get("onsetDateTime"), _get(r.get("onsetPeriod"), "start"))
        abatement_date: date | None = None
        abatement_high: date | None = None
        abatement_age: tuple[float, str] | None = None
        has_abatement = (
            any(
                k in r
                for k in ("abatementDateTime", "abatementPeriod", "abatementAge", "abatementRange")
            )
            or isinstance(r.get("abatementString"), str)
            or r.get("abatementBoolean") is True
        )
        if has_abatement:
            abatement_date, abatement_high = _bounds(r.get("abatementDateTime"))
            period = r.get("abatementPeriod")
            if abatement_date is None and isinstance(period, dict):
                # An estimated abatement: some day from the start's earliest to the end's latest.
                lo, lo_high = _bounds(period.get("start"))
                hi, hi_high = _bounds(period.get("end"))
                abatement_date = lo or hi
                last = (hi_high or hi) if hi is not None else (lo_high or lo)
                abatement_high = last if last is not None and last != abatement_date else None
            if abatement_date is None:
                # abatementAge, or an age Range's low end; dated from birthDate by the engine.
                abatement_age = _age(r.get("abatementAge")) or _age(
                    _get(r.get("abatementRange"), "low")
                )
        recorded, recorded_high = _bounds(r.get("recordedDate"))
        head = (pid, "Condition", rid)
        tail = (
            _first_code(r.get("clinicalStatus")),
            _first_code(r.get("verificationStatus")),
            onset,
            onset_high,
            abatement_date,
            abatement_high,
            abatement_age,
            has_abatement,
            recorded,
            recorded_high,
            self.tokens(r.get("severity")),
            _text(r.get("code")),
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
        performed, performed_high = _bounds(
            r.get("performedDateTime"), _get(r.get("performedPeriod"), "start")
        )
        # A performedPeriod spans start..end: any of its days may fall in a window (a dialysis
        # course that ends within 90 days of S), so its end widens the range like a partial date.
        end_lo, end_hi = _bounds(_get(r.get("performedPeriod"), "end"))
        last = end_hi or end_lo
        if performed is not None and last is not None and last > (performed_high or performed):
            performed_high = last
        head = (pid, "Procedure", rid)
        tail = (
            f"procedure:{status}" if isinstance(status, str) else None,
            None,
            performed,
            performed_high,
            None,
            None,
            None,
            False,
            None,
            None,
            (),
            _text(r.get("code")),
        )
        return [("conditions", (*head, s, k, d, *tail)) for s, k, d in codings]

    # -- Medications -----------------------------------------------------------------------------

    def _resolve_medication(
        self, r: dict[str, Any], loc: str = ""
    ) -> tuple[Any, dict[str, Any] | None, str | None, bool]:
        """(CodeableConcept, Medication resource or None, reference display, missing).

        ``missing`` is True when a Medication of the source is referenced but unknown so far.
        A reference that cannot resolve (another server, urn:uuid outside its Bundle, an absent
        contained resource) is counted as unresolved; its display may still give a text row.
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
        form, target = self.refs.resolve(ref, "Medication", r)
        if form == CONTAINED:
            return target.get("code"), target, display, False
        if form == LOCAL:
            med_res = self.medications.get(target)
            if med_res is None:
                return None, None, display, True
            return med_res.get("code"), med_res, display, False
        if form not in (MISSING, OTHER_TYPE):
            self.ledger.unresolved_reference(
                loc, str(r.get("resourceType")), "medicationReference", form
            )
        return None, None, display, False

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
        self, r: dict[str, Any], rtype: str, rid: str, loc: str, final: bool, src: int = 0
    ) -> list[tuple[str, Row]]:
        cc, med, ref_display, missing = self._resolve_medication(r, loc)
        if missing and not final:
            self.pending.append((r, loc, src))
            return []
        every = list(self._codings(cc))
        rel = self.relevant
        codings = [t for t in every if (t[0], t[1]) in rel]
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
        form = _get(med, "form")
        form_codes: tuple[str, ...] = ()
        form_text: str | None = None
        if form is not None:
            form_codes = self.tokens(form)
            form_text = "; ".join(_concept_texts(form, [])) or None
        # One row per distinct (exposure, route) of the dosage instructions: several
        # instructions are a union of exposures, each with its own route (spec v1.1).
        doses, exposures = _EXPOSURES[rtype](r, status)
        parts: dict[tuple[Exposure, tuple[str, ...]], list[str]] = {}
        for dose, exp in zip(doses, exposures, strict=True):
            route = _get(dose, "route")
            if route is None:
                parts.setdefault((exp, ()), [])
            else:
                _concept_texts(route, parts.setdefault((exp, self.tokens(route)), []))
        head = (pid, rtype, rid, status, intent, dnp)
        if text_only is not None:
            # Evidence keeps the record's own coding (an NDC, a local code) beside the text.
            codings = [every[0] if every else (None, None, None)]
            cc_text: str | None = text_only
        else:
            t = _get(cc, "text")
            cc_text = t if isinstance(t, str) else None
        out: list[tuple[str, Row]] = []
        for ((s0, s1, e0, e1, rule), route_codes), texts in parts.items():
            tail = (s0, e1, rule, route_codes, "; ".join(texts) or None, form_codes, form_text,
                    s1, e0)  # fmt: skip
            out.extend(("medications", (*head, s, k, d, cc_text, *tail)) for s, k, d in codings)
        return out

    def _report_soft(self, location: str, reason: str) -> None:
        if self.on_error is not None:
            self.on_error(MalformedResourceError(location, reason))

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
        when, when_high = _bounds(
            r.get("effectiveDateTime"),
            _get(r.get("effectivePeriod"), "start"),
            r.get("effectiveInstant"),
            r.get("issued"),
        )
        out: list[tuple[str, Row]] = []
        if codings:
            values = self._obs_values(r)
            for s, k, d in codings:
                out.append(("observations", (pid, rid, status, s, k, d, when, when_high, *values)))
        for (s, k, d), comp in comps:
            values = self._obs_values(comp)
            out.append(("observations", (pid, rid, status, s, k, d, when, when_high, *values)))
        return out

    def _obs_values(self, o: dict[str, Any]) -> Row:
        """value_type .. interpretation_codes of an Observation or an Observation.component."""
        value_type = "none"
        value_string: str | None = None
        value_number: float | None = None
        comparator: str | None = None
        unit: str | None = None
        unit_code: str | None = None
        value_codes: tuple[str, ...] = ()
        num: float | None = None
        den: float | None = None
        if "valueQuantity" in o:
            q = o["valueQuantity"]
            value_type = "quantity"
            value_number = _num(_get(q, "value"))
            comparator = _get(q, "comparator")
            unit = _get(q, "unit") or _get(q, "code")
            if _get(q, "system") == _UCUM:
                unit_code = _get(q, "code")
        elif "valueString" in o:
            value_type = "string"
            v = o["valueString"]
            value_string = v if isinstance(v, str) else None
        elif "valueCodeableConcept" in o:
            cc = o["valueCodeableConcept"]
            value_type = "codeable"
            value_codes = self.tokens(cc)
            # The text (else a coding's display, coded or not) travels in value_string: v1.1
            # reads a text-only answer like a valueString.
            t = _get(cc, "text")
            if not isinstance(t, str) or not t.strip():
                t = next(
                    (
                        d
                        for c in _get(cc, "coding") or ()
                        if isinstance(d := _get(c, "display"), str) and d.strip()
                    ),
                    None,
                )
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
        if isinstance(ranges, list):
            # The first range with a numeric high; else the first text holding a number, which
            # may give the high ("<30 IU/mL", "0-30", "<1:80": spec v1.1).
            for rng in ranges:
                high = _get(rng, "high")
                ref_high = _num(_get(high, "value"))
                if ref_high is not None:
                    c = _get(high, "comparator")
                    ref_cmp = c if isinstance(c, str) else None
                    break
            else:
                for rng in ranges:
                    text = _get(rng, "text")
                    if isinstance(text, str) and _HAS_DIGIT.search(text):
                        ref_string = text
                        break
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
            unit_code if isinstance(unit_code, str) and unit_code else None,
        )


_UCUM = "http://unitsofmeasure.org"
_HANDLED = frozenset({"Patient", "Condition", "Procedure", "Observation"}) | _MED_TYPES


# -- exposure intervals (spec I3.1, v1.1 'Dates and windows') ------------------------------------

# Partial dates are ranges: (earliest, latest) calendar day the written date can denote.
DateRange = tuple[date, date]
# (start, start_late, end_early, end, end_rule): start/end are the widest reading (a partial start
# at its first day, a partial end at its last day), start_late/end_early the narrowest.
Exposure = tuple[date | None, date | None, date | None, date | None, str]

_REQUEST_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
_COURSE_OF_THERAPY = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"


def _drange(s: Any) -> DateRange | None:
    """Date range of a FHIR date/dateTime; a full date is a one-day range (fast path)."""
    if not isinstance(s, str):
        return None
    if len(s) >= 10 and s[4] == "-" and s[7] == "-":
        d = parse_date(s)
        return None if d is None else (d, d)
    return date_bounds(s)


def _supply(start: DateRange, days: float) -> DateRange | None:
    """Last covered day of a supply of ``days`` from each reading of ``start``."""
    lo, hi = supply_end(start[0], days), supply_end(start[1], days)
    return None if lo is None or hi is None else (lo, hi)


def _after(end: DateRange) -> DateRange | None:
    """The day after each reading of ``end`` (start of the next step of a sequence)."""
    lo, hi = add_days(end[0], 1), add_days(end[1], 1)
    return None if lo is None or hi is None else (lo, hi)


def _exposure(start: DateRange | None, end: DateRange | None, rule: str) -> Exposure:
    return (
        start[0] if start else None,
        start[1] if start else None,
        end[0] if end else None,
        end[1] if end else None,
        rule,
    )


_NO_BOUNDS: tuple[None, None, None] = (None, None, None)


def _timing_bounds(dose: Any) -> tuple[DateRange | None, DateRange | None, float | None]:
    """(boundsPeriod.start, boundsPeriod.end, boundsDuration in days) of one dosage."""
    rep = _get(_get(dose, "timing"), "repeat")
    if not isinstance(rep, dict) or ("boundsPeriod" not in rep and "boundsDuration" not in rep):
        return _NO_BOUNDS
    bp = rep.get("boundsPeriod")
    bd = duration_days(rep["boundsDuration"]) if "boundsDuration" in rep else None
    return _drange(_get(bp, "start")), _drange(_get(bp, "end")), bd


def _dosages(x: Any) -> list[Any]:
    """The dosage dicts of a dosage list (or single dosage); [None] when there is none, so a
    record without dosage still gives one exposure."""
    if isinstance(x, dict):
        return [x]
    out = [d for d in x if isinstance(d, dict)] if isinstance(x, list) else []
    return out or [None]


def _max_range(a: DateRange, b: DateRange) -> DateRange:
    return max(a[0], b[0]), max(a[1], b[1])


def _instruction_exposures(
    doses: list[Any],
    bounds: list[tuple[DateRange | None, DateRange | None, float | None]],
    record_start: DateRange | None,
    fallback: Callable[[DateRange | None], Exposure],
) -> list[Exposure]:
    """One exposure per dosage instruction (spec v1.1: their union is the record's exposure).

    An instruction starts at its own boundsPeriod.start; when every instruction carries a
    ``sequence`` (a taper, loading then maintenance), a step without its own start follows the
    previous sequence step (the day after its end); otherwise it starts with the record. It ends
    at boundsPeriod.end, else start + boundsDuration, else by the record's rule (``fallback``).
    ``bounds`` are the instructions' :func:`_timing_bounds`.
    """
    if len(doses) == 1:  # nearly every record: no sequence to follow
        bp_start, bp_end, bd = bounds[0]
        start = bp_start or record_start
        end = bp_end or (_supply(start, bd) if start is not None and bd is not None else None)
        return [_exposure(start, end, "explicit") if end is not None else fallback(start)]
    seqs = [_get(d, "sequence") for d in doses]
    chained = all(isinstance(s, int) and not isinstance(s, bool) for s in seqs) and len(doses) > 1
    order = sorted(range(len(doses)), key=lambda i: seqs[i]) if chained else range(len(doses))
    out: list[Exposure | None] = [None] * len(doses)
    next_start = record_start  # start of the next sequence step when it has none of its own
    group_seq: Any = None
    group_end: DateRange | None = None
    group_open = False
    for i in order:
        if chained and seqs[i] != group_seq:
            if group_seq is not None:
                next_start = _after(group_end) if group_end and not group_open else None
            group_seq, group_end, group_open = seqs[i], None, False
        bp_start, bp_end, bd = bounds[i]
        start = bp_start or (next_start if chained else record_start)
        end: DateRange | None = None
        if bp_end is not None:
            end = bp_end
        elif start is not None and bd is not None:
            end = _supply(start, bd)
        exp = _exposure(start, end, "explicit") if end is not None else fallback(start)
        out[i] = exp
        if exp[3] is None:
            group_open = True
        elif exp[2] is not None:
            group_end = _max_range(group_end, (exp[2], exp[3])) if group_end else (exp[2], exp[3])
    return [e for e in out if e is not None]


def _has_coding(ccs: Any, system: str, code: str) -> bool:
    """Whether a CodeableConcept (or list of them) holds ``code`` in ``system`` (or with no
    system: a bare code from an R4 required binding)."""
    for cc in ccs if isinstance(ccs, list) else (ccs,):
        for c in _get(cc, "coding") or ():
            if _get(c, "code") == code and _get(c, "system") in (system, None):
                return True
    return False


def _statement_exposures(
    r: Mapping[str, Any], status: str | None
) -> tuple[list[Any], list[Exposure]]:
    doses = _dosages(r.get("dosage"))
    period = r.get("effectivePeriod")
    if isinstance(period, dict):
        start = _drange(period.get("start"))
        end = _drange(period.get("end"))
        if end is not None:
            return doses, [_exposure(start, end, "explicit")] * len(doses)
        if status in _OPEN_STATUSES:
            return doses, [_exposure(start, None, "to_asof")] * len(doses)
    else:
        start = _drange(r.get("effectiveDateTime"))
    bounds = [_timing_bounds(d) for d in doses]
    if start is None:
        starts = [b[0] for b in bounds if b[0] is not None]
        start = min(starts) if starts else None
    return doses, _instruction_exposures(
        doses, bounds, start, lambda s: _exposure(s, None, "unknown")
    )


def _request_exposures(
    r: Mapping[str, Any], status: str | None
) -> tuple[list[Any], list[Exposure]]:
    doses = _dosages(r.get("dosageInstruction"))
    dispense = r.get("dispenseRequest")
    bounds = [_timing_bounds(d) for d in doses]
    starts = [b[0] for b in bounds if b[0] is not None]
    record_start = min(starts) if starts else None
    if record_start is None and dispense is not None:
        record_start = _drange(_get(_get(dispense, "validityPeriod"), "start"))
    if record_start is None:
        record_start = _drange(r.get("authoredOn"))
    supply_to: DateRange | None = None
    supply = None if dispense is None else duration_days(_get(dispense, "expectedSupplyDuration"))
    if record_start is not None and supply is not None:
        repeats = _get(dispense, "numberOfRepeatsAllowed")
        n = repeats if isinstance(repeats, int) and not isinstance(repeats, bool) else 0
        supply_to = _supply(record_start, supply * (1 + max(n, 0)))

    def fallback(start: DateRange | None) -> Exposure:
        if start is not None and supply_to is not None:
            return _exposure(start, supply_to, "explicit")
        if status not in _OPEN_STATUSES:
            return _exposure(start, None, "unknown")
        # v1.1: an open inpatient order or acute course has unknown duration, not "runs to S".
        inpatient = _has_coding(r.get("category"), _REQUEST_CATEGORY, "inpatient")
        acute = _has_coding(r.get("courseOfTherapyType"), _COURSE_OF_THERAPY, "acute")
        return _exposure(start, None, "unknown" if inpatient or acute else "to_asof")

    return doses, _instruction_exposures(doses, bounds, record_start, fallback)


def _dispense_exposures(
    r: Mapping[str, Any], status: str | None
) -> tuple[list[Any], list[Exposure]]:
    doses = _dosages(r.get("dosageInstruction"))
    start = _drange(r.get("whenHandedOver")) or _drange(r.get("whenPrepared"))
    days = duration_days(r.get("daysSupply"), default_unit="d")
    end = _supply(start, days) if start is not None and days is not None else None
    exp = _exposure(start, end, "explicit" if end is not None else "unknown")
    return doses, [exp] * len(doses)


def _administration_exposures(
    r: Mapping[str, Any], status: str | None
) -> tuple[list[Any], list[Exposure]]:
    doses = _dosages(r.get("dosage"))
    period = r.get("effectivePeriod")
    if isinstance(period, dict):
        start = _drange(period.get("start"))
        end = _drange(period.get("end")) or start
        exp = _exposure(start or end, end, "per_dose")
    else:
        when = _drange(r.get("effectiveDateTime"))
        exp = _exposure(when, when, "per_dose")
    return doses, [exp] * len(doses)


_EXPOSURES: dict[
    str, Callable[[Mapping[str, Any], str | None], tuple[list[Any], list[Exposure]]]
] = {
    "MedicationStatement": _statement_exposures,
    "MedicationRequest": _request_exposures,
    "MedicationDispense": _dispense_exposures,
    "MedicationAdministration": _administration_exposures,
}


# -- line filter ---------------------------------------------------------------------------------
#
# A line may be dropped unparsed only when it is provably irrelevant: its top-level resourceType
# is verified from the bytes as exactly the file's type (or, in a mixed file, a resource type
# no table holds), it has no backslash (an escape can spell any key or value: "\u0063ode"), and
# no code token matches. Every other line is parsed, and the reader reads it or reports it with
# its file:line. Lines of verified type that are irrelevant cannot give a row whatever else
# they hold, so dropping them loses nothing.

_CODE_VALUE = re.compile(rb'"code"\s*:\s*"([^"]*)"')
# resourceType as the first key: what every bulk exporter seen writes, decided by one match.
_COMPACT_START = b'{"resourceType":"'
_RTYPE_FIRST = re.compile(rb'\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"\s*[,}]')
_RTYPE_KEY = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"\s*[,}]')
# A JSON string in a line without backslashes: no escaped quote can hide inside one.
_STRING = re.compile(rb'"[^"]*"')
_ROW_TYPES_B = frozenset(t.encode() for t in _HANDLED)
_MED_TYPES_B = frozenset(t.encode() for t in _MED_TYPES)
_ALWAYS_READ_B = frozenset({b"Patient", b"Medication"})
# Real types no table holds, dropped from mixed files (a Bundle or a misspelt type is parsed,
# so the reader reports it).
_OTHER_TYPES_B = frozenset(t.encode() for t in RESOURCE_TYPES - _HANDLED - {"Bundle", "Medication"})


def _plain_line_has_code(line: bytes, spellings: frozenset[bytes], codes: frozenset[bytes]) -> bool:
    """Whether an ASCII line without escapes holds a relevant "code" value.

    One C-level findall and a set lookup against every common spelling decide nearly every
    line; values with blanks (" M32.14", "M32 .14") take the loose comparison that
    normalize_code makes, so no line that could give a row is dropped.
    """
    values = _CODE_VALUE.findall(line)
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
    """Whether a raw line looks like one JSON object. Lines that do not (truncated, garbage,
    arrays) pass every filter, so the reader parses and reports them instead of dropping them."""
    if line.startswith(b"{") and line.endswith((b"}\n", b"}", b"}\r\n")):
        return True
    body = line.strip()
    return not body or (body.startswith(b"{") and body.endswith(b"}"))


def _verified_type(line: bytes) -> bytes | None:
    """The line's top-level resourceType when the bytes prove it, else None.

    For lines without a backslash only. Proof: exactly one "resourceType" token, a string of
    letters, as the first key or at depth 1 (strings removed, the braces before it leave one
    open). A second token (contained resources, a Bundle, a repeated key) means parse.
    """
    if line.startswith(_COMPACT_START):
        # Compact JSON, the common case: a few C calls instead of a regex and a count.
        end = line.find(b'"', 17)
        rtype = line[17:end]
        if (
            rtype.isalpha()
            and line[end + 1 : end + 2] in (b",", b"}")
            and line.find(b'"resourceType"', end) == -1
        ):
            return rtype
    if line.count(b'"resourceType"') != 1:
        return None
    m = _RTYPE_FIRST.match(line)
    if m is not None:
        return m.group(1)
    m = _RTYPE_KEY.search(line)
    if m is None:
        return None
    before = _STRING.sub(b"", line[: m.start()])
    if before.count(b"{") - before.count(b"}") == 1 and before.count(b"[") == before.count(b"]"):
        return m.group(1)
    return None


def _filter_key(code: bytes) -> bytes:
    """Loose spelling used by the line filter: a superset of what normalize_code merges."""
    return code.strip().replace(b".", b"").replace(b" ", b"").upper()


# The last relevant codes and their sets: a reader builds a filter per file type and per
# worker task from the same codes, and the sets of thousands of codes take a second to build.
_SETS_CACHE: dict[frozenset[str], tuple[frozenset[bytes], frozenset[bytes]]] = {}


def _code_sets(relevant_codes: Iterable[str]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """(codes in filter spelling, every spelling data commonly uses for them: ICD with its
    dot, lower case), so the common line is decided by exact set lookups on its values."""
    given = frozenset(relevant_codes)
    got = _SETS_CACHE.get(given)
    if got is None:
        codes = frozenset(_filter_key(c.encode("utf-8", "surrogatepass")) for c in given)
        got = (codes, frozenset(_spellings(codes)))
        _SETS_CACHE.clear()  # one entry: the codes of the run
        _SETS_CACHE[given] = got
    return got


class MedicationLineFilter:
    """Cheap, picklable pre-parse test of a raw NDJSON line (see :func:`make_line_filter`).

    Tests, cheapest and most selective first: any backslash (parse); the verified top-level
    resourceType (Patient and Medication always pass; in a file of one type, any other type
    passes so the reader reports it; in a mixed file, real types no table holds are dropped);
    then the "code" string values of the line against the relevant codes in filter spelling
    (dots and spaces removed, upper-cased; done on the whole line in C, so an ASCII line costs
    a few microseconds); non-ASCII values are kept. Medication* lines without a relevant code
    pass when medication text could matter (flatten decides by word): scanning their text for
    words in Python costs more than parsing them with orjson.
    """

    def __init__(
        self,
        relevant_codes: Iterable[str],
        words: Iterable[str] | None,
        resource_type: str | None = None,
    ) -> None:
        self.codes, self.spellings = _code_sets(relevant_codes)
        self.text_matters = words is None or any(w.strip() for w in words)
        self.expected = resource_type.encode("ascii") if resource_type else None

    def _has_code(self, line: bytes) -> bool:
        """For lines without a backslash (the caller has checked)."""
        if line.isascii():
            return _plain_line_has_code(line, self.spellings, self.codes)
        codes = self.codes
        for value in _CODE_VALUE.findall(line):
            # Non-ASCII values may normalise in ways bytes cannot follow: keep them.
            if not value.isascii() or _filter_key(value) in codes:
                return True
        return False

    def _droppable(self, line: bytes) -> bytes | None:
        """The verified type when the line may be dropped at all, else None (parse it)."""
        if b"\\" in line or not _one_object(line):
            return None
        rtype = _verified_type(line)
        if rtype is None or rtype in _ALWAYS_READ_B:
            return None
        if self.expected is not None and rtype != self.expected:
            return None  # another type in a typed file: the reader reports it
        return rtype

    def __call__(self, line: bytes) -> bool:
        rtype = self._droppable(line)
        if rtype is None:
            return True
        if rtype not in _ROW_TYPES_B:
            return rtype not in _OTHER_TYPES_B
        if self._has_code(line):
            return True
        if rtype not in _MED_TYPES_B:
            return False
        # medicationReference (R4) and medication (R5 CodeableReference) need resolution.
        if b'"medicationReference"' in line or b'"medication"' in line:
            return True
        return self.text_matters and b'"medication' in line


class CodeLineFilter:
    """Filter for a file of one known type whose rows come from codes only (Condition,
    Procedure, Observation): after the checks of :class:`MedicationLineFilter` (no backslash,
    the verified type is the file's), one C-level findall and a set lookup per line.

    With :meth:`count_rejected` it also counts each rejected line by its "code" values (the
    findall it has already made) and keeps the first line of each key with its place in the
    reading order (``at``, set by the reader per task), so the unmapped-codes report costs one
    dict update per line (``fhir_cohort.engine.unmapped``).
    """

    def __init__(self, base: MedicationLineFilter) -> None:
        self.spellings = base.spellings
        self.codes = base.codes
        self.base = base
        self.expected = base.expected
        self.rejected: dict[bytes, int] | None = None
        self.samples: dict[bytes, bytes] = {}
        self.ranks: dict[bytes, tuple[int, int]] = {}
        # (file index, first line) of the task being read: orders the samples of workers
        self.at: tuple[int, int] = (0, 0)
        self.on_new_key: Callable[[], None] | None = None

    def count_rejected(
        self,
        counts: dict[bytes, int],
        samples: dict[bytes, bytes],
        ranks: dict[bytes, tuple[int, int]],
        on_new_key: Callable[[], None] | None = None,
    ) -> None:
        """Count rejected lines into ``counts`` (key: their "code" values), keep the first line
        of each key in ``samples`` and where it was read (``at``) in ``ranks``; ``on_new_key``
        runs after a key is added (to bound them)."""
        self.rejected, self.samples, self.ranks = counts, samples, ranks
        self.on_new_key = on_new_key

    def __call__(self, line: bytes) -> bool:
        # MedicationLineFilter._droppable inlined: the file's type is never Patient/Medication.
        if b"\\" in line or not _one_object(line) or _verified_type(line) != self.expected:
            return True
        if line.isascii():
            rejected = self.rejected
            if rejected is None:
                return _plain_line_has_code(line, self.spellings, self.codes)
            values = _CODE_VALUE.findall(line)
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
            key = b"\x00".join(_CODE_VALUE.findall(line))
        n = rejected.get(key)
        if n is None:
            rejected[key] = 1
            self.samples[key] = line
            self.ranks[key] = self.at
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
    same relevant codes and words, and only lines it can prove so from the bytes (see the
    comment above): no backslash, top-level resourceType verified as ``resource_type`` (the
    file's declared type; None for a mixed file), no relevant code. It accepts Patient and
    Medication lines, lines holding a relevant code as a JSON string, and Medication* lines
    that reference a Medication or (when ``words`` is None or non-empty) name a medication at
    all; in a mixed file it rejects the real types no table holds.

    ``relevant_codes`` are codes or (system, code) pairs. It may accept lines that give no row.
    With ``resource_type`` of a file whose rows come from codes only (Condition, Procedure,
    Observation) the filter is a single findall and set lookup per line: about 1M lines/s, a
    third of the cost of ``orjson.loads`` (docs/benchmarks.md).
    """
    codes = [c[1] if isinstance(c, tuple) else c for c in relevant_codes]
    base = MedicationLineFilter(codes, words, resource_type)
    if resource_type in CODE_ONLY_TYPES:
        return CodeLineFilter(base)
    return base
