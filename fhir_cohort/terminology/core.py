"""Value sets, concept maps and medication agents loaded from value_sets/*.json."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cohort.errors import TerminologyError
from fhir_cohort.terminology.codes import (
    NDC,
    RXNORM,
    SNOMED,
    normalize_code,
    normalize_system,
    search_spellings,
)
from fhir_cohort.terminology.forms import is_non_systemic_text
from fhir_cohort.terminology.ndc import normalize_ndc

_URL_PREFIX = "https://fhir-cohort.github.io/ValueSet/"
PRODUCT_INGREDIENT_MAP = "rxnorm-product-ingredient.json"
INGREDIENT_MOIETY_MAP = "rxnorm-ingredient-moiety.json"
NDC_RXNORM_MAP = "ndc-rxnorm.json"  # optional: NDC package -> RxNorm product
SNOMED_INGREDIENT_MAP = "snomed-rxnorm-ingredient.json"  # optional: SNOMED substance -> RxNorm IN
# Target system of product-map rows whose ingredient has no RxCUI in the sources read.
AGENT_SYSTEM = "https://fhir-cohort.github.io/CodeSystem/medication-agent"
_CONCEPT_MAPS = (
    PRODUCT_INGREDIENT_MAP,
    INGREDIENT_MOIETY_MAP,
    NDC_RXNORM_MAP,
    SNOMED_INGREDIENT_MAP,
)
MEDICATION_VALUE_SETS: tuple[str, ...] = ("glucocorticoids", "immunosuppressants", "antimalarials")

# Agents with no ingredient RxCUI in any public source read (see docs/value_sets.md): their code is
# "name:<name>", so it never collides with an RxCUI. Anifrolumab's products do have RxCUIs (the
# product map targets them by name); quinacrine has none. Names are matched in text as well.
NAME_ONLY_AGENTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (value set, synonyms, where the synonyms were read)
    "anifrolumab": (
        "immunosuppressants",
        ("anifrolumab-fnia", "saphnelo"),
        "brand Saphnelo / anifrolumab-fnia: RxNorm SBD name via the NDC crosswalk",
    ),
    "quinacrine": (
        "antimalarials",
        ("mepacrine",),
        "mepacrine = quinacrine: WHO ATC P01AX05 (reference medications file)",
    ),
}
# Name synonyms for agents that have an RxCUI (INN vs USAN spelling; salt-free short names).
NAME_SYNONYMS: dict[str, tuple[str, ...]] = {
    "cyclosporine": ("ciclosporin",),  # ATC name, reference medications_ingredients_atc.csv
    "mycophenolic acid": ("mycophenolate", "mycophenolate sodium"),
}


@dataclass(frozen=True)
class ValueSet:
    """One value set: explicit (system, normalised code) pairs with their displays."""

    id: str
    url: str
    version: str
    title: str
    concepts: frozenset[tuple[str, str]]
    displays: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)
    # Codes as the file spells them (ICD-10-CM "M32.14"): what a server search must send.
    written: frozenset[tuple[str, str]] = field(default=frozenset(), compare=False, repr=False)

    def contains(self, system: str, code: str) -> bool:
        sys_ = normalize_system(system)
        return (sys_, normalize_code(sys_, code)) in self.concepts

    def display(self, system: str, code: str) -> str | None:
        sys_ = normalize_system(system)
        return self.displays.get((sys_, normalize_code(sys_, code)))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for system, _ in self.concepts:
            out[system] = out.get(system, 0) + 1
        return out


@dataclass(frozen=True)
class Agent:
    """An active moiety: RxNorm IN RxCUI of the moiety (or "name:<name>" when none is known)."""

    code: str
    name: str


@dataclass(frozen=True)
class AgentMatch:
    agent: Agent
    via: str  # "ingredient" | "product" | "text"
    system: str | None
    code: str | None
    display: str | None
    confidence: str  # "high" for codes, "low" for text


def _read_json(path: Path) -> dict:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TerminologyError(f"{path.name}: cannot read ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise TerminologyError(f"{path.name}: not a JSON object")
    return data


def _parse_value_set(path: Path, data: dict) -> ValueSet:
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith(_URL_PREFIX):
        raise TerminologyError(f"{path.name}: url must start with {_URL_PREFIX}")
    vs_id = url[len(_URL_PREFIX) :]
    if vs_id != path.stem:
        raise TerminologyError(f"{path.name}: url id {vs_id!r} does not match the file name")
    concepts: set[tuple[str, str]] = set()
    written: set[tuple[str, str]] = set()
    displays: dict[tuple[str, str], str] = {}
    for include in data.get("compose", {}).get("include", []):
        system = normalize_system(include.get("system"))
        if not system:
            raise TerminologyError(f"{path.name}: compose.include without system")
        for concept in include.get("concept", []):
            code = normalize_code(system, concept.get("code"))
            if not code:
                raise TerminologyError(f"{path.name}: concept without code in {system}")
            concepts.add((system, code))
            written.add((system, concept["code"].strip()))
            if concept.get("display"):
                displays[(system, code)] = concept["display"]
    return ValueSet(
        id=vs_id,
        url=url,
        version=str(data.get("version", "")),
        title=str(data.get("title", vs_id)),
        concepts=frozenset(concepts),
        displays=displays,
        written=frozenset(written),
    )


def _concept_map_pairs(path: Path) -> list[tuple[str, str, str, str]]:
    """(source code, source display, target code, target display) of a ConceptMap.

    A target in :data:`AGENT_SYSTEM` (an ingredient known by name only) becomes "name:<code>".
    """
    data = _read_json(path)
    if data.get("resourceType") != "ConceptMap":
        raise TerminologyError(f"{path.name}: not a ConceptMap")
    pairs = []
    for group in data.get("group", []):
        by_name = group.get("target") == AGENT_SYSTEM
        for element in group.get("element", []):
            for target in element.get("target", []):
                code = str(target["code"]).strip()
                pairs.append(
                    (
                        str(element["code"]).strip(),
                        str(element.get("display", "")),
                        f"name:{code}" if by_name else code,
                        str(target.get("display", "")),
                    )
                )
    return pairs


def default_directory() -> Path:
    """Bundled value sets: fhir_cohort/_value_sets in a wheel, else the repo's value_sets/."""
    package = Path(__file__).resolve().parent.parent
    bundled = package / "_value_sets"
    if bundled.is_dir():
        return bundled
    return package.parent / "value_sets"


