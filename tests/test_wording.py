"""Counted nouns agree with their number."""

from hyperlora_ext.wording import counted


def test_counted_nouns_agree_with_the_number():
    assert counted(1, "photo") == "1 photo"
    assert counted(0, "face") == "0 faces"
    assert counted(2, "photo") == "2 photos"
    assert counted(3, "identity", "identities") == "3 identities"
