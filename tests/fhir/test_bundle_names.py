"""is_bundle_name, the Bundle reader's fast test of a file name, answers as classify."""

from hypothesis import given
from hypothesis import strategies as st

from fhir_cohort.fhir.sources import _SKIP_NAMES, classify, is_bundle_name

_STEMS = st.sampled_from(["x", "Patient", "Patient.000", ".hidden", "manifest", "log", "", "a.b"])
_SUFFIXES = st.sampled_from(
    [".json", ".json.gz", ".ndjson", ".ndjson.gz", ".JSON", ".Json.GZ", ".txt", ".jsonl", ""]
)
_DIRS = st.sampled_from(["", "dir/", "a/b/", "./", "/abs/"])


@given(_DIRS, _STEMS, _SUFFIXES)
def test_is_bundle_name_answers_as_classify(folder: str, stem: str, suffix: str) -> None:
    name = folder + stem + suffix
    assert is_bundle_name(name) == (classify(name) == ("json", None)), name


def test_every_skipped_name_in_any_case_is_no_bundle() -> None:
    for skipped in _SKIP_NAMES:
        for name in (skipped, skipped.upper(), f"dir/{skipped.title()}"):
            assert not is_bundle_name(name) and classify(name) is None, name
