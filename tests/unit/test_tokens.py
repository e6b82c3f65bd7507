"""Signed link tokens: they name one subscriber and one purpose, and nothing else gets through."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from newsletter.mail.tokens import Purpose, TokenError, claimed_id, make_token, make_tokens, read_token

KEY = "current-key-0123456789abcdef"
OLD = "previous-key-0123456789abcdef"
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
YEAR = timedelta(days=400)

ids = st.integers(min_value=0, max_value=2**64 - 1)
purposes = st.sampled_from(list(Purpose))
keys = st.text(min_size=16, max_size=64)


@given(ids, purposes, keys)
def test_a_token_reads_back_as_the_subscriber_it_was_made_for(subscriber_id, purpose, key):
    token = make_token([key], subscriber_id, purpose, now=NOW)
    assert read_token([key], token, purpose, max_age=YEAR, now=NOW) == subscriber_id


@given(ids, purposes)
def test_tokens_are_short_and_url_safe(subscriber_id, purpose):
    token = make_token([KEY], subscriber_id, purpose)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40}", token)


@given(ids, purposes, st.data())
def test_any_change_to_a_token_is_refused(subscriber_id, purpose, data):
    token = make_token([KEY], subscriber_id, purpose, now=NOW)
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii"))
    assume(replacement != token[position])
    tampered = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(TokenError) as refused:
        read_token([KEY], tampered, purpose, max_age=YEAR, now=NOW)
    assert refused.value.reason in ("malformed", "bad signature")


@given(ids, purposes, st.text(max_size=60))
def test_a_forged_token_is_refused(subscriber_id, purpose, forged):
    assume(forged != make_token([KEY], subscriber_id, purpose, now=NOW))
    with pytest.raises(TokenError):
        read_token([KEY], forged, purpose, max_age=YEAR, now=NOW)


@given(ids, purposes, purposes)
def test_a_token_for_one_purpose_does_not_open_another(subscriber_id, made_for, used_for):
    assume(made_for != used_for)
    token = make_token([KEY], subscriber_id, made_for, now=NOW)
    with pytest.raises(TokenError) as refused:
        read_token([KEY], token, used_for, max_age=YEAR, now=NOW)
    assert refused.value.reason == "wrong purpose"


@given(ids, purposes)
def test_after_rotation_the_new_key_signs_and_the_old_key_still_verifies(subscriber_id, purpose):
    old_token = make_token([OLD], subscriber_id, purpose, now=NOW)
    rotated = [KEY, OLD]
    assert read_token(rotated, old_token, purpose, max_age=YEAR, now=NOW) == subscriber_id
    new_token = make_token(rotated, subscriber_id, purpose, now=NOW)
    assert read_token([KEY], new_token, purpose, max_age=YEAR, now=NOW) == subscriber_id
    with pytest.raises(TokenError) as refused:
        read_token([OLD], new_token, purpose, max_age=YEAR, now=NOW)
    assert refused.value.reason == "bad signature"


def test_a_retired_key_no_longer_verifies():
    token = make_token([OLD], 42, Purpose.UNSUBSCRIBE, now=NOW)
    with pytest.raises(TokenError) as refused:
        read_token([KEY], token, Purpose.UNSUBSCRIBE, max_age=YEAR, now=NOW)
    assert refused.value.reason == "bad signature"


@given(ids, purposes, st.integers(min_value=0, max_value=10_000_000))
def test_a_token_expires_after_max_age(subscriber_id, purpose, age_seconds):
    token = make_token([KEY], subscriber_id, purpose, now=NOW)
    later = NOW + timedelta(seconds=age_seconds)
    max_age = timedelta(days=7)
    if timedelta(seconds=age_seconds) <= max_age:
        assert read_token([KEY], token, purpose, max_age=max_age, now=later) == subscriber_id
    else:
        with pytest.raises(TokenError) as refused:
            read_token([KEY], token, purpose, max_age=max_age, now=later)
        assert refused.value.reason == "expired"


def test_tokens_use_the_clock_when_no_time_is_given():
    token = make_token([KEY], 7, Purpose.VIEW)
    assert read_token([KEY], token, Purpose.VIEW, max_age=timedelta(minutes=1)) == 7


def test_no_key_means_no_token():
    with pytest.raises(ValueError):
        make_token([], 1, Purpose.VIEW)


def test_a_negative_subscriber_id_is_a_programming_error():
    with pytest.raises(ValueError):
        make_token([KEY], -1, Purpose.VIEW)


@pytest.mark.parametrize(
    "forged",
    ["", "x" * 39, "x" * 41, "=" * 40, "+" + "A" * 39, "/" + "A" * 39, "é" + "A" * 39, "A" * 39 + "="],
)
def test_strings_of_the_wrong_shape_are_malformed(forged):
    with pytest.raises(TokenError) as refused:
        read_token([KEY], forged, Purpose.VIEW, max_age=YEAR, now=NOW)
    assert refused.value.reason == "malformed"


secrets_ = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@given(ids, purposes, secrets_, secrets_)
def test_a_token_is_bound_to_its_subscribers_secret(subscriber_id, purpose, secret, other):
    """Erasing a subscriber destroys their secret: every link they were sent dies with it."""
    token = make_token([KEY], subscriber_id, purpose, secret=secret, now=NOW)
    assert claimed_id(token) == subscriber_id
    assert read_token([KEY], token, purpose, max_age=YEAR, secret=secret, now=NOW) == subscriber_id
    assume(other != secret)
    with pytest.raises(TokenError) as refused:
        read_token([KEY], token, purpose, max_age=YEAR, secret=other, now=NOW)
    assert refused.value.reason == "bad signature"


@given(st.text(max_size=60))
def test_claimed_id_refuses_anything_that_is_not_a_token(text):
    try:
        claimed_id(text)
    except TokenError as exc:
        assert exc.reason == "malformed"
    else:
        assert len(text) == 40


# --- one MAC for a bulletin's links (version 2) -------------------------------------------------------
LANE_PURPOSES = (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.VIEW)
lane_sets = st.lists(st.sampled_from(LANE_PURPOSES), min_size=1, max_size=3, unique=True)


def _stdlib_token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _version_1(subscriber_id: int, purpose_code: int, issued: int, secret: str, key: str) -> str:
    """A version-1 token built from the format in the module's docstring with the standard library."""
    payload = struct.pack(">BQI", 0x10 | purpose_code, subscriber_id, issued)
    tag = hmac.new(key.encode(), payload + secret.encode(), hashlib.sha256).digest()[:17]
    return _stdlib_token(payload + tag)


