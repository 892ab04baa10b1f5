"""A decoded CBOR ``true`` is not the integer 1, though Python's ``True == 1``.

Every structure whose version or type field the specification gives as an integer literal
(spec/client.md, spec/state.md) must refuse a boolean there: otherwise the same structure has
a second encoding, and the "exactly one valid encoding" promise of the wire format breaks.
Each case below builds a valid structure, checks that it loads, replaces its version (the
integer 1) by ``true``, re-encodes it canonically (re-signing or re-sealing whatever covers
it, so that only the boolean is wrong) and checks the typed refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from e2ee import Account, state
from e2ee.client.devices import LinkApproval, LinkRequest
from e2ee.client.envelope import Content, Envelope
from e2ee.crypto import primitives
from e2ee.errors import DecodeError, DeviceListError, LinkError, StateError
from e2ee.identity import SignedDeviceList, UserIdentity
from e2ee.limits import SIG_LABEL_DEVICE_LIST
from e2ee.safety import safety_number
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec

PROVIDER = DeterministicProvider(b"strict-integers")
IDENTITY = UserIdentity.generate(provider=PROVIDER)
DEVICE_KEY = bytes(range(32))
STATE_KEY = b"k" * 32


def version_true(data: bytes) -> bytes:
    """``data`` (a canonical CBOR map) with key 0, the version 1, replaced by ``true``."""
    value = codec.decode(data, max_size=1 << 20)
    assert codec.is_int(value[0], 1)
    value[0] = True
    out = codec.encode(value)
    assert out != data
    assert out[:3] == data[:1] + b"\x00\xf5"  # the only change: 0x01 -> 0xf5 after key 0
    return out


def sender_device_true(data: bytes) -> bytes:
    """Content (version 2, which no boolean can be mistaken for) with its sender device id, 1,
    replaced by ``true``."""
    value = codec.decode(data, max_size=1 << 20)
    assert codec.is_int(value[6], 1)
    value[6] = True
    return codec.encode(value)


def signed_list() -> bytes:
    return IDENTITY.sign_device_list("alice", 1, {1: DEVICE_KEY}).to_bytes()


def signed_list_inner_true() -> bytes:
    """A device list signed by its own user key whose *signed* version field is ``true``."""
    outer = codec.decode(signed_list(), max_size=1 << 16)
    inner = version_true(outer[2])
    signature = primitives.ed25519_sign(IDENTITY._seed, SIG_LABEL_DEVICE_LIST + inner)
    return codec.encode({0: outer[0], 1: outer[1], 2: inner, 3: signature})


def link_request() -> LinkRequest:
    return LinkRequest.make("alice", DEVICE_KEY, b"n" * 16, "ABCDE-FGHIJ")


def sealed_account() -> bytes:
    return Account.generate(provider=PROVIDER).to_bytes(key=STATE_KEY, provider=PROVIDER)


def sealed_account_inner_true() -> bytes:
    """A sealed account state whose *encrypted* layout version is ``true``, sealed again under
    the right key with the right associated data."""
    envelope = codec.decode(sealed_account(), max_size=1 << 20)
    kind, version, object_id, nonce, sealed = (envelope[i] for i in range(2, 7))
    subkey = state._subkey(STATE_KEY)
    ad = state._sealed_ad(kind, version, object_id)
    body = primitives.xchacha20poly1305_decrypt(subkey, nonce, sealed, ad)
    envelope[6] = primitives.xchacha20poly1305_encrypt(subkey, nonce, version_true(body), ad)
    return codec.encode(envelope)


def load_account(data: bytes) -> object:
    return Account.from_bytes(data, key=STATE_KEY)


def scan(payload: bytes) -> bool:
    number = safety_number(IDENTITY.public_key, "alice", DEVICE_KEY, "bob")
    return number.matches_scanned(payload)


def scanned_payload() -> bytes:
    return safety_number(DEVICE_KEY, "bob", IDENTITY.public_key, "alice").scannable


# name -> (valid bytes, bytes with the boolean, loader, expected error)
Case = tuple[Callable[[], bytes], Callable[[], bytes], Callable[[bytes], Any], type[Exception]]

CASES: dict[str, Case] = {
    "envelope": (
        lambda: Envelope("alice", 1, "bob", 2, b"m" * 16, b"payload").to_bytes(),
        lambda: version_true(Envelope("alice", 1, "bob", 2, b"m" * 16, b"payload").to_bytes()),
        Envelope.from_bytes,
        DecodeError,
    ),
    "content": (
        lambda: Content(b"m" * 16, "bob", b"hi", "alice", 1).to_bytes(),
        lambda: sender_device_true(Content(b"m" * 16, "bob", b"hi", "alice", 1).to_bytes()),
        Content.from_bytes,
        DecodeError,
    ),
    "signed device list": (
        signed_list,
        lambda: version_true(signed_list()),
        SignedDeviceList.from_bytes,
        DeviceListError,
    ),
    "device list (signed part)": (
        signed_list,
        signed_list_inner_true,
        SignedDeviceList.from_bytes,
        DeviceListError,
    ),
    "safety-number payload": (
        scanned_payload,
        lambda: version_true(scanned_payload()),
        scan,
        DecodeError,
    ),
    "link request": (
        lambda: link_request().to_bytes(),
        lambda: version_true(link_request().to_bytes()),
        LinkRequest.from_bytes,
        LinkError,
    ),
    "link approval": (
        lambda: LinkApproval.make(link_request(), "ABCDE-FGHIJ", 2, signed_list()).to_bytes(),
        lambda: version_true(
            LinkApproval.make(link_request(), "ABCDE-FGHIJ", 2, signed_list()).to_bytes()
        ),
        LinkApproval.from_bytes,
        LinkError,
    ),
    "sealed state envelope": (
        sealed_account,
        lambda: version_true(sealed_account()),
        load_account,
        StateError,
    ),
    "sealed state (encrypted part)": (
        sealed_account,
        sealed_account_inner_true,
        load_account,
        StateError,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_boolean_version_is_refused(name: str) -> None:
    valid, with_true, loader, error = CASES[name]
    loader(valid())  # the structure as built is accepted
    with pytest.raises(error):
        loader(with_true())


@pytest.mark.parametrize(
    ("value", "expected", "result"),
    [
        (1, 1, True),
        (True, 1, False),
        (0, 0, True),
        (False, 0, False),
        (2, 1, False),
        (None, 0, False),
    ],
)
def test_is_int_admits_only_the_integer(value: object, expected: int, result: bool) -> None:
    assert codec.is_int(value, expected) is result