class Terminology:
    """All value sets plus the RxNorm product -> ingredient -> moiety maps, in memory."""

    def __init__(
        self,
        value_sets: dict[str, ValueSet],
        product_ingredients: dict[str, tuple[str, ...]],
        product_names: dict[str, str],
        ingredient_moiety: dict[str, str],
        ingredient_names: dict[str, str],
        ndc_products: dict[str, tuple[str, ...]] | None = None,
        snomed_ingredients: dict[str, str] | None = None,
    ) -> None:
        self._value_sets = value_sets
        # A product that maps only to itself is an ingredient (a source listing the ingredient
        # among its products must not hide the ingredient's name from text matching).
        self._product_ingredients = {k: v for k, v in product_ingredients.items() if v != (k,)}
        self._product_names = product_names
        self._ingredient_moiety = ingredient_moiety
        self._ingredient_names = ingredient_names
        self._ndc_products = ndc_products or {}
        self._snomed_ingredients = snomed_ingredients or {}
        self._agent_sets: dict[str, set[str]] = {}
        self._build_agents()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, directory: Path | None = None) -> Terminology:
        folder = Path(directory) if directory is not None else default_directory()
        if not folder.is_dir():
            raise TerminologyError(f"value set folder not found: {folder}")
        value_sets: dict[str, ValueSet] = {}
        for path in sorted(folder.glob("*.json")):
            if path.name in _CONCEPT_MAPS:
                continue
            data = _read_json(path)
            if data.get("resourceType") != "ValueSet":
                continue
            vs = _parse_value_set(path, data)
            value_sets[vs.id] = vs
        for required in (PRODUCT_INGREDIENT_MAP, INGREDIENT_MOIETY_MAP):
            if not (folder / required).is_file():
                raise TerminologyError(f"concept map missing: {required}")
        product_ingredients: dict[str, list[str]] = {}
        product_names: dict[str, str] = {}
        ingredient_names: dict[str, str] = {}
        for src, sdisp, tgt, tdisp in _concept_map_pairs(folder / PRODUCT_INGREDIENT_MAP):
            targets = product_ingredients.setdefault(src, [])
            if tgt not in targets:
                targets.append(tgt)
            product_names[src] = sdisp
            ingredient_names.setdefault(tgt, tdisp)
        moiety: dict[str, str] = {}
        for src, sdisp, tgt, tdisp in _concept_map_pairs(folder / INGREDIENT_MOIETY_MAP):
            moiety[src] = tgt
            ingredient_names.setdefault(src, sdisp)
            ingredient_names.setdefault(tgt, tdisp)
        ndc_products: dict[str, list[str]] = {}
        if (folder / NDC_RXNORM_MAP).is_file():
            for src, _sdisp, tgt, _tdisp in _concept_map_pairs(folder / NDC_RXNORM_MAP):
                ndc11 = normalize_ndc(src) or src
                targets = ndc_products.setdefault(ndc11, [])
                if tgt not in targets:
                    targets.append(tgt)
        snomed: dict[str, str] = {}
        if (folder / SNOMED_INGREDIENT_MAP).is_file():
            for src, _sdisp, tgt, tdisp in _concept_map_pairs(folder / SNOMED_INGREDIENT_MAP):
                snomed[src] = tgt
                ingredient_names.setdefault(tgt, tdisp)
        return cls(
            value_sets,
            {k: tuple(v) for k, v in product_ingredients.items()},
            product_names,
            moiety,
            ingredient_names,
            {k: tuple(v) for k, v in ndc_products.items()},
            snomed,
        )

    # ------------------------------------------------------------------ value sets

    def value_set(self, vs_id: str) -> ValueSet:
        try:
            return self._value_sets[vs_id]
        except KeyError:
            raise TerminologyError(f"unknown value set: {vs_id!r}") from None

    def ids(self) -> list[str]:
        return sorted(self._value_sets)

    def contains(self, vs_id: str, system: str, code: str) -> bool:
        return self.value_set(vs_id).contains(system, code)

    def codes(self, vs_ids: Iterable[str]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for vs_id in vs_ids:
            out |= self.value_set(vs_id).concepts
        return out

    def search_tokens(self, vs_ids: Iterable[str], system: str | None = None) -> list[str]:
        """``system|code`` tokens for a server search of ``vs_ids`` (only ``system``'s when
        given), sorted.

        Servers match tokens exactly, and EHRs spell the same code several ways (spec v1.1): each
        code as the value set writes it and as the engine normalises it (ICD with and without its
        dot), each under the canonical URI and the system's ``urn:oid``. A code spelled with inner
        blanks cannot be searched for; the on-disk and bulk strategies still read it.
        """
        want = normalize_system(system) if system else None
        out: set[str] = set()
        for vs_id in vs_ids:
            vs = self.value_set(vs_id)
            for s, c in vs.written | vs.concepts:
                if want is not None and s != want:
                    continue
                out.update(f"{spelling}|{c}" for spelling in search_spellings(s))
        return sorted(out)

    def summary(self) -> list[dict[str, object]]:
        """One row per value set: id, title, version, concept count per system and in total."""
        rows: list[dict[str, object]] = []
        for vs_id in self.ids():
            vs = self._value_sets[vs_id]
            rows.append(
                {
                    "id": vs.id,
                    "title": vs.title,
                    "version": vs.version,
                    "concepts": dict(sorted(vs.counts().items())),
                    "total": len(vs.concepts),
                }
            )
        return rows

    # ------------------------------------------------------------------ medications

    def _moiety(self, ingredient: str) -> str:
        seen = {ingredient}
        current = ingredient
        while current in self._ingredient_moiety:
            current = self._ingredient_moiety[current]
            if current in seen:  # defensive: a cycle in the map
                break
            seen.add(current)
        return current

    def _agent(self, moiety_code: str) -> Agent:
        return Agent(moiety_code, self._ingredient_names.get(moiety_code, moiety_code))

    def _build_agents(self) -> None:
        # Every value set that lists RxNorm codes is a medication value set: its agents resolve
        # product -> ingredient -> moiety, so any trial's agents work without code here.
        med_sets = [
            v
            for v, vs in sorted(self._value_sets.items())
            if any(s == RXNORM for s, _ in vs.concepts)
        ]
        ingredient_codes: set[str] = set()
        for vs_id in med_sets:
            for system, code in self._value_sets[vs_id].concepts:
                if system != RXNORM:
                    continue  # NDC / SNOMED members resolve through their maps
                if code in self._product_ingredients:
                    ingredients = self._product_ingredients[code]
                else:
                    ingredients = (code,)
                    ingredient_codes.add(code)
                    disp = self._value_sets[vs_id].displays.get((system, code))
                    if disp:
                        self._ingredient_names.setdefault(code, disp)
                for ing in ingredients:
                    self._agent_sets.setdefault(self._moiety(ing), set()).add(vs_id)
        for agent_name, (vs_id, _synonyms, _src) in NAME_ONLY_AGENTS.items():
            code = f"name:{agent_name}"
            self._ingredient_names[code] = agent_name
            self._agent_sets.setdefault(code, set()).add(vs_id)
        self._ingredient_codes = frozenset(ingredient_codes | set(self._ingredient_moiety))
        # Text patterns -> moiety code. Every ingredient that reaches an agent of a medication
        # value set counts by name, wherever it came from (value set, product map, moiety map).
        names: dict[str, str] = {}
        all_ingredients = set(self._ingredient_codes)
        for ings in self._product_ingredients.values():
            all_ingredients.update(ings)
        for code in all_ingredients:
            moiety = self._moiety(code)
            name = self._ingredient_names.get(code)
            if name and moiety in self._agent_sets:
                names[name.lower()] = moiety
        # Brand names from the bracketed tail of SBD / BPCK names, when one agent owns the brand.
        brand_re = re.compile(r"\[([^\]]+)\]\s*$")
        brand_agents: dict[str, set[str]] = {}
        for product, name in self._product_names.items():
            m = brand_re.search(name)
            if m and product in self._product_ingredients:
                moieties = {self._moiety(i) for i in self._product_ingredients[product]}
                moieties &= set(self._agent_sets)
                brand_agents.setdefault(m.group(1).strip().lower(), set()).update(moieties)
        for brand, moieties in brand_agents.items():
            if len(moieties) == 1 and brand not in names:
                names[brand] = next(iter(moieties))
        moiety_by_name = {self._ingredient_names.get(m, "").lower(): m for m in names.values()}
        for base, synonyms in NAME_SYNONYMS.items():
            if base in moiety_by_name:
                for syn in synonyms:
                    names.setdefault(syn, moiety_by_name[base])
        for agent_name, (_vs_id, synonyms, _src) in NAME_ONLY_AGENTS.items():
            for n in (agent_name, *synonyms):
                names.setdefault(n, f"name:{agent_name}")
        self._text_names = names
        alternatives = sorted(names, key=len, reverse=True)
        self._text_re = re.compile(
            r"(?<![a-z0-9])(" + "|".join(re.escape(n) for n in alternatives) + r")(?![a-z0-9])",
            re.IGNORECASE,
        )

    def _product_matches(
        self, product: str, system: str, code: str, display: str | None
    ) -> list[AgentMatch]:
        moieties = dict.fromkeys(self._moiety(i) for i in self._product_ingredients[product])
        return [
            AgentMatch(self._agent(m), "product", system, code, display, "high")
            for m in moieties
            if m in self._agent_sets
        ]

    def agents_for_coding(self, system: str, code: str) -> list[AgentMatch]:
        """Agents of an RxNorm IN, PIN, SCD, SBD, GPCK or BPCK code, of an NDC package code in
        any 10-digit layout or 11 digits, or of a mapped SNOMED CT substance ([] when unknown)."""
        sys_ = normalize_system(system)
        if sys_ == NDC:
            ndc11 = normalize_ndc(code)
            found: dict[str, AgentMatch] = {}
            for product in self._ndc_products.get(ndc11 or "", ()):
                if product in self._product_ingredients:
                    name = self._product_names.get(product)
                    for m in self._product_matches(product, NDC, ndc11 or code, name):
                        found.setdefault(m.agent.code, m)
            return list(found.values())
        if sys_ == SNOMED:
            ing = self._snomed_ingredients.get(code.strip())
            if ing is None:
                return []
            display = self._ingredient_names.get(ing)
            return [
                AgentMatch(
                    self._agent(self._moiety(ing)),
                    "ingredient",
                    SNOMED,
                    code.strip(),
                    display,
                    "high",
                )
            ]
        if sys_ != RXNORM:
            return []
        c = normalize_code(sys_, code)
        if c in self._product_ingredients:
            return self._product_matches(c, RXNORM, c, self._product_names.get(c))
        if c in self._ingredient_codes:
            return [
                AgentMatch(
                    self._agent(self._moiety(c)),
                    "ingredient",
                    RXNORM,
                    c,
                    self._ingredient_names.get(c),
                    "high",
                )
            ]
        return []

    def agents_for_text(self, text: str) -> list[AgentMatch]:
        """Agents named in free text (ingredient, salt and brand names in any case), low
        confidence."""
        if not text:
            return []
        found: dict[str, str] = {}
        for m in self._text_re.finditer(text):
            moiety = self._text_names[m.group(1).lower()]
            found.setdefault(moiety, m.group(1))
        return [
            AgentMatch(self._agent(moiety), "text", None, None, matched, "low")
            for moiety, matched in found.items()
        ]

    def agents_for_concept(self, concept: Mapping[str, Any] | None) -> list[AgentMatch]:
        """Agents of a FHIR CodeableConcept: its codings first; its text (or the codings'
        displays) only when no coding names a known agent, marked low confidence."""
        if not concept:
            return []
        found: dict[str, AgentMatch] = {}
        for coding in concept.get("coding") or ():
            for m in self.agents_for_coding(coding.get("system") or "", coding.get("code") or ""):
                found.setdefault(m.agent.code, m)
        if not found:
            texts = [concept.get("text")] + [c.get("display") for c in concept.get("coding") or ()]
            for text in texts:
                for m in self.agents_for_text(text or ""):
                    found.setdefault(m.agent.code, m)
        return list(found.values())

    def agents_for_medication(self, medication: Mapping[str, Any]) -> list[AgentMatch]:
        """Agents of a FHIR Medication resource: its code, else its ingredients' items.

        >>> t = Terminology.load()
        >>> med = {"resourceType": "Medication", "code": {"text": "CellCept 500 mg tablet"}}
        >>> [(m.agent.name, m.via) for m in t.agents_for_medication(med)]
        [('mycophenolic acid', 'text')]
        """
        found = {m.agent.code: m for m in self.agents_for_concept(medication.get("code"))}
        if not found:
            for ing in medication.get("ingredient") or ():
                for m in self.agents_for_concept(ing.get("itemCodeableConcept")):
                    found.setdefault(m.agent.code, m)
        return list(found.values())

    def medication_names(self) -> frozenset[str]:
        """Lower-case names :meth:`agents_for_text` recognises (for a reader's line filter)."""
        return frozenset(self._text_names)

    def agent_value_sets(self, agent: Agent) -> set[str]:
        return set(self._agent_sets.get(agent.code, set()))

    def product_name(self, system: str, code: str) -> str | None:
        """RxNorm name of a product code (RxNorm product, or NDC through the crosswalk), so
        dose-form words in it can be read; None for other codes."""
        sys_ = normalize_system(system)
        if sys_ == NDC:
            for product in self._ndc_products.get(normalize_ndc(code) or "", ()):
                if product in self._product_names:
                    return self._product_names[product]
            return None
        if sys_ != RXNORM:
            return None
        return self._product_names.get(normalize_code(sys_, code))

    def is_non_systemic(
        self,
        route_codes: Iterable[str] = (),
        route_text: str | None = None,
        form_codes: Iterable[str] = (),
        form_text: str | None = None,
        product_name: str | None = None,
        texts: Iterable[str | None] = (),
    ) -> bool:
        """True when any route / dose form code, display or text says topical, eye, ear, nose,
        inhaled, rectal or mouth use. Codes are "system|code" strings; a route/form code in
        either value set counts (data mix them up), an RxNorm/NDC product code counts by the
        dose-form words of its name. ``texts``: further displays or texts to read."""
        tokens = [*route_codes, *form_codes]
        names: list[str | None] = [route_text, form_text, product_name, *texts]
        for token in tokens:
            system, _, code = str(token).rpartition("|")
            for vs_id in ("non_systemic_routes", "non_systemic_forms"):
                if vs_id in self._value_sets and self._value_sets[vs_id].contains(system, code):
                    return True
            names.append(self.product_name(system, code))
        return any(is_non_systemic_text(t) for t in names)
