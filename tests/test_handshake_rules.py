"""Handshake rules: bundle signatures, downgrade refusal, key validation, prekey age, replay of
first messages and the responder's header-encryption policy.

Bundles with hostile keys are signed by identity keys made here (``e2ee.handshake.signing``),
so a refusal can only come from the key check, not from a bad signature. Curve points are
derived here in plain Python (RFC 7748 / RFC 8032 arithmetic), not taken from the library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pytest

import e2ee
from e2ee.crypto import primitives
from e2ee.handshake import signing
from e2ee.limits import (
    MAX_BASE_KEYS_PER_PREKEY,
    MAX_SIGNED_PREKEY_AGE,
    MAX_SIGNED_PREKEY_FUTURE_SKEW,
    MLKEM1024_PUBLIC_KEY_SIZE,
)
from e2ee.ratchet import chains
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec
from tests.helpers import NOW, flip_bit, make_pair

E = TypeVar("E", bound=BaseException)

X3DH_OK = e2ee.SessionConfig(allow_x3dh=True)

# Initial-message field positions (spec: initial-message CDDL in e2ee.wire.messages).
I_SESSION_ID, I_IDENTITY, I_BASE_KEY, I_SPK_ID, I_OPK_ID = 2, 3, 4, 5, 6
I_KEM_ID, I_KEM_CT, I_HE, I_HEADER, I_CIPHERTEXT = 7, 8, 9, 10, 11

# --- curve arithmetic in plain Python --------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

Point = tuple[int, int, int, int]  # extended twisted Edwards coordinates
_IDENTITY: Point = (0, 1, 1, 0)


def _ed_add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _ed_mul(scalar: int, point: Point) -> Point:
    result = _IDENTITY
    while scalar:
        if scalar & 1:
            result = _ed_add(result, point)
        point = _ed_add(point, point)
        scalar >>= 1
    return result


def _ed_is_identity(p: Point) -> bool:
    return p[0] % _P == 0 and (p[1] - p[2]) % _P == 0


def _ed_recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _ed_decode(data: bytes) -> Point | None:
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _ed_recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def _ed_encode(p: Point) -> bytes:
    z_inv = pow(p[2], _P - 2, _P)
    x, y = p[0] * z_inv % _P, p[1] * z_inv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _ed_y(p: Point) -> int:
    return p[1] * pow(p[2], _P - 2, _P) % _P


_BASE_Y = 4 * pow(5, _P - 2, _P) % _P
_BASE_X = _ed_recover_x(_BASE_Y, 0)
assert _BASE_X is not None
_BASE: Point = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % _P)


def _order8_point() -> Point:
    """A point of order exactly 8: the torsion part of the first decodable small y."""
    y = 2
    while True:
        point = _ed_decode(y.to_bytes(32, "little"))
        if point is not None:
            torsion = _ed_mul(_L, point)
            if not _ed_is_identity(_ed_mul(4, torsion)):
                assert _ed_is_identity(_ed_mul(8, torsion))
                return torsion
        y += 1


TORSION8 = _order8_point()


def x25519_reference(scalar: bytes, u_bytes: bytes) -> bytes:
    """RFC 7748 X25519 (clamping the scalar, masking the top bit of u)."""
    k = int.from_bytes(scalar, "little")
    k &= ~7
    k &= (1 << 255) - 1
    k |= 1 << 254
    u = int.from_bytes(u_bytes, "little") & ((1 << 255) - 1)
    x1, x2, z2, x3, z3, swap = u, 1, 0, u, 1, 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % _P, b * b % _P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % _P, c * b % _P
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + 121665 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def _low_order_u() -> list[int]:
    """Montgomery u of the small-order points: images of the Edwards 8-torsion, plus p - 1
    (order 4 on the twist)."""
    us = {_P - 1}
    for i in range(1, 8):
        y = _ed_y(_ed_mul(i, TORSION8))
        if y != 1:
            us.add((1 + y) * pow(1 - y, _P - 2, _P) % _P)
    return sorted(us)


def _u(value: int) -> bytes:
    return value.to_bytes(32, "little")


GOOD_X25519 = primitives.x25519_public_key(hashlib.sha256(b"good x25519").digest())
LOW_ORDER_X25519 = [_u(u) for u in _low_order_u()]
NON_CANONICAL_X25519 = [
    _u(_P),  # 0 again
    _u(_P + 1),  # 1 again
    _u(_P + 9),  # the base point, encoded non-canonically
    _u(2**255 - 1),
    _u(int.from_bytes(GOOD_X25519, "little") | (1 << 255)),  # a real key with the top bit set
]
BAD_X25519 = [pytest.param(key, id=f"low-order-{i}") for i, key in enumerate(LOW_ORDER_X25519)] + [
    pytest.param(key, id=f"non-canonical-{i}") for i, key in enumerate(NON_CANONICAL_X25519)
]


def test_the_hostile_x25519_keys_are_what_they_claim() -> None:
    """Checks on the test data itself, with the reference X25519 above."""
    scalar = hashlib.sha256(b"scalar").digest()
    # The reference agrees with libsodium on an ordinary key...
    assert x25519_reference(scalar, GOOD_X25519) == primitives.x25519(scalar, GOOD_X25519)
    # ...and every small-order u gives the all-zero output for a clamped scalar.
    assert len(LOW_ORDER_X25519) == 5
    for key in LOW_ORDER_X25519:
        assert x25519_reference(scalar, key) == bytes(32)
    for key in NON_CANONICAL_X25519:
        assert int.from_bytes(key, "little") >= _P


# --- bundles signed by an identity made here --------------------------------------------------


@dataclass(frozen=True)
class Signer:
    identity_key: bytes
    sign: Callable[[bytes], bytes]


def seed_signer(seed: bytes) -> Signer:
    return Signer(primitives.ed25519_public_key(seed), lambda payload: signing.sign(seed, payload))


def mixed_order_signer(seed: bytes) -> Signer:
    """An identity key A + T (T of order 8) that still produces signatures libsodium accepts:
    S = r + k a with k = H(R || A + T || M) a multiple of 8, so [k](A + T) = [k]A."""
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)
    public = _ed_mul(a, _BASE)
    assert _ed_encode(public) == primitives.ed25519_public_key(seed)
    identity = _ed_encode(_ed_add(public, TORSION8))

    def sign(payload: bytes) -> bytes:
        for counter in range(1000):
            nonce = hashlib.sha512(digest[32:] + counter.to_bytes(4, "big") + payload).digest()
            r = int.from_bytes(nonce, "little") % _L
            big_r = _ed_encode(_ed_mul(r, _BASE))
            k = int.from_bytes(hashlib.sha512(big_r + identity + payload).digest(), "little") % _L
            if k % 8 == 0:
                return big_r + ((r + k * a) % _L).to_bytes(32, "little")
        raise AssertionError("no suitable nonce")

    return Signer(identity, sign)


SIGNER = seed_signer(hashlib.sha256(b"forger identity").digest())
KEM_PUBLIC = primitives.mlkem1024_public_key(hashlib.sha512(b"kem").digest())
OKEM_PUBLIC = primitives.mlkem1024_public_key(hashlib.sha512(b"one-time kem").digest())
OPK_PUBLIC = primitives.x25519_public_key(hashlib.sha256(b"opk").digest())


def make_bundle(
    signer: Signer = SIGNER,
    *,
    spk: bytes = GOOD_X25519,
    timestamp: int = NOW,
    kem: bytes | None = KEM_PUBLIC,
    opk: bytes | None = OPK_PUBLIC,
    okem: bytes | None = OKEM_PUBLIC,
) -> e2ee.PreKeyBundle:
    """A fully signed bundle (ids 1..4); each key can be replaced."""
    kem_id = 2 if kem is not None else None
    return e2ee.PreKeyBundle(
        identity_key=signer.identity_key,
        signed_prekey_id=1,
        signed_prekey=spk,
        signed_prekey_timestamp=timestamp,
        signed_prekey_signature=signer.sign(
            signing.signed_prekey_payload(1, timestamp, spk, kem_id, kem)
        ),
        kem_prekey_id=kem_id,
        kem_prekey=kem,
        one_time_prekey_id=3 if opk is not None else None,
        one_time_prekey=opk,
        one_time_prekey_signature=(
            signer.sign(signing.one_time_prekey_payload(3, opk)) if opk is not None else None
        ),
        one_time_kem_prekey_id=4 if okem is not None else None,
        one_time_kem_prekey=okem,
        one_time_kem_prekey_signature=(
            signer.sign(signing.one_time_kem_prekey_payload(4, okem)) if okem is not None else None
        ),
    )


def alice() -> tuple[e2ee.Account, DeterministicProvider]:
    provider = DeterministicProvider("alice")
    return e2ee.Account.generate(provider=provider, now=NOW), provider


def start_fails(
    bundle: e2ee.PreKeyBundle,
    expected: type[E],
    *,
    config: e2ee.SessionConfig = X3DH_OK,
    now: int = NOW,
) -> E:
    """``start_session`` raises ``expected``; the initiator's account is unchanged."""
    account, provider = alice()
    before = account.to_bytes()
    with pytest.raises(expected) as info:
        account.start_session(bundle, config=config, provider=provider, now=now)
    assert account.to_bytes() == before
    return info.value