def _version_2(subscriber_id: int, purpose_code: int, lane: int, issued: int, secret: str, key: str) -> str:
    """A version-2 token, likewise: one keyed BLAKE2b, of which the purpose's lane is the tag."""
    subject = struct.pack(">QI", subscriber_id, issued)
    mac = hashlib.blake2b(
        subject + secret.encode(), key=key.encode(), digest_size=51, person=b"newsletter-links"
    )
    return _stdlib_token(bytes((0x20 | purpose_code,)) + subject + mac.digest()[lane * 17 : (lane + 1) * 17])


@given(ids, lane_sets, secrets_)
def test_one_mac_signs_every_link_of_an_email_and_each_opens_only_its_own_purpose(
    subscriber_id, purposes, secret
):
    tokens = make_tokens([KEY], subscriber_id, purposes, secret=secret, now=NOW)
    assert set(tokens) == set(purposes)
    for purpose, token in tokens.items():
        assert token == make_token([KEY], subscriber_id, purpose, secret=secret, now=NOW)
        assert read_token([KEY], token, purpose, max_age=YEAR, secret=secret, now=NOW) == subscriber_id
        for other in set(Purpose) - {purpose}:
            with pytest.raises(TokenError) as refused:
                read_token([KEY], token, other, max_age=YEAR, secret=secret, now=NOW)
            assert refused.value.reason == "wrong purpose"


@given(ids, st.sampled_from(LANE_PURPOSES), st.sampled_from(list(Purpose)), secrets_)
def test_relabelling_a_link_for_another_purpose_is_a_bad_signature(subscriber_id, made_for, relabel, secret):
    """The unsubscribe link a mailbox provider holds (List-Unsubscribe) cannot be turned into the
    preferences link of the same email by rewriting its purpose: each purpose has its own tag."""
    assume(relabel != made_for)
    raw = bytearray(
        base64.urlsafe_b64decode(
            make_tokens([KEY], subscriber_id, [made_for], secret=secret, now=NOW)[made_for]
        )
    )
    raw[0] = 0x20 | PURPOSE_CODES[relabel]
    with pytest.raises(TokenError) as refused:
        read_token([KEY], _stdlib_token(bytes(raw)), relabel, max_age=YEAR, secret=secret, now=NOW)
    assert refused.value.reason == "bad signature"


PURPOSE_CODES = {
    Purpose.UNSUBSCRIBE: 1,
    Purpose.PREFERENCES: 2,
    Purpose.VIEW: 3,
    Purpose.CONFIRM: 4,
    Purpose.MY_DATA: 5,
}


@given(ids, st.sampled_from(list(Purpose)), secrets_)
def test_tokens_match_the_documented_format(subscriber_id, purpose, secret):
    """Built independently from the docstring: version 2 for the links every bulletin carries,
    version 1 for the ones sent alone."""
    issued = int(NOW.timestamp())
    made = make_token([KEY], subscriber_id, purpose, secret=secret, now=NOW)
    if purpose in LANE_PURPOSES:
        lane = LANE_PURPOSES.index(purpose)
        assert made == _version_2(subscriber_id, PURPOSE_CODES[purpose], lane, issued, secret, KEY)
    else:
        assert made == _version_1(subscriber_id, PURPOSE_CODES[purpose], issued, secret, KEY)


@given(ids, st.sampled_from(list(Purpose)), secrets_)
def test_links_signed_before_version_2_still_open(subscriber_id, purpose, secret):
    """Emails already in inboxes carry version-1 tokens for every purpose: they keep working."""
    old = _version_1(subscriber_id, PURPOSE_CODES[purpose], int(NOW.timestamp()), secret, KEY)
    assert read_token([KEY], old, purpose, max_age=YEAR, secret=secret, now=NOW) == subscriber_id


@pytest.mark.parametrize("purpose", [Purpose.CONFIRM, Purpose.MY_DATA])
def test_links_sent_alone_are_not_signed_with_the_others(purpose):
    with pytest.raises(ValueError):
        make_tokens([KEY], 1, [Purpose.UNSUBSCRIBE, purpose])


def test_a_version_2_token_with_a_purpose_it_never_has_is_refused():
    raw = bytearray(base64.urlsafe_b64decode(make_token([KEY], 9, Purpose.VIEW, now=NOW)))
    raw[0] = 0x20 | PURPOSE_CODES[Purpose.CONFIRM]
    with pytest.raises(TokenError) as refused:
        read_token([KEY], _stdlib_token(bytes(raw)), Purpose.CONFIRM, max_age=YEAR, now=NOW)
    assert refused.value.reason == "bad signature"
