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
# Terminology.load's reuse within one process: (folder, signature) -> the loaded object.
_LOADED: dict[tuple[str, tuple[tuple[str, int, int], ...]], Terminology] = {}
_LOADED_MAX = 4


def _folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in sorted(folder.glob("*.json")):
        st = path.stat()
        out.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


_CONCEPT_MAPS = (
    PRODUCT_INGREDIENT_MAP,
    INGREDIENT_MOIETY_MAP,
    NDC_RXNORM_MAP,
    SNOMED_INGREDIENT_MAP,
)
# Agents known by name (no ingredient RxCUI in the sources read) and name synonyms: data, with
# the source of each name (docs/value_sets.md, "Medication agents by name").
MEDICATION_AGENTS = "medication-agents.json"


@dataclass(frozen=True)
class NameOnlyAgent:
    """An agent with no ingredient RxCUI: its code is "name:<name>" (never an RxCUI); it and its
    synonyms are matched in text, and the product map may target it by name."""

    name: str
    value_sets: tuple[str, ...]
    synonyms: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class AgentNames:
    """``medication-agents.json``: name-only agents, and further names of RxNorm ingredients
    (INN vs USAN spelling, salt-free short names) keyed by the ingredient's RxNorm name."""

    name_only: tuple[NameOnlyAgent, ...] = ()
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)


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


def _names(path: Path, entry: Any, key: str) -> tuple[str, ...]:
    got = entry.get(key, [])
    if not isinstance(got, list) or not all(isinstance(n, str) and n.strip() for n in got):
        raise TerminologyError(f"{path.name}: {key} of {entry.get('name')!r} must list names")
    return tuple(n.strip().lower() for n in got)


def _agent_names(path: Path, value_sets: Mapping[str, ValueSet]) -> AgentNames:
    """Read ``medication-agents.json``; every entry needs a name and a source, and a name-only
    agent's value sets must exist."""
    data = _read_json(path)
    name_only: list[NameOnlyAgent] = []
    synonyms: dict[str, tuple[str, ...]] = {}
    for key in ("name_only_agents", "synonyms"):
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise TerminologyError(f"{path.name}: {key} must be a list")
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise TerminologyError(f"{path.name}: an entry of {key} has no name")
            if not str(entry.get("source", "")).strip():
                raise TerminologyError(f"{path.name}: {name!r} has no source")
            if key == "synonyms":
                synonyms[name.strip().lower()] = _names(path, entry, "synonyms")
                continue
            vs_ids = _names(path, entry, "value_sets")
            missing = [v for v in vs_ids if v not in value_sets]
            if not vs_ids or missing:
                raise TerminologyError(f"{path.name}: {name!r}: unknown value sets {missing}")
            name_only.append(
                NameOnlyAgent(
                    name.strip().lower(),
                    vs_ids,
                    _names(path, entry, "synonyms"),
                    str(entry["source"]),
                )
            )
    return AgentNames(tuple(name_only), synonyms)


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
        agent_names: AgentNames | None = None,
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
        self._agent_names = agent_names or AgentNames()
        self._agent_sets: dict[str, set[str]] = {}
        self._build_agents()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, directory: Path | None = None) -> Terminology:
        """The value sets and maps of ``directory`` (default: the bundled ``value_sets/``).

        Parsing 23 MB of JSON costs seconds, so one process reuses what it loaded while no file
        in the folder changed (name, size and modification time): a notebook screening again,
        or several screens in one process, read the folder once. The object is never changed
        after loading, so sharing it is safe.
        """
        folder = Path(directory) if directory is not None else default_directory()
        if not folder.is_dir():
            raise TerminologyError(f"value set folder not found: {folder}")
        key = (str(folder.resolve()), _folder_signature(folder))
        cached = _LOADED.get(key)
        if cached is None:
            cached = cls._parse_folder(folder)
            for old in [k for k in _LOADED if k[0] == key[0]]:
                del _LOADED[old]  # an edited folder replaces its old entry
            while len(_LOADED) >= _LOADED_MAX:
                del _LOADED[next(iter(_LOADED))]
            _LOADED[key] = cached
        return cached

    @classmethod
    def _parse_folder(cls, folder: Path) -> Terminology:
        value_sets: dict[str, ValueSet] = {}
        for path in sorted(folder.glob("*.json")):
            if path.name in _CONCEPT_MAPS or path.name == MEDICATION_AGENTS:
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
        agent_names = AgentNames()
        if (folder / MEDICATION_AGENTS).is_file():
            agent_names = _agent_names(folder / MEDICATION_AGENTS, value_sets)
        return cls(
            value_sets,
            {k: tuple(v) for k, v in product_ingredients.items()},
            product_names,
            moiety,
            ingredient_names,
            {k: tuple(v) for k, v in ndc_products.items()},
            snomed,
            agent_names,
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

    def medication_value_sets(self) -> list[str]:
        """Value sets of medication agents: those holding RxNorm codes, or named by a name-only
        agent (a new trial's drug value sets need no code change)."""
        named = {v for a in self._agent_names.name_only for v in a.value_sets}
        return sorted(
            vs_id
            for vs_id, vs in self._value_sets.items()
            if vs_id in named or any(system == RXNORM for system, _ in vs.concepts)
        )

    def _build_agents(self) -> None:
        med_sets = self.medication_value_sets()
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
        for agent in self._agent_names.name_only:
            code = f"name:{agent.name}"
            self._ingredient_names[code] = agent.name
            self._agent_sets.setdefault(code, set()).update(agent.value_sets)
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
        for base, synonyms in self._agent_names.synonyms.items():
            if base in moiety_by_name:
                for syn in synonyms:
                    names.setdefault(syn, moiety_by_name[base])
        for agent in self._agent_names.name_only:
            for n in (agent.name, *agent.synonyms):
                names.setdefault(n, f"name:{agent.name}")
        self._text_names = names
        alternatives = sorted(names, key=len, reverse=True) or ["(?!)"]  # no names: no match
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