def accept_fails(
    account: e2ee.Account,
    message: bytes,
    expected: type[E],
    *,
    config: e2ee.SessionConfig | None = None,
    now: int = NOW,
) -> E:
    """``accept_session`` raises ``expected``; the responder's account is byte-identical."""
    before = account.to_bytes()
    with pytest.raises(expected) as info:
        account.accept_session(
            message, config=config, provider=DeterministicProvider("accept"), now=now
        )
    assert account.to_bytes() == before
    return info.value


def decrypt_fails(session: e2ee.Session, message: bytes, expected: type[E]) -> E:
    before = session.to_bytes()
    with pytest.raises(expected) as info:
        session.decrypt(message)
    assert session.to_bytes() == before
    return info.value


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
@pytest.mark.parametrize("one_time", [True, False], ids=["one-time", "no-one-time"])
def test_forged_bundle_control_case_starts_a_session(post_quantum: bool, one_time: bool) -> None:
    """With ordinary keys the bundles built here work, so the refusals below are meaningful."""
    bundle = make_bundle(
        kem=KEM_PUBLIC if post_quantum else None,
        opk=OPK_PUBLIC if one_time else None,
        okem=OKEM_PUBLIC if one_time and post_quantum else None,
    )
    account, provider = alice()
    session = account.start_session(bundle, config=X3DH_OK, provider=provider, now=NOW)
    info = e2ee.peek(session.encrypt(b"hi", provider=provider))
    assert info.is_initial
    assert info.signed_prekey_id == 1
    assert info.one_time_prekey_id == (3 if one_time else None)


# --- 5a. every signature in a bundle is checked ---------------------------------------------


def _bob_bundle(post_quantum: bool = True) -> tuple[e2ee.Account, e2ee.PreKeyBundle]:
    provider = DeterministicProvider("bob")
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    bob.generate_one_time_prekeys(2, provider=provider)
    return bob, bob.prekey_bundle()


def _flip_first(value: Any) -> Any:
    return flip_bit(value, 0)


def _flip_last(value: Any) -> Any:
    return flip_bit(value, len(value) - 1, 6)


def _plus_one(value: Any) -> Any:
    return value + 1


