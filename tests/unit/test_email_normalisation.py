"""`normalize_email`: the stored form of an address, whose hash keys suppressions. Case never matters;
normalising is idempotent, for internationalised domains in either spelling too."""

from __future__ import annotations

import idna
from hypothesis import assume, example, given
from hypothesis import strategies as st

from newsletter.audience.subscribers import normalize_email, spellings
from newsletter.core.models import email_hash


def test_an_address_is_stored_lower_cased_and_a_domain_as_typed() -> None:
    """Case never makes two subscribers; the Punycode and the Unicode spelling of a domain stay as typed
    (folding them would re-hash addresses already stored, erased ones included)."""
    assert normalize_email(" Carol@XN--BCHER-KVA.DE ") == "carol@xn--bcher-kva.de"
    assert normalize_email("CAROL@BÜCHER.de") == normalize_email("carol@bücher.de") == "carol@bücher.de"
    assert email_hash(normalize_email("Ada@Example.org")) == email_hash(normalize_email("ada@example.org"))


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


def test_a_mailbox_has_its_unicode_and_its_ascii_spelling() -> None:
    """What an ESP reports (the ASCII spelling it was given) leads to the subscriber stored as typed."""
    assert spellings("Carol@XN--BCHER-KVA.DE") == ["carol@xn--bcher-kva.de", "carol@bücher.de"]
    assert spellings("carol@bücher.de") == ["carol@bücher.de", "carol@xn--bcher-kva.de"]
    assert spellings("Ada@Example.org") == ["ada@example.org"]
    assert spellings("not an address") == ["not an address"]
    assert spellings("x@xn--zz.de") == ["x@xn--zz.de"]  # not valid Punycode: no other spelling


@given(
    st.one_of(
        st.builds(lambda local, domain: f"{local}@{domain}", _locals, _domains),
        st.builds(lambda local, domain: f"{local}@{_ascii_spelling(domain)}", _locals, _domains),
        st.text(max_size=40),
    )
)
@example("carol@xn--bcher-kva.de")
@example("x@straße.de")
def test_every_spelling_is_a_stored_form_that_leads_back_to_the_others(address: str) -> None:
    forms = spellings(address)
    once = _normalised(address)
    assert forms[0] == (address if once is None else once)
    assert len(forms) == len(set(forms)) <= 2
    for form in forms[1:]:
        assert normalize_email(form) == form
        assert set(spellings(form)) == set(forms)
