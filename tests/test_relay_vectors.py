"""test_vectors/relay_signatures.json: its expected bytes are those of the specification,
rebuilt here with cbor2 and libsodium (not with e2ee's codec, relay or crypto, nor with the
generator's reference code), and ``e2ee vectors verify`` catches an implementation that skips
any of the checks the file tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from nacl import bindings
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from e2ee.crypto import primitives
from e2ee.errors import RelayBadRequestError
from e2ee.handshake import signing
from e2ee.relay import api, tickets
from e2ee.vectors.verify import verify_file
from tests.conftest import PROJECT_ROOT

PATH = PROJECT_ROOT / "test_vectors" / "relay_signatures.json"
# The labels as spec/primitives.md writes them (not imported from e2ee.limits).
TICKET_LABEL = b"e2ee/v1/sig/registration-ticket\x00"
LIST_LABEL = b"e2ee/v1/sig/device-list\x00"
LOGIN_LABEL = b"e2ee/v1/sig/relay-login\x00"


def _data() -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(PATH.read_text(encoding="utf-8"))
    return data


def _group(kind: str) -> dict[str, Any]:
    return next(g for g in _data()["testGroups"] if g["type"] == kind)


def _valid(kind: str) -> list[dict[str, Any]]:
    return [t for t in _group(kind)["tests"] if t["result"] == "valid"]


def _sign(seed: bytes, message: bytes) -> bytes:
    signed: bytes = bindings.crypto_sign(message, bindings.crypto_sign_seed_keypair(seed)[1])
    return signed[:64]


def _public(seed: bytes) -> bytes:
    public: bytes = bindings.crypto_sign_seed_keypair(seed)[0]
    return public


def _canonical(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def test_the_file_has_each_kind_of_case() -> None:
    data = _data()
    kinds = {g["type"]: g for g in data["testGroups"]}
    assert set(kinds) == {"RegistrationTicketVerify", "DeviceListVerify", "RelayLoginSignature"}
    for group in kinds.values():
        results = {t["result"] for t in group["tests"]}
        assert results == {"valid", "invalid"}
    assert bytes.fromhex(kinds["RegistrationTicketVerify"]["label"]) == TICKET_LABEL
    assert bytes.fromhex(kinds["DeviceListVerify"]["label"]) == LIST_LABEL
    assert bytes.fromhex(kinds["RelayLoginSignature"]["label"]) == LOGIN_LABEL


def test_valid_tickets_are_the_specified_bytes() -> None:
    """[REQ-RL-38] spec/relay.md section 4.1, with cbor2 and libsodium."""
    group = _group("RegistrationTicketVerify")
    seed = bytes.fromhex(group["authoritySeed"])
    assert _public(seed).hex() == group["authorityKey"]
    assert group["maxLifetime"] == 24 * 3600
    assert group["clockSkew"] == 300
    for test in _valid("RegistrationTicketVerify"):
        f = test["fields"]
        inner = _canonical(
            {
                0: 1,
                1: 38,
                2: f["origin"].encode(),
                3: f["userId"].encode(),
                4: bytes.fromhex(f["userKey"]),
                5: f["issued"],
                6: f["expires"],
            }
        )
        outer = _canonical({0: 1, 1: 39, 2: inner, 3: _sign(seed, TICKET_LABEL + inner)})
        assert outer.hex() == test["ticket"], test["comment"]
        assert len(outer) <= 1024
        assert f["issued"] - 300 <= test["now"] < f["expires"]
        assert f["expires"] - f["issued"] <= group["maxLifetime"]
        assert (test["relayOrigin"], test["userId"], test["userKey"]) == (
            f["origin"],
            f["userId"],
            f["userKey"],
        )


def test_valid_device_lists_are_the_specified_bytes() -> None:
    """[REQ-CL-13] spec/client.md section 4, with cbor2 and libsodium."""
    group = _group("DeviceListVerify")
    seed = bytes.fromhex(group["userSeed"])
    assert _public(seed).hex() == group["userKey"]
    for test in _valid("DeviceListVerify"):
        f = test["fields"]
        inner = _canonical(
            {
                0: 1,
                1: 32,
                2: f["userId"].encode(),
                3: bytes.fromhex(f["userKey"]),
                4: f["counter"],
                5: [[d, bytes.fromhex(k)] for d, k in f["devices"]],
            }
        )
        outer = _canonical({0: 1, 1: 33, 2: inner, 3: _sign(seed, LIST_LABEL + inner)})
        assert outer.hex() == test["signedList"], test["comment"]


def test_login_payloads_and_signatures_are_the_specified_bytes() -> None:
    """[REQ-RL-01] spec/relay.md section 3: label || CBOR([origin, challenge, user, device]);
    every invalid case's signature fails libsodium's verification of the relay's payload."""
    group = _group("RelayLoginSignature")
    seed = bytes.fromhex(group["deviceSeed"])
    key = VerifyKey(_public(seed))
    assert key.encode().hex() == group["deviceKey"]
    for test in _group("RelayLoginSignature")["tests"]:
        payload = LOGIN_LABEL + _canonical(
            [
                test["relayOrigin"].encode(),
                bytes.fromhex(test["challenge"]),
                test["userId"].encode(),
                test["deviceId"],
            ]
        )
        assert payload.hex() == test["payload"], test["comment"]
        signature = bytes.fromhex(test["signature"])
        if test["result"] == "valid":
            assert signature == _sign(seed, payload)
            key.verify(payload, signature)
        else:
            with pytest.raises(BadSignatureError):
                key.verify(payload, signature)