SIGNED_FIELDS = [
    pytest.param(field, change, id=f"{field}-{change.__name__.strip('_')}")
    for field, changes in [
        ("signed_prekey_signature", (_flip_first, _flip_last)),
        ("signed_prekey", (_flip_first, _flip_last)),
        ("signed_prekey_id", (_plus_one,)),
        ("signed_prekey_timestamp", (_plus_one,)),
        ("kem_prekey", (_flip_first, _flip_last)),
        ("kem_prekey_id", (_plus_one,)),
        ("one_time_prekey_signature", (_flip_first, _flip_last)),
        ("one_time_prekey", (_flip_first, _flip_last)),
        ("one_time_prekey_id", (_plus_one,)),
        ("one_time_kem_prekey_signature", (_flip_first, _flip_last)),
        ("one_time_kem_prekey", (_flip_first, _flip_last)),
        ("one_time_kem_prekey_id", (_plus_one,)),
    ]
    for change in changes
]


@pytest.mark.parametrize(("field", "change"), SIGNED_FIELDS)
@pytest.mark.parametrize("config", [e2ee.SessionConfig(), X3DH_OK], ids=["default", "allow-x3dh"])
def test_tampered_signed_field_is_a_signature_error(
    field: str, change: Callable[[Any], Any], config: e2ee.SessionConfig
) -> None:
    _, bundle = _bob_bundle()
    assert bundle.one_time_prekey is not None
    assert bundle.one_time_kem_prekey is not None
    tampered = replace(bundle, **{field: change(getattr(bundle, field))})
    error = start_fails(tampered, e2ee.SignatureError, config=config)
    assert isinstance(error, e2ee.HandshakeError)
    # Through the wire form as well.
    start_fails(e2ee.PreKeyBundle.from_bytes(tampered.to_bytes()), e2ee.SignatureError)


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
def test_untampered_bundle_is_accepted(post_quantum: bool) -> None:
    bob, bundle = _bob_bundle(post_quantum)
    account, provider = alice()
    session = account.start_session(bundle, config=X3DH_OK, provider=provider, now=NOW)
    _, plaintext = bob.accept_session(
        session.encrypt(b"ok", provider=provider), provider=provider, now=NOW
    )
    assert plaintext == b"ok"


def test_a_signature_for_one_purpose_is_not_valid_for_another() -> None:
    """A one-time-prekey signature over the same id and key does not sign a signed prekey."""
    key = GOOD_X25519
    payload = signing.one_time_prekey_payload(1, key)
    bundle = replace(
        make_bundle(kem=None, opk=None, okem=None), signed_prekey_signature=SIGNER.sign(payload)
    )
    start_fails(bundle, e2ee.SignatureError)
    # The same for the two kinds of one-time prekey.
    good = make_bundle()
    assert good.one_time_kem_prekey_signature is not None
    swapped = replace(
        good,
        one_time_prekey_signature=SIGNER.sign(
            signing.signed_prekey_payload(3, 0, OPK_PUBLIC, None, None)
        ),
    )
    start_fails(swapped, e2ee.SignatureError)
    as_kem = replace(
        good,
        one_time_kem_prekey_signature=SIGNER.sign(
            signing.signed_prekey_payload(4, 0, GOOD_X25519, 4, OKEM_PUBLIC)
        ),
    )
    start_fails(as_kem, e2ee.SignatureError)


# --- 5b. the post-quantum part cannot be stripped ---------------------------------------------


def _strip_kem(bundle: e2ee.PreKeyBundle) -> e2ee.PreKeyBundle:
    return replace(
        bundle,
        kem_prekey_id=None,
        kem_prekey=None,
        one_time_kem_prekey_id=None,
        one_time_kem_prekey=None,
        one_time_kem_prekey_signature=None,
    )


@pytest.mark.parametrize("config", [e2ee.SessionConfig(), X3DH_OK], ids=["default", "allow-x3dh"])
@pytest.mark.parametrize("one_time", [True, False], ids=["one-time", "last-resort-only"])
def test_stripped_ml_kem_key_is_a_signature_error(
    config: e2ee.SessionConfig, one_time: bool
) -> None:
    provider = DeterministicProvider("strip")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    if one_time:
        bob.generate_one_time_prekeys(1, provider=provider)
    bundle = bob.prekey_bundle()
    assert bundle.post_quantum
    stripped = _strip_kem(bundle)
    assert not stripped.post_quantum
    start_fails(stripped, e2ee.SignatureError, config=config)
    start_fails(
        e2ee.PreKeyBundle.from_bytes(stripped.to_bytes()), e2ee.SignatureError, config=config
    )


def test_one_time_kem_prekey_without_last_resort_kem_prekey_is_malformed() -> None:
    _, bundle = _bob_bundle()
    with pytest.raises(e2ee.DecodeError):
        replace(bundle, kem_prekey_id=None, kem_prekey=None)


def test_dropping_only_the_one_time_kem_prekey_still_gives_pqxdh() -> None:
    bob, bundle = _bob_bundle()
    partial = replace(
        bundle,
        one_time_kem_prekey_id=None,
        one_time_kem_prekey=None,
        one_time_kem_prekey_signature=None,
    )
    account, provider = alice()
    session = account.start_session(partial, provider=provider, now=NOW)
    message = session.encrypt(b"pq", provider=provider)
    items, _ = codec.read_flat_array(message, 10**6)
    assert items[I_KEM_ID] == bundle.kem_prekey_id
    assert isinstance(items[I_KEM_CT], bytes)
    assert bob.accept_session(message, provider=provider, now=NOW)[1] == b"pq"


def test_bundle_without_ml_kem_needs_allow_x3dh() -> None:
    """[REQ-HS-07] A validly signed bundle with no ML-KEM prekey at all is refused with
    HandshakeError under the default config (allow_x3dh false), the account unchanged; only
    with allow_x3dh does it start an X3DH session (no ML-KEM id or ciphertext sent)."""
    classic = make_bundle(kem=None, okem=None)
    assert not e2ee.SessionConfig().allow_x3dh
    start_fails(classic, e2ee.HandshakeError, config=e2ee.SessionConfig())
    start_fails(classic, e2ee.HandshakeError, config=e2ee.SessionConfig(header_encryption=False))
    account, provider = alice()
    session = account.start_session(classic, config=X3DH_OK, provider=provider, now=NOW)
    items, _ = codec.read_flat_array(session.encrypt(b"x3dh", provider=provider), 10**6)
    assert items[I_KEM_ID] is None
    assert items[I_KEM_CT] is None


