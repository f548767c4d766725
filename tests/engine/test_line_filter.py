"""The raw-line filter drops only provably irrelevant lines (issue 9 item 3).

A line may be dropped unparsed only when its top-level resourceType is verified from the bytes
as the file's type, it has no backslash and no relevant code token. JSON escapes are legal in
any key or value, so a code spelled with them is never hidden.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.criteria import default_criteria_path, load_criteria
from fhir_cohort.engine.flatten import Flattener, _verified_type, make_line_filter
from fhir_cohort.pipeline import relevant_codes
from fhir_cohort.terminology import Terminology

TERM = Terminology.load()
RELEVANT = sorted(relevant_codes(load_criteria(default_criteria_path()), TERM))
FILTERS = {t: make_line_filter(RELEVANT, (), t) for t in ("Condition", "Observation", None)}
FLATTENER = Flattener(RELEVANT, ())
# Where an escape can hide something from a byte search: every key and value on the path
# from the top to the code.
PLACES = (
    "key:code",
    "value:code",
    "key:system",
    "value:system",
    "key:coding",
    "key:resourceType",
    "value:resourceType",
)


def _line(rtype: str, system: str, code: str, place: str, at: int) -> bytes:
    """A compact resource line with one character of the ``place`` token written as \\uXXXX."""
    parts = {
        "resourceType": rtype,
        "system": system,
        "code": code,
    }
    kind, name = place.split(":")
    key = {n: f'"{n}"' for n in ("resourceType", "code", "coding", "system")}
    val = {n: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for n, v in parts.items()}
    token = name if kind == "key" else parts[name]
    i = at % len(token)
    escaped = token[:i] + f"\\u{ord(token[i]):04x}" + token[i + 1 :]
    if kind == "key":
        key[name] = f'"{escaped}"'
    else:
        val[name] = '"' + escaped + '"'
    text = (
        f'{{{key["resourceType"]}:{val["resourceType"]},"id":"x",'
        f'"subject":{{"reference":"Patient/p"}},'
        f"{key['code']}:{{{key['coding']}:[{{{key['system']}:{val['system']},"
        f"{key['code']}:{val['code']}}}]}}}}\n"
    )
    return text.encode()


def _found(rtype: str, line: bytes, system: str, code: str) -> bool:
    import orjson

    resource = orjson.loads(line)
    assert resource["code"]["coding"][0] == {"system": system, "code": code}
    kept = FILTERS[rtype](line) and FILTERS[None](line)
    return kept and bool(FLATTENER.flatten(resource, "x:1"))


def test_every_relevant_code_with_an_escape_is_kept_and_found() -> None:
    """Every code of the trial's value sets, an escape placed in turn in each key or value."""
    misses = []
    for i, (system, code) in enumerate(RELEVANT):
        place = PLACES[i % len(PLACES)]
        line = _line("Condition", system, code, place, i)
        if not _found("Condition", line, system, code):
            misses.append((system, code, place))
    assert not misses, misses[:10]


@given(
    st.sampled_from(RELEVANT),
    st.sampled_from(PLACES),
    st.integers(0, 200),
    st.sampled_from(["Condition", "Observation"]),
)
def test_an_escape_anywhere_never_hides_a_code(
    pair: tuple[str, str], place: str, at: int, rtype: str
) -> None:
    system, code = pair
    assert _found(rtype, _line(rtype, system, code, place, at), system, code)


def test_unescaped_irrelevant_lines_of_the_file_type_are_still_dropped() -> None:
    """The fast path stays: a plain line of the file's type without a relevant code."""
    line = b'{"resourceType":"Condition","id":"c","code":{"coding":[{"code":"I10"}]}}\n'
    assert not FILTERS["Condition"](line)
    assert not FILTERS[None](line)
    # The same line with one harmless escape is parsed instead.
    assert FILTERS["Condition"](line.replace(b"I10", b"I1\\u0030"))


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":"c","code":{"coding":[{"code":"I10"}]}}',  # no resourceType
        b'{"resourceType":"Conditon","id":"c"}',  # misspelt
        b'{"resourceType":5,"id":"c"}',  # not a string
        b'{"resourceType":null,"id":"c"}',
        b'{"resourceType":"Condition ","id":"c"}',  # not exactly the type
        b'{"resourceType":"Bundle","type":"collection"}',  # a Bundle, even empty
        b'{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Condition"}}]}',
        b'{"entry":[{"resource":{"resourceType":"Condition","id":"c"}}]}',  # not top level
        b'{"id":"c","contained":[{"resourceType":"Condition","id":"d"}]}',
        b'{"resourceType":"Condition","resourceType":"Patient","id":"c"}',  # repeated key
        b'{"resourceType":"Encounter","id":"e"}',  # another real type in a typed file
        b'{"\\u0072esourceType":"Condition","id":"c"}',  # an escaped key
        b'[{"resourceType":"Condition","id":"c"}]',  # an array
        b'{"resourceType":"Condition","id":"c"',  # truncated
        b'{"resourceType":"Condition","id":"c"} trailing',  # garbage after the object
    ],
)
@pytest.mark.parametrize("rtype", ["Condition", "MedicationRequest", "Patient"])
def test_lines_not_proven_irrelevant_are_parsed(line: bytes, rtype: str) -> None:
    line = line.replace(b'"Condition"', f'"{rtype}"'.encode())
    for crlf in (b"\n", b"\r\n"):
        assert make_line_filter(RELEVANT, (), rtype)(line + crlf)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"resourceType":"Condition","id":"c"}', b"Condition"),
        (b'  { "resourceType" : "Condition" , "id":"c"}', b"Condition"),
        (b'{"id":"c","meta":{"tag":[{"code":"x"}]},"resourceType":"Condition"}', b"Condition"),
        (b'{"id":"c","x":"{{[","resourceType":"Condition"}', b"Condition"),
        (b'{"id":"c","x":{"resourceType":"Condition"}}', None),
        (b'{"id":"c","x":[{"resourceType":"Condition"}]}', None),
        (b'{"resourceType":"Condition1","id":"c"}', None),
        (b'{"text":"resourceType","id":"c"}', None),
    ],
)
def test_verified_type_needs_top_level_proof(line: bytes, expected: bytes | None) -> None:
    assert _verified_type(line) == expected


def test_mixed_files_drop_only_real_types_no_table_holds() -> None:
    f = FILTERS[None]
    assert not f(b'{"resourceType":"Encounter","id":"e"}\n')
    for kept in ("Bundle", "Encountr", "Patient", "Medication", "Resource"):
        assert f(f'{{"resourceType":"{kept}","id":"e"}}\n'.encode()), kept


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["resourceType", "id", "x", "{", "["]), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from(["resourceType", "id", "code", "x", "y"]), json_values),
    st.sampled_from(["Condition", "Patient", 5, None]),
    st.booleans(),
)
def test_verified_type_is_sound(obj: dict, rtype: object, spaced: bool) -> None:
    """Whenever the bytes verify a type, parsing agrees: it is the top-level resourceType."""
    import json

    if rtype is not None:
        obj["resourceType"] = rtype
    sep = (", ", " : ") if spaced else (",", ":")
    line = json.dumps(obj, separators=sep, ensure_ascii=False).encode()
    got = _verified_type(line)
    if got is not None and b"\\" not in line:
        assert json.loads(line).get("resourceType") == got.decode()
