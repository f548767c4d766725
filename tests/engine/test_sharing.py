"""KeyUses: keys more than one trial asks, freed after their last use."""

from fhir_cohort.engine.sharing import KeyUses


def test_a_key_is_shared_until_the_last_trial_that_asks_it() -> None:
    uses = KeyUses([["a", "b", "b"], ["a", "c"], ["a", "b"]])
    assert "a" in uses and "b" in uses and "c" not in uses and uses
    assert uses.done_with(["a", "b", "c"]) == []
    assert sorted(uses.done_with(["a", "c"])) == []
    assert sorted(uses.done_with(["a", "b"])) == ["a", "b"]
    assert not uses and "a" not in uses and uses.done_with(["a"]) == []


def test_no_trial_shares_with_itself() -> None:
    assert not KeyUses([["a", "a"]]) and not KeyUses()