# --- 5c. the responder refuses X3DH aimed at a post-quantum signed prekey --------------------


def encode_flat(items: list[int | bytes | bool | None]) -> bytes:
    out = [codec.encode_array_head(len(items))]
    for item in items:
        if item is None:
            out.append(codec.ENCODED_NULL)
        elif item is True:
            out.append(codec.ENCODED_TRUE)
        elif item is False:
            out.append(codec.ENCODED_FALSE)
        elif isinstance(item, int):
            out.append(codec.encode_uint(item))
        else:
            out.append(codec.encode_bytes(item))
    return b"".join(out)


def rebuild(message: bytes, **changes: int | bytes | bool | None) -> bytes:
    """The message with some fields replaced (by position name, e.g. ``base_key=``)."""
    positions = {
        "session_id": I_SESSION_ID,
        "identity_key": I_IDENTITY,
        "base_key": I_BASE_KEY,
        "signed_prekey_id": I_SPK_ID,
        "one_time_prekey_id": I_OPK_ID,
        "kem_prekey_id": I_KEM_ID,
        "kem_ciphertext": I_KEM_CT,
        "header_encryption": I_HE,
        "header": I_HEADER,
        "ciphertext": I_CIPHERTEXT,
    }
    items, _ = codec.read_flat_array(message, 10**6)
    assert len(items) == 12
    assert encode_flat(items) == message
    for name, value in changes.items():
        items[positions[name]] = value
    return encode_flat(items)


def _first_message(
    *,
    post_quantum: bool = True,
    one_time: int = 1,
    header_encryption: bool = True,
    seed: str = "first",
) -> tuple[e2ee.Account, e2ee.Session, bytes]:
    provider = DeterministicProvider(seed)
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    bob.generate_one_time_prekeys(one_time, provider=provider)
    account = e2ee.Account.generate(provider=provider, now=NOW)
    config = e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=True)
    session = account.start_session(bob.prekey_bundle(), config=config, provider=provider, now=NOW)
    return bob, session, session.encrypt(b"first message", provider=provider)


@pytest.mark.parametrize("one_time", [1, 0], ids=["one-time", "last-resort"])
def test_pqxdh_message_with_kem_fields_nulled_is_refused(one_time: int) -> None:
    bob, _, message = _first_message(one_time=one_time)
    x3dh = rebuild(message, kem_prekey_id=None, kem_ciphertext=None)
    assert e2ee.peek(x3dh).is_initial  # well-formed on the wire
    accept_fails(bob, x3dh, e2ee.HandshakeError)
    accept_fails(bob, x3dh, e2ee.HandshakeError, config=X3DH_OK)
    assert bob.accept_session(message, now=NOW)[1] == b"first message"


def _skip_signature_checks(identity_key: bytes, payload: bytes, signature: bytes) -> None:
    return None


@pytest.mark.parametrize("one_time", [1, 0], ids=["one-time", "last-resort"])
def test_genuine_x3dh_to_a_post_quantum_signed_prekey_is_refused(
    monkeypatch: pytest.MonkeyPatch, one_time: int
) -> None:
    """An initiator that ignores the signatures (simulated) runs a real X3DH against Bob's
    PQ signed prekey; Bob must refuse although every key in the message is right."""
    provider = DeterministicProvider("downgrade")
    bob = e2ee.Account.generate(provider=provider, now=NOW)
    bob.generate_one_time_prekeys(one_time, provider=provider)
    stripped = _strip_kem(bob.prekey_bundle())
    account = e2ee.Account.generate(provider=provider, now=NOW)
    with monkeypatch.context() as patch:
        patch.setattr(signing, "verify", _skip_signature_checks)
        session = account.start_session(stripped, config=X3DH_OK, provider=provider, now=NOW)
    message = session.encrypt(b"downgraded", provider=provider)
    items, _ = codec.read_flat_array(message, 10**6)
    assert items[I_KEM_ID] is None
    assert items[I_KEM_CT] is None
    accept_fails(bob, message, e2ee.HandshakeError)
    accept_fails(bob, message, e2ee.HandshakeError, config=X3DH_OK)


# --- 5d. X25519 key validation ------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_X25519)
@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
def test_bad_signed_prekey_with_valid_signature_is_refused(key: bytes, post_quantum: bool) -> None:
    bundle = make_bundle(
        spk=key,
        kem=KEM_PUBLIC if post_quantum else None,
        okem=OKEM_PUBLIC if post_quantum else None,
    )
    start_fails(bundle, e2ee.HandshakeError)


@pytest.mark.parametrize("key", BAD_X25519)
def test_bad_one_time_prekey_with_valid_signature_is_refused(key: bytes) -> None:
    start_fails(make_bundle(opk=key), e2ee.HandshakeError)


@pytest.mark.parametrize("key", BAD_X25519)
@pytest.mark.parametrize("one_time", [1, 0], ids=["one-time", "last-resort"])
def test_bad_base_key_in_initial_message_is_refused(key: bytes, one_time: int) -> None:
    bob, _, message = _first_message(one_time=one_time)
    accept_fails(bob, rebuild(message, base_key=key), e2ee.HandshakeError)
    assert bob.accept_session(message, now=NOW)[1] == b"first message"


def _with_clear_ratchet_key(message: bytes, key: bytes) -> bytes:
    items, _ = codec.read_flat_array(message, 10**6)
    header_index = len(items) - 2
    header = items[header_index]
    assert isinstance(header, bytes)
    assert len(header) == 40
    items[header_index] = key + header[32:]
    return encode_flat(items)


