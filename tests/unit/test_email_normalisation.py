"""One mailbox, one stored address: `normalize_email` gives an internationalised domain one form (its
Unicode form) whether it was typed in Unicode or in Punycode, in any case, so the hash that keys a
suppression is the same for every spelling a person (or the ESP) may use."""

from __future__ import annotations

import idna
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from newsletter.audience.subscribers import normalize_email
from newsletter.core.models import email_hash


def test_both_spellings_of_an_internationalised_domain_are_one_address() -> None:
    spellings = ["carol@xn--bcher-kva.de", "Carol@XN--BCHER-KVA.DE", "carol@bücher.de", "CAROL@BÜCHER.de"]
    assert {normalize_email(s) for s in spellings} == {"carol@bücher.de"}
    assert len({email_hash(normalize_email(s)) for s in spellings}) == 1


@pytest.mark.parametrize("address", ["a@ab--cd.org", "a@xn--abc.org", "a@xn--.org"])
def test_a_label_with_two_dashes_that_is_not_punycode_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        normalize_email(address)


def _label(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=1, max_size=12)


_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_UNICODE = _LETTERS + "äöüßéèçñøåłğıžжщяλσς中文日本語عربيहिन्दी"
_locals = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10})?", fullmatch=True)
_domains = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_label(_UNICODE) | _label(_LETTERS), min_size=1, max_size=3),
    st.sampled_from(["de", "org", "com", "рф", "中国", "XN--P1AI", "Org"]),
)


def _ascii_spelling(domain: str) -> str:
    """The domain as Punycode (IDNA 2008, as a mail client or the ESP may write it)."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        assume(False)
        raise


def _normalised(address: str) -> str | None:
    try:
        return normalize_email(address)
    except ValueError:
        return None


@given(local=_locals, domain=_domains, shout=st.booleans())
@example(local="carol", domain="bücher.de", shout=False)
@example(local="erin", domain="straße.de", shout=True)
def test_the_unicode_and_the_punycode_spelling_normalise_alike(local: str, domain: str, shout: bool) -> None:
    ascii_domain = _ascii_spelling(domain)
    typed = f"{local}@{ascii_domain.upper() if shout else ascii_domain}"
    assert _normalised(f"{local}@{domain}") == _normalised(typed)


@given(
    st.one_of(
        st.builds(lambda local, domain: f"{local}@{domain}", _locals, _domains),
        st.builds(lambda local, domain: f"{local}@{_ascii_spelling(domain)}", _locals, _domains),
        st.text(max_size=40).map(lambda t: t + "@" + "bücher.de"),
        st.text(max_size=40),
    )
)
@example("carol@xn--bcher-kva.de")
@example("İlse@bücher.de")
def test_normalising_twice_changes_nothing(address: str) -> None:
    once = _normalised(address)
    assume(once is not None)
    assert once is not None and normalize_email(once) == once
