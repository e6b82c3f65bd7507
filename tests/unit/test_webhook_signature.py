"""The signature header's shape, checked before a webhook body is read: every signature SendGrid can
make passes it, and nothing a stranger sends makes it raise."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.esp.sendgrid.signature import MAX_SIGNATURE_BYTES, signature_shaped, signature_valid

_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=200)
@given(st.binary(max_size=200), st.integers(min_value=1_600_000_000, max_value=2_000_000_000))
def test_every_real_signature_has_the_shape_and_verifies(body: bytes, stamp: int) -> None:
    timestamp = str(stamp)
    signature = base64.b64encode(_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    assert signature_shaped(signature)
    assert signature_valid(_KEY.public_key(), signature, timestamp, body)


@given(st.text(max_size=300) | st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode()))
def test_anything_else_is_answered_without_raising_and_never_passes_long(signature: str) -> None:
    if signature_shaped(signature):
        assert len(base64.b64decode(signature, validate=True)) <= MAX_SIGNATURE_BYTES


def test_what_cannot_be_a_p256_signature_is_refused() -> None:
    assert not signature_shaped("")
    assert not signature_shaped(base64.b64encode(b"signature").decode())  # not DER
    assert not signature_shaped("MEUCIQ" + "A" * 2000)  # far too long
    assert not signature_shaped("MAYCAQACAQA=")  # DER, but r = s = 0
    assert not signature_shaped("ü" * 8)