@pytest.mark.parametrize("key", BAD_X25519)
def test_bad_ratchet_key_in_clear_header_of_first_message(key: bytes) -> None:
    bob, _, message = _first_message(header_encryption=False)
    error = accept_fails(bob, _with_clear_ratchet_key(message, key), e2ee.errors.RemoteError)
    assert not isinstance(error, ValueError)
    assert bob.accept_session(message, now=NOW)[1] == b"first message"


@pytest.mark.parametrize("key", BAD_X25519)
@pytest.mark.parametrize("new_chain", [True, False], ids=["new-chain", "current-chain"])
def test_bad_ratchet_key_in_clear_header_of_normal_message(key: bytes, new_chain: bool) -> None:
    pair = make_pair(header_encryption=False)
    if not new_chain:
        assert pair.bob.decrypt(pair.alice.encrypt(b"warm-up")) == b"warm-up"
    message = pair.alice.encrypt(b"normal")
    decrypt_fails(pair.bob, _with_clear_ratchet_key(message, key), e2ee.errors.RemoteError)
    assert pair.bob.decrypt(message) == b"normal"


def forge_new_chain_message(session: e2ee.Session, ratchet_key: bytes, plaintext: bytes) -> bytes:
    """A complete, correctly keyed first message of a new sending chain of ``session``'s peer
    that announces ``ratchet_key``: everything a peer holding the session secrets would send.

    Built from ``session``'s own state with the reference X25519 above (which, like an
    unchecked implementation, accepts any 32 bytes), so that the only possible reason to refuse
    it is the ratchet key itself.
    """
    ratchet = session._ratchet
    dh = x25519_reference(ratchet.dhs_private, ratchet_key)
    if ratchet.header_encryption:
        _, chain_key, _ = chains.kdf_rk_he(ratchet.root_key, dh)
    else:
        _, chain_key = chains.kdf_rk(ratchet.root_key, dh)
    prefix = (
        codec.encode_array_head(5)
        + codec.encode_uint(1)
        + codec.encode_uint(3)
        + codec.encode_bytes(session.session_id)
    )
    header = ratchet_key + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # PN = 0, N = 0
    if ratchet.header_encryption:
        assert ratchet.nhkr is not None
        nonce = hashlib.sha256(ratchet_key).digest()[:24]
        header = nonce + primitives.xchacha20poly1305_encrypt(
            ratchet.nhkr, nonce, header, ratchet.associated_data + prefix
        )
    mac_prefix = prefix + codec.encode_bytes(header)
    ciphertext = chains.encrypt(
        chains.message_key(chain_key), plaintext, ratchet.associated_data + mac_prefix
    )
    return mac_prefix + codec.encode_bytes(ciphertext)


@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_forged_new_chain_message_control_case_is_accepted(header_encryption: bool) -> None:
    """The forging procedure is right: with an ordinary ratchet key the message decrypts."""
    pair = make_pair(header_encryption=header_encryption)
    forged = forge_new_chain_message(pair.bob, GOOD_X25519, b"forged but well keyed")
    assert pair.bob.decrypt(forged) == b"forged but well keyed"


@pytest.mark.parametrize("key", BAD_X25519)
@pytest.mark.parametrize("header_encryption", [True, False], ids=["he", "clear"])
def test_correctly_keyed_message_with_bad_ratchet_key_is_refused(
    key: bytes, header_encryption: bool
) -> None:
    """The peer's new ratchet key is validated like every other X25519 key, even when the
    header (sealed under the right header key) and the MAC are otherwise correct."""
    pair = make_pair(header_encryption=header_encryption)
    genuine = pair.alice.encrypt(b"genuine")
    forged = forge_new_chain_message(pair.bob, key, b"forged")
    error = decrypt_fails(pair.bob, forged, e2ee.errors.RemoteError)
    assert not isinstance(error, ValueError)
    assert pair.bob.decrypt(genuine) == b"genuine"


def test_bundle_with_invalid_ml_kem_key_is_refused() -> None:
    bad = b"\xff" * MLKEM1024_PUBLIC_KEY_SIZE  # every coefficient 4095 > q
    start_fails(make_bundle(kem=bad, okem=None), e2ee.HandshakeError)
    start_fails(make_bundle(okem=bad), e2ee.HandshakeError)


class _TrustingKemProvider(DeterministicProvider):
    """A provider whose encapsulation checks nothing: it records the key and returns fixed
    bytes of the right sizes (a third-party provider need not validate the key)."""

    def __init__(self) -> None:
        super().__init__("trusting-kem")
        self.encapsulated: list[bytes] = []

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        self.encapsulated.append(public_key)
        return bytes(32), bytes(1568)


def test_invalid_ml_kem_key_is_refused_whatever_the_provider_checks() -> None:
    """[REQ-SEC-03] The bundle's ML-KEM key is validated by start_session itself, before it is
    handed to the provider: with a provider that does no check of its own, an invalid key
    (every coefficient 4095 > q) is still refused and never reaches the provider."""
    bad = b"\xff" * MLKEM1024_PUBLIC_KEY_SIZE
    for bundle in (make_bundle(kem=bad, okem=None), make_bundle(okem=bad)):
        provider = _TrustingKemProvider()
        account = e2ee.Account.generate(provider=provider, now=NOW)
        before = account.to_bytes()
        with pytest.raises(e2ee.HandshakeError):
            account.start_session(bundle, config=X3DH_OK, provider=provider, now=NOW)
        assert provider.encapsulated == []
        assert account.to_bytes() == before
    # Control: a valid key does reach the provider.
    provider = _TrustingKemProvider()
    account = e2ee.Account.generate(provider=provider, now=NOW)
    account.start_session(make_bundle(), provider=provider, now=NOW)
    assert provider.encapsulated == [OKEM_PUBLIC]


# --- 5e. identity keys --------------------------------------------------------------------


def _off_curve_y() -> bytes:
    y = 2
    while _ed_recover_x(y, 0) is not None:
        y += 1
    return y.to_bytes(32, "little")