def test_tickets_refused_for_what_they_say_are_well_formed() -> None:
    """A relay_forbidden ticket is canonical CBOR of the specified layout (so the case tests
    its signature or content, not its form); a relay_bad_request one is not, or says
    something its layout forbids."""
    group = _group("RegistrationTicketVerify")
    for test in group["tests"]:
        if test["result"] == "valid" or test["error"] != "relay_forbidden":
            continue
        raw = bytes.fromhex(test["ticket"])
        outer = cbor2.loads(raw)
        assert _canonical(outer) == raw, test["comment"]
        assert set(outer) == {0, 1, 2, 3}
        assert outer[0] == 1
        assert outer[1] == 39
        inner = cbor2.loads(outer[2])
        assert _canonical(inner) == outer[2]
        assert set(inner) == set(range(7))


# --- mutations: verify fails when the implementation skips a check -----------------------------


def _failing(monkeypatch: pytest.MonkeyPatch, mutate: Callable[[pytest.MonkeyPatch], None]) -> str:
    raw = PATH.read_bytes()
    assert verify_file(PATH, hashlib.sha256(raw).hexdigest()).failed == 0
    mutate(monkeypatch)
    result = verify_file(PATH, hashlib.sha256(raw).hexdigest())
    assert result.failed > 0
    return "\n".join(result.messages)


def _check_ticket_with(**override: Any) -> Callable[[pytest.MonkeyPatch], None]:
    original = tickets.check_ticket

    def mutate(monkeypatch: pytest.MonkeyPatch) -> None:
        def lax(ticket: tickets.RegistrationTicket, **kwargs: Any) -> None:
            values = {name: getattr(ticket, attr) for name, attr in override.items()}
            original(ticket, **{**kwargs, **values})

        monkeypatch.setattr(tickets, "check_ticket", lax)

    return mutate


def _no_signature_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(primitives, "ed25519_verify", lambda *args: None)


def _no_list_signature_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "verify", lambda *args: None)


def _login_without_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    original = api.login_payload
    monkeypatch.setattr(api, "login_payload", lambda o, c, u, d: original("", c, u, d))


def _ticket_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    original = tickets.read_ticket

    def recoded(data: bytes, key: bytes) -> tickets.RegistrationTicket:
        try:
            return original(data, key)
        except RelayBadRequestError:
            raise RelayBadRequestError("malformed") from None

    monkeypatch.setattr(tickets, "read_ticket", recoded)


def _issuer_without_label(monkeypatch: pytest.MonkeyPatch) -> None:
    original = primitives.ed25519_sign
    monkeypatch.setattr(
        primitives,
        "ed25519_sign",
        lambda seed, data: original(seed, data[len(TICKET_LABEL) :]),
    )


@pytest.mark.parametrize(
    ("mutate", "caught"),
    [
        (_no_signature_check, "(signed by another authority): Mismatch: accepted"),
        (_check_ticket_with(origin="origin"), "a genuine ticket for another relay"),
        (_check_ticket_with(user_id="user_id"), "a genuine ticket, sent with bob's list"),
        (_check_ticket_with(user_key="user_key"), "sent with a list of another user key"),
        (_check_ticket_with(now="issued"), "relay time equal to expires"),
        (_check_ticket_with(max_lifetime="expires"), "maximum lifetime plus one second"),
        (_ticket_codes, "code: expected bad_ticket, got bad_request"),
        (_issuer_without_label, "issued ticket: expected"),
        (_no_list_signature_check, "signed by another key than the user key it names"),
        (_no_list_signature_check, "signed for a phishing relay's origin"),
        (_login_without_origin, "payload: expected"),
    ],
)
def test_verify_catches_a_skipped_check(
    monkeypatch: pytest.MonkeyPatch, mutate: Callable[[pytest.MonkeyPatch], None], caught: str
) -> None:
    assert caught in _failing(monkeypatch, mutate)


def test_a_flipped_expected_ticket_byte_is_caught(tmp_path: Path) -> None:
    text = PATH.read_text(encoding="utf-8")
    test = _valid("RegistrationTicketVerify")[0]
    flipped = test["ticket"][:-1] + ("0" if test["ticket"][-1] != "0" else "1")
    raw = text.replace(test["ticket"], flipped, 1).encode()
    (tmp_path / PATH.name).write_bytes(raw)
    result = verify_file(tmp_path / PATH.name, hashlib.sha256(raw).hexdigest())
    assert result.failed == 1
    assert f"tcId {test['tcId']} " in result.messages[0]
