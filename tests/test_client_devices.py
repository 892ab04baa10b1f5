"""Signed device lists (e2ee.identity), linking codes and the prekey lifecycle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from e2ee.client import Client, PrekeyPolicy
from e2ee.client.devices import LinkApproval, LinkRequest, new_code, normalize_code
from e2ee.errors import DeviceListError, LinkError, StateError
from e2ee.identity import SignedDeviceList, UserIdentity
from e2ee.testing import DeterministicProvider
from e2ee.wire import codec

PROVIDER = DeterministicProvider("devices")
USER = UserIdentity.generate(provider=PROVIDER)
K1, K2 = bytes([1]) * 32, bytes([2]) * 32


def test_device_list_round_trip_and_signature() -> None:
    signed = USER.sign_device_list("alice", 3, {2: K2, 1: K1})
    parsed = SignedDeviceList.from_bytes(signed.to_bytes())
    assert parsed.device_list.devices == ((1, K1), (2, K2))
    assert parsed.device_list.counter == 3
    assert parsed.device_list.user_key == USER.public_key
    assert "alice" in repr(parsed.device_list)
    assert K1.hex() not in repr(parsed.device_list)


def test_a_device_not_signed_by_the_user_key_never_verifies() -> None:
    signed = USER.sign_device_list("alice", 1, {1: K1})
    added = codec.encode(
        {0: 1, 1: 32, 2: b"alice", 3: USER.public_key, 4: 1, 5: [[1, K1], [9, K2]]}
    )
    forged = codec.encode({0: 1, 1: 33, 2: added, 3: signed.signature})
    with pytest.raises(DeviceListError, match="signature"):
        SignedDeviceList.from_bytes(forged)


@pytest.mark.parametrize(
    "inner",
    [
        {0: 1, 1: 32, 2: b"alice", 3: bytes(32), 4: 1, 5: []},
        {0: 1, 1: 32, 2: b"alice", 3: bytes(32), 4: 1, 5: [[2, K2], [1, K1]]},
        {0: 1, 1: 32, 2: b"alice", 3: bytes(32), 4: 1, 5: [[1, K1], [2, K1]]},
        {0: 2, 1: 32, 2: b"alice", 3: bytes(32), 4: 1, 5: [[1, K1]]},
        {0: 1, 1: 32, 2: b"\xff", 3: bytes(32), 4: 1, 5: [[1, K1]]},
    ],
)
def test_malformed_lists_are_device_list_errors(inner: dict[int, object]) -> None:
    data = codec.encode({0: 1, 1: 33, 2: codec.encode(inner), 3: bytes(64)})
    with pytest.raises(DeviceListError):
        SignedDeviceList.from_bytes(data)


@pytest.mark.parametrize("data", [b"", b"\x00", bytes(100), b"\xa0"])
def test_garbage_is_a_device_list_error(data: bytes) -> None:
    with pytest.raises(DeviceListError):
        SignedDeviceList.from_bytes(data)


def test_user_identity_state_round_trip_sealed() -> None:
    key = bytes(32)
    data = USER.to_bytes(key=key, provider=PROVIDER)
    assert UserIdentity.from_bytes(data, key=key).public_key == USER.public_key
    with pytest.raises(StateError):
        UserIdentity.from_bytes(data, key=bytes([1]) * 32)
    assert USER.public_key.hex() in repr(USER)


def test_link_code_format_and_tamper() -> None:
    code = new_code(bytes(range(7)))
    assert len(code) == 11
    assert code[5] == "-"
    assert normalize_code(code.lower()) == normalize_code(code)
    request = LinkRequest.make("alice", K1, bytes(16), code)
    request.check(code.lower().replace("-", " "))
    with pytest.raises(LinkError):
        LinkRequest.from_bytes(request.to_bytes()[:-1])
    tampered = LinkRequest("alice", K2, request.nonce, request.tag)
    with pytest.raises(LinkError):
        tampered.check(code)


def _request_fields(nonce: bytes = bytes(16), tag: bytes = bytes(32)) -> dict[int, object]:
    return {0: 1, 1: 36, 2: b"alice", 3: K1, 4: nonce, 5: tag}


@pytest.mark.parametrize(
    "fields",
    [
        {4: b""},  # nonce: spec/client.md section 5 fixes 16 bytes
        {4: bytes(3)},
        {4: bytes(15)},
        {4: bytes(17)},
        {4: bytes(5000)},
        {5: b""},  # tag: HMAC-SHA-256, 32 bytes
        {5: bytes(16)},
        {5: bytes(31)},
        {5: bytes(33)},
        {2: b""},  # user id: 1..256 bytes
        {2: b"a" * 257},
        {3: bytes(31)},  # device identity key: 32 bytes
    ],
)
def test_link_request_with_a_field_of_another_length_is_malformed(
    fields: dict[int, object],
) -> None:
    LinkRequest.from_bytes(codec.encode(_request_fields()))  # the same layout, lengths right
    with pytest.raises(LinkError, match="malformed"):
        LinkRequest.from_bytes(codec.encode(_request_fields() | fields))


@pytest.mark.parametrize("nonce_size", [0, 3, 15, 17, 5000])
def test_approve_link_refuses_a_request_with_a_nonce_of_another_length(
    tmp_path: Path, nonce_size: int
) -> None:
    """REQ-CL-21: the tag matches the code (it is made with it), but the nonce is not the 16
    bytes of spec/client.md section 5, so the request is malformed: refused, nothing stored."""
    alice = Client.create(tmp_path / "alice.sqlite", "alice")
    new = Client.create_linked(tmp_path / "new.sqlite", "alice")
    try:
        before = alice.device_list()
        alice.take_events()
        request = LinkRequest.make("alice", new.device_key, bytes(nonce_size), new.link_code)
        with pytest.raises(LinkError, match="malformed"):
            alice.approve_link(request.to_bytes(), new.link_code)
        assert alice.device_list() == before
        assert alice.take_events() == []
        # the same request with a 16-byte nonce is approved
        good = LinkRequest.make("alice", new.device_key, bytes(16), new.link_code)
        assert alice.approve_link(good.to_bytes(), new.link_code)
        assert alice.device_list() != before
    finally:
        alice.close()
        new.close()


def _approval_fields() -> dict[int, object]:
    signed = USER.sign_device_list("alice", 2, {1: K1, 2: K2}).to_bytes()
    return {0: 1, 1: 37, 2: 2, 3: signed, 4: bytes(32)}


@pytest.mark.parametrize(
    "fields",
    [
        {4: b""},  # tag': HMAC-SHA-256, 32 bytes
        {4: bytes(16)},
        {4: bytes(31)},
        {4: bytes(33)},
        {2: -1},  # device id: 0..2^31-1, as in a device list
        {2: 2**31},
        {2: 2**64 - 1},
        {3: b""},  # signed device list: 1..8192 bytes
        {3: bytes(8193)},
    ],
)
def test_link_approval_with_a_field_of_another_length_or_range_is_malformed(
    fields: dict[int, object],
) -> None:
    LinkApproval.from_bytes(codec.encode(_approval_fields()))  # the same layout, in range
    with pytest.raises(LinkError, match="malformed"):
        LinkApproval.from_bytes(codec.encode(_approval_fields() | fields))


def test_prekey_lifecycle(tmp_path: Path) -> None:
    policy = PrekeyPolicy(one_time_target=6, refill_below=3, rotate_after=3600)
    now = 1_800_000_000
    client = Client.create(tmp_path / "a.sqlite", "alice", prekey_policy=policy, now=now)
    upload = client.prekeys_to_upload(now=now)
    assert len(upload.one_time) == 6
    assert len(upload.one_time_kem) == 6
    signed_before = upload.signed_bundle
    client.mark_uploaded(upload)
    assert client.prekey_counts() == (0, 0)
    # Nothing unpublished: refill to the target; nothing rotated yet.
    again = client.prekeys_to_upload(now=now + 10)
    assert len(again.one_time) == 6
    assert again.signed_bundle == signed_before
    # Not marked uploaded: the same keys are offered again (a crash before the ack is harmless).
    assert client.prekeys_to_upload(now=now + 20).prekey_ids == again.prekey_ids
    client.mark_uploaded(again)
    rotated = client.prekeys_to_upload(now=now + 3600)
    assert rotated.signed_bundle != signed_before
    with pytest.raises(ValueError, match="refill_below"):
        PrekeyPolicy(one_time_target=2, refill_below=3)


def test_a_low_ml_kem_supply_alone_triggers_a_refill(tmp_path: Path) -> None:
    """[REQ-CL-34] The refill looks at the smaller of the two unpublished supplies: with six
    unpublished EC prekeys but no unpublished ML-KEM prekey (only the ML-KEM ones were
    published), u = 0 is below refill_below, so target - u = 6 more of each kind are
    generated and offered beside the EC keys still waiting."""
    policy = PrekeyPolicy(one_time_target=6, refill_below=3, rotate_after=3600)
    now = 1_800_000_000
    client = Client.create(tmp_path / "a.sqlite", "alice", prekey_policy=policy, now=now)
    first = client.prekeys_to_upload(now=now)
    assert (len(first.one_time), len(first.one_time_kem)) == (6, 6)
    client.mark_uploaded(dataclasses.replace(first, one_time=()))
    assert client.prekey_counts() == (6, 0)
    refill = client.prekeys_to_upload(now=now + 10)
    assert (len(refill.one_time), len(refill.one_time_kem)) == (12, 6)
    waiting = {i for i, _, _ in first.one_time}
    assert waiting < {i for i, _, _ in refill.one_time}  # the unpublished EC keys are kept
    assert not set(first.prekey_ids) & {i for i, _, _ in refill.one_time_kem}  # new ML-KEM keys
    assert client.prekey_counts() == (12, 6)


def test_corrupt_event_record_is_a_state_error() -> None:
    from e2ee.client.events import Event

    with pytest.raises(StateError):
        Event.from_bytes(b"\x83\x01\x02\x03")
    event = Event("session_new", "bob", 1)
    assert Event.from_bytes(event.to_bytes()) == event
    for device in (True, b"1", [1]):  # the device id is an integer or null, nothing else
        with pytest.raises(StateError):
            Event.from_bytes(codec.encode([b"session_new", b"bob", device, b""]))
    assert Event.from_bytes(codec.encode([b"session_new", b"bob", None, b""])).device_id is None