INVALID_IDENTITY_KEYS = [
    pytest.param(bytes(32), id="y0-order-4"),
    pytest.param(_ed_encode(_IDENTITY), id="neutral"),
    pytest.param(_ed_encode(TORSION8), id="order-8"),
    pytest.param(_P.to_bytes(32, "little"), id="y-equals-p"),
    pytest.param((_P + 1).to_bytes(32, "little"), id="non-canonical-neutral"),
    pytest.param((1 | (1 << 255)).to_bytes(32, "little"), id="neutral-with-sign-bit"),
    pytest.param(_off_curve_y(), id="off-curve"),
    pytest.param(b"\xff" * 32, id="all-ff"),
]


@pytest.mark.parametrize("identity_key", INVALID_IDENTITY_KEYS)
def test_bundle_with_invalid_identity_key_is_refused(identity_key: bytes) -> None:
    _, bundle = _bob_bundle()
    start_fails(replace(bundle, identity_key=identity_key), e2ee.HandshakeError)


def test_mixed_order_identity_key_with_valid_signatures_is_refused() -> None:
    signer = mixed_order_signer(hashlib.sha256(b"mixed").digest())
    bundle = make_bundle(signer)
    # The signatures do verify (strict Ed25519 has no subgroup check on A)...
    primitives.ed25519_verify(
        bundle.identity_key,
        signing.signed_prekey_payload(1, NOW, GOOD_X25519, 2, KEM_PUBLIC),
        bundle.signed_prekey_signature,
    )
    assert bundle.one_time_prekey_signature is not None
    primitives.ed25519_verify(
        bundle.identity_key,
        signing.one_time_prekey_payload(3, OPK_PUBLIC),
        bundle.one_time_prekey_signature,
    )
    # ...yet the key is not of prime order, so it is no identity key.
    error = start_fails(bundle, e2ee.HandshakeError)
    assert not isinstance(error, e2ee.SignatureError)


@pytest.mark.parametrize(
    "identity_key",
    [
        *INVALID_IDENTITY_KEYS,
        pytest.param(mixed_order_signer(b"\x01" * 32).identity_key, id="mixed-order"),
    ],
)
def test_initial_message_with_invalid_identity_key_is_refused(identity_key: bytes) -> None:
    bob, _, message = _first_message()
    accept_fails(bob, rebuild(message, identity_key=identity_key), e2ee.HandshakeError)
    assert bob.accept_session(message, now=NOW)[1] == b"first message"


# --- 5f. signed prekey age -----------------------------------------------------------------


def test_signed_prekey_age_limits() -> None:
    _, bundle = _bob_bundle()  # signed at NOW
    account, provider = alice()
    account.start_session(bundle, provider=provider, now=NOW + MAX_SIGNED_PREKEY_AGE)
    start_fails(bundle, e2ee.HandshakeError, now=NOW + MAX_SIGNED_PREKEY_AGE + 1)
    start_fails(bundle, e2ee.HandshakeError, now=NOW + 10 * MAX_SIGNED_PREKEY_AGE)
    account.start_session(bundle, provider=provider, now=NOW - MAX_SIGNED_PREKEY_FUTURE_SKEW)
    start_fails(bundle, e2ee.HandshakeError, now=NOW - MAX_SIGNED_PREKEY_FUTURE_SKEW - 1)


@pytest.mark.parametrize(
    ("timestamp", "ok"),
    [
        pytest.param(NOW - MAX_SIGNED_PREKEY_AGE - 1, False, id="stale"),
        pytest.param(NOW + MAX_SIGNED_PREKEY_FUTURE_SKEW + 1, False, id="future"),
        pytest.param(2**63 - 1, False, id="far-future"),
        pytest.param(0, False, id="epoch"),
        pytest.param(NOW - MAX_SIGNED_PREKEY_AGE, True, id="oldest-accepted"),
        pytest.param(NOW + MAX_SIGNED_PREKEY_FUTURE_SKEW, True, id="newest-accepted"),
    ],
)
def test_signed_prekey_timestamp_is_signed_and_checked(timestamp: int, ok: bool) -> None:
    bundle = make_bundle(timestamp=timestamp)
    if ok:
        account, provider = alice()
        account.start_session(bundle, provider=provider, now=NOW)
    else:
        error = start_fails(bundle, e2ee.HandshakeError)
        assert not isinstance(error, e2ee.SignatureError)


def test_generated_account_dated_in_the_future_is_refused() -> None:
    provider = DeterministicProvider("future bob")
    bob = e2ee.Account.generate(provider=provider, now=NOW + MAX_SIGNED_PREKEY_FUTURE_SKEW + 1)
    start_fails(bob.prekey_bundle(), e2ee.HandshakeError)


# --- 6. replay of a first message -------------------------------------------------------------


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
@pytest.mark.parametrize("reload", [False, True], ids=["same-object", "reloaded-account"])
def test_replayed_first_message_with_one_time_prekey(post_quantum: bool, reload: bool) -> None:
    bob, _, message = _first_message(post_quantum=post_quantum, one_time=1)
    assert e2ee.peek(message).one_time_prekey_id is not None
    count = bob.one_time_prekey_count()
    _, plaintext = bob.accept_session(message, now=NOW)
    assert plaintext == b"first message"
    assert bob.one_time_prekey_count() == count - 1
    if reload:
        bob = e2ee.Account.from_bytes(bob.to_bytes())
    error = accept_fails(bob, message, e2ee.HandshakeError)
    assert not isinstance(error, e2ee.SignatureError)


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
@pytest.mark.parametrize("reload", [False, True], ids=["same-object", "reloaded-account"])
@pytest.mark.parametrize("how", ["none-generated", "all-handed-out"])
def test_replayed_first_message_without_one_time_prekey(
    post_quantum: bool, reload: bool, how: str
) -> None:
    provider = DeterministicProvider("replay")
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    if how == "all-handed-out":
        bob.generate_one_time_prekeys(2, provider=provider)
        bob.prekey_bundle()
        bob.prekey_bundle()
        assert bob.unpublished_one_time_prekey_count() == 0
    bundle = bob.prekey_bundle()
    assert bundle.one_time_prekey is None
    assert bundle.one_time_kem_prekey is None
    account = e2ee.Account.generate(provider=provider, now=NOW)
    session = account.start_session(bundle, config=X3DH_OK, provider=provider, now=NOW)
    message = session.encrypt(b"no one-time", provider=provider)
    bob_session, plaintext = bob.accept_session(message, provider=provider, now=NOW)
    assert plaintext == b"no one-time"
    if reload:
        bob = e2ee.Account.from_bytes(bob.to_bytes())
    accept_fails(bob, message, e2ee.DuplicateMessageError)
    # A later initial-form message of the same session is a replay of the same handshake too.
    second = session.encrypt(b"second", provider=provider)
    accept_fails(bob, second, e2ee.DuplicateMessageError)
    # It belongs to the session Bob already holds.
    assert bob_session.decrypt(second) == b"second"
    # A new session over the same bundle (a new base key) is still accepted.
    other = account.start_session(bundle, config=X3DH_OK, provider=provider, now=NOW)
    assert bob.accept_session(other.encrypt(b"fresh"), now=NOW)[1] == b"fresh"


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
@pytest.mark.parametrize("reload", [False, True], ids=["same-object", "reloaded-account"])
def test_replay_to_a_replaced_signed_prekey_is_remembered_by_that_prekey(
    post_quantum: bool, reload: bool
) -> None:
    """[REQ-HS-24] The base key is remembered by the signed prekey the message names: a first
    message without one-time prekeys, sent from a bundle whose signed prekey was replaced before
    it arrived (still within the grace period), is accepted once; its replay is then refused
    with DuplicateMessageError, although the current signed prekey never saw it."""
    provider = DeterministicProvider("replay-replaced")
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    bundle = bob.prekey_bundle()
    assert bundle.one_time_prekey is None
    account = e2ee.Account.generate(provider=provider, now=NOW)
    session = account.start_session(bundle, config=X3DH_OK, provider=provider, now=NOW)
    message = session.encrypt(b"to the old prekey", provider=provider)
    bob.rotate_signed_prekey(provider=provider, now=NOW + 60)
    assert bob.prekey_bundle().signed_prekey_id != bundle.signed_prekey_id
    _, plaintext = bob.accept_session(message, provider=provider, now=NOW + 120)
    assert plaintext == b"to the old prekey"
    if reload:
        bob = e2ee.Account.from_bytes(bob.to_bytes())
    accept_fails(bob, message, e2ee.DuplicateMessageError, now=NOW + 180)


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
def test_rotation_without_prekey_ids_refuses_the_message_and_changes_nothing(
    post_quantum: bool,
) -> None:
    """[REQ-HS-22] [REQ-HS-23] [REQ-ERR-05] A first message that would fill the current signed
    prekey's replay memory needs a rotation; when the prekey ids for it are used up, the message
    is refused with the exhausted LocalError and the account is byte-identical: the base key is
    not remembered, so the same message is accepted once ids are available again."""
    provider = DeterministicProvider("rotate-exhausted")
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    # As persisted (state.md section 2): next prekey id (key 4) with one id left, and the
    # current signed prekey (last of key 5) one base key (record element 8) short of full.
    state = codec.decode(bob.to_bytes(), max_size=1 << 24)
    assert isinstance(state, dict)
    state[4] = 2**32 - 1
    state[5][-1][8] = sorted(
        hashlib.sha256(b"seen %d" % i).digest() for i in range(MAX_BASE_KEYS_PER_PREKEY - 1)
    )
    bob = e2ee.Account.from_bytes(codec.encode(state))
    alice = e2ee.Account.generate(provider=provider, now=NOW)
    session = alice.start_session(
        bob.signed_prekey_bundle(), config=X3DH_OK, provider=provider, now=NOW
    )
    message = session.encrypt(b"fills the memory", provider=provider)

    for _ in range(2):  # the second attempt is not taken for a replay
        error = accept_fails(bob, message, e2ee.errors.ExhaustedError)
        assert error.category == "exhausted"
    # With ids available (the state as before, next prekey id lowered) the same message is
    # accepted and the full memory rotates the signed prekey.
    state[4] = 100
    bob = e2ee.Account.from_bytes(codec.encode(state))
    old_id = bob.signed_prekey_bundle().signed_prekey_id
    assert bob.accept_session(message, provider=provider, now=NOW)[1] == b"fills the memory"
    assert bob.signed_prekey_bundle().signed_prekey_id == 100
    assert bob.signed_prekey_bundle().signed_prekey_id != old_id
    accept_fails(bob, message, e2ee.DuplicateMessageError)


def _ciphertext_offset(message: bytes) -> int:
    _, offsets = codec.read_flat_array(message, 10**6)
    return offsets[I_CIPHERTEXT] + 2  # past the byte-string head


@pytest.mark.parametrize(
    ("post_quantum", "where"),
    [
        pytest.param(pq, where, id=f"{'pqxdh' if pq else 'x3dh'}-{where}")
        for pq in (True, False)
        for where in ("ciphertext", "header", "kem_ciphertext", "base_key")
        if pq or where != "kem_ciphertext"
    ],
)
def test_tampered_first_message_keeps_the_one_time_prekey(post_quantum: bool, where: str) -> None:
    bob, _, message = _first_message(post_quantum=post_quantum, one_time=1)
    _, offsets = codec.read_flat_array(message, 10**6)
    index = {
        "ciphertext": I_CIPHERTEXT,
        "header": I_HEADER,
        "kem_ciphertext": I_KEM_CT,
        "base_key": I_BASE_KEY,
    }[where]
    tampered = flip_bit(message, offsets[index] + 5, 3)  # inside the field's bytes
    count = bob.one_time_prekey_count()
    accept_fails(bob, tampered, e2ee.E2EEError)
    assert bob.one_time_prekey_count() == count
    _, plaintext = bob.accept_session(message, now=NOW)
    assert plaintext == b"first message"
    assert bob.one_time_prekey_count() == count - 1


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
def test_filling_a_replaced_signed_prekeys_memory_does_not_rotate(post_quantum: bool) -> None:
    """[REQ-HS-22] [REQ-HS-24] Only a full memory of the *current* signed prekey calls for a
    rotation: a first message that fills the memory of a replaced one (in its grace period) is
    accepted, the current signed prekey stays, and that replaced prekey accepts no further
    first message without a one-time prekey (HandshakeError), while its replay is a
    DuplicateMessageError."""
    provider = DeterministicProvider("fill-replaced")
    bob = e2ee.Account.generate(provider=provider, now=NOW, post_quantum=post_quantum)
    old_bundle = bob.signed_prekey_bundle()
    alice = e2ee.Account.generate(provider=provider, now=NOW)

    def first_message(text: bytes) -> bytes:
        session = alice.start_session(old_bundle, config=X3DH_OK, provider=provider, now=NOW)
        return session.encrypt(text, provider=provider)

    message, another = first_message(b"fills the memory"), first_message(b"one too many")
    bob.rotate_signed_prekey(provider=provider, now=NOW)
    # As persisted (state.md section 2): the replaced signed prekey (first of key 5) one base
    # key (record element 8) short of full.
    state = codec.decode(bob.to_bytes(), max_size=1 << 24)
    assert isinstance(state, dict)
    assert state[5][0][0] == old_bundle.signed_prekey_id
    state[5][0][8] = sorted(
        hashlib.sha256(b"seen %d" % i).digest() for i in range(MAX_BASE_KEYS_PER_PREKEY - 1)
    )
    bob = e2ee.Account.from_bytes(codec.encode(state))
    current = bob.signed_prekey_bundle()
    assert bob.accept_session(message, provider=provider, now=NOW)[1] == b"fills the memory"
    assert bob.signed_prekey_bundle() == current
    accept_fails(bob, message, e2ee.DuplicateMessageError)
    error = accept_fails(bob, another, e2ee.HandshakeError)
    assert not isinstance(error, e2ee.SignatureError)


# --- 7. header-encryption policy ------------------------------------------------------------


@pytest.mark.parametrize("post_quantum", [True, False], ids=["pqxdh", "x3dh"])
def test_responder_requiring_header_encryption_refuses_clear_headers(post_quantum: bool) -> None:
    require = e2ee.SessionConfig(require_header_encryption=True)
    bob, _, clear = _first_message(post_quantum=post_quantum, header_encryption=False)
    assert not e2ee.peek(clear).header_encrypted
    accept_fails(bob, clear, e2ee.HandshakeError, config=require)
    # Flipping the flag on the wire does not help either.
    accept_fails(bob, rebuild(clear, header_encryption=True), e2ee.E2EEError, config=require)
    # Without the policy the same message is fine...
    session, plaintext = bob.accept_session(clear, now=NOW)
    assert plaintext == b"first message"
    assert not session.header_encryption
    # ...and an initiator with header encryption passes the policy.
    bob2, _, sealed = _first_message(post_quantum=post_quantum, seed="sealed")
    session, plaintext = bob2.accept_session(sealed, config=require, now=NOW)
    assert plaintext == b"first message"
    assert session.header_encryption


def test_header_encryption_flag_is_bound_into_the_session_id() -> None:
    """[REQ-HS-26] The initiator's header-encryption choice is element 2 of the transcript:
    two X3DH handshakes with the same identity, bundle and base key that differ only in the
    flag give different session ids (and each responder adopts the flag of its message)."""
    bundle = make_bundle(kem=None, okem=None)
    account, _ = alice()
    ids, base_keys = [], []
    for header_encryption in (True, False):
        provider = DeterministicProvider("same-base-key")
        config = e2ee.SessionConfig(header_encryption=header_encryption, allow_x3dh=True)
        session = account.start_session(bundle, config=config, provider=provider, now=NOW)
        items, _ = codec.read_flat_array(session.encrypt(b"x", provider=provider), 10**6)
        assert items[I_HE] is header_encryption
        ids.append(session.session_id)
        base_keys.append(items[I_BASE_KEY])
    assert base_keys[0] == base_keys[1]
    assert ids[0] != ids[1]
    for header_encryption in (True, False):
        bob, _, message = _first_message(header_encryption=header_encryption, seed="adopt")
        session, _ = bob.accept_session(message, config=e2ee.SessionConfig(), now=NOW)
        assert session.header_encryption is header_encryption


# --- 4. accept_session error paths leave the account byte-identical ------------------------


def test_accept_session_error_paths_leave_the_account_unchanged() -> None:
    bob, session, message = _first_message(one_time=1)
    pair = make_pair()
    normal = pair.alice.encrypt(b"normal")
    cases: list[tuple[bytes, type[e2ee.E2EEError]]] = [
        (normal, e2ee.HandshakeError),
        (b"", e2ee.DecodeError),
        (message[:-1], e2ee.DecodeError),
        (message + b"\x00", e2ee.DecodeError),
        (rebuild(message, signed_prekey_id=999), e2ee.HandshakeError),
        (rebuild(message, one_time_prekey_id=999), e2ee.HandshakeError),
        (rebuild(message, kem_prekey_id=999), e2ee.HandshakeError),
        (rebuild(message, session_id=bytes(16)), e2ee.AuthenticationError),
        (rebuild(message, ciphertext=bytes(32)), e2ee.AuthenticationError),
        (flip_bit(message, 1), e2ee.DecodeError),  # version 1 -> 0
    ]
    for wire, expected in cases:
        accept_fails(bob, wire, expected)
    assert bob.accept_session(message, now=NOW)[1] == b"first message"
    # After the genuine message, a replay and a tampered copy change nothing either.
    accept_fails(bob, message, e2ee.HandshakeError)
    accept_fails(bob, flip_bit(message, _ciphertext_offset(message)), e2ee.E2EEError)
    _ = session
