"""``e2ee conformance serve``: e2ee itself as an implementation under the conformance protocol.

Reads one JSON request per line on stdin and writes one JSON response per line on stdout
(spec/conformance.md). Every operation calls e2ee's own functions; scenario operations run the
public API (``Account``, ``Session``, ``PreKeyBundle``) with a provider that hands out exactly
the random values and ML-KEM encapsulations listed in the request
(:class:`e2ee.vectors.providers.LabelledReplay`) and must consume all of them.

This is also the template for an adapter in another language: one function per operation,
inputs and outputs named as in the vectors.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import e2ee
from e2ee.account import Account
from e2ee.config import SessionConfig
from e2ee.conformance.protocol import (
    AREA_OPS,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    STATE_CAPABILITY,
    encode_line,
)
from e2ee.crypto import primitives
from e2ee.errors import E2EEError, RelayError
from e2ee.handshake import pqxdh, signing
from e2ee.identity import SignedDeviceList, UserIdentity
from e2ee.ratchet import chains
from e2ee.relay import api as relay_api
from e2ee.relay import tickets
from e2ee.session import Session
from e2ee.vectors.common import (
    BUNDLE_FIELD_ATTRIBUTES,
    capture_handshake,
    ratchet_snapshot,
    sending_message_key,
)
from e2ee.vectors.providers import LabelledReplay, ReplayError
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle, message_prefix, parse_message

JSON = dict[str, Any]


class RequestError(Exception):
    """A request the adapter cannot process; answered with ``category`` (a protocol error)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


def _hex(data: bytes) -> str:
    return data.hex()


def _bytes(request: JSON, name: str) -> bytes:
    value = request.get(name)
    if not isinstance(value, str):
        raise RequestError("bad_request", f"{name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RequestError("bad_request", f"{name!r} is not hex") from None


def _opt_bytes(request: JSON, name: str) -> bytes | None:
    return None if request.get(name) is None else _bytes(request, name)


def _int(request: JSON, name: str) -> int:
    value = request.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("bad_request", f"{name!r} must be an integer")
    return value


def _opt_int(request: JSON, name: str) -> int | None:
    return None if request.get(name) is None else _int(request, name)


def _str(request: JSON, name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str):
        raise RequestError("bad_request", f"{name!r} must be a string")
    return value


def _bool(request: JSON, name: str) -> bool:
    value = request.get(name)
    if not isinstance(value, bool):
        raise RequestError("bad_request", f"{name!r} must be a boolean")
    return value


def _object(request: JSON, name: str) -> JSON:
    value = request.get(name)
    if not isinstance(value, dict):
        raise RequestError("bad_request", f"{name!r} must be an object")
    return value


def _party(request: JSON) -> str:
    value = request.get("party")
    if not isinstance(value, str):
        raise RequestError("bad_request", "'party' must be a string")
    return value


# --- stateless operations ---------------------------------------------------------------------


def _x25519(request: JSON) -> JSON:
    shared = primitives.x25519(_bytes(request, "private"), _bytes(request, "public"))
    return {"shared": _hex(shared)}


def _x25519_public_key(request: JSON) -> JSON:
    return {"public": _hex(primitives.x25519_public_key(_bytes(request, "private")))}


def _identity_key_from_seed(request: JSON) -> JSON:
    seed = _bytes(request, "seed")
    identity = primitives.ed25519_public_key(seed)
    private = primitives.ed25519_seed_to_x25519(seed)
    return {
        "identityKey": _hex(identity),
        "x25519Private": _hex(private),
        "x25519Public": _hex(primitives.x25519_public_key(private)),
    }


def _identity_key_to_x25519(request: JSON) -> JSON:
    return {"x25519Public": _hex(pqxdh.check_identity_key(_bytes(request, "identityKey")))}


def _bundle_signature_payload(request: JSON) -> JSON:
    purpose = request.get("purpose")
    fields = _object(request, "fields")
    if purpose == "signed-prekey":
        payload = signing.signed_prekey_payload(
            _int(fields, "prekeyId"),
            _int(fields, "timestamp"),
            _bytes(fields, "publicKey"),
            _opt_int(fields, "kemPrekeyId"),
            _opt_bytes(fields, "kemPublicKey"),
        )
    elif purpose == "one-time-prekey":
        payload = signing.one_time_prekey_payload(
            _int(fields, "prekeyId"), _bytes(fields, "publicKey")
        )
    elif purpose == "one-time-kem-prekey":
        payload = signing.one_time_kem_prekey_payload(
            _int(fields, "prekeyId"), _bytes(fields, "kemPublicKey")
        )
    else:
        raise RequestError("bad_request", f"unknown purpose {purpose!r}")
    return {"payload": _hex(payload)}


def _verify_signature(request: JSON) -> JSON:
    signing.verify(
        _bytes(request, "identityKey"), _bytes(request, "payload"), _bytes(request, "signature")
    )
    return {}


def _hkdf_sha256(request: JSON) -> JSON:
    okm = primitives.hkdf_sha256(
        _bytes(request, "salt"),
        _bytes(request, "ikm"),
        _bytes(request, "info"),
        _int(request, "size"),
    )
    return {"okm": _hex(okm)}


def _message_key_expand(request: JSON) -> JSON:
    enc, auth, iv = chains._expand(_bytes(request, "messageKey"))
    return {"encKey": _hex(enc), "authKey": _hex(auth), "iv": _hex(iv)}


def _message_encrypt(request: JSON) -> JSON:
    ciphertext = chains.encrypt(
        _bytes(request, "messageKey"), _bytes(request, "plaintext"), _bytes(request, "ad")
    )
    return {"ciphertext": _hex(ciphertext)}


def _message_decrypt(request: JSON) -> JSON:
    plaintext = chains.decrypt(
        _bytes(request, "messageKey"), _bytes(request, "ciphertext"), _bytes(request, "ad")
    )
    return {"plaintext": _hex(plaintext)}


def _header_seal(request: JSON) -> JSON:
    sealed = primitives.xchacha20poly1305_encrypt(
        _bytes(request, "key"),
        _bytes(request, "nonce"),
        _bytes(request, "header"),
        _bytes(request, "ad"),
    )
    return {"sealed": _hex(sealed)}


def _header_open(request: JSON) -> JSON:
    header = primitives.xchacha20poly1305_decrypt(
        _bytes(request, "key"),
        _bytes(request, "nonce"),
        _bytes(request, "sealed"),
        _bytes(request, "ad"),
    )
    return {"header": _hex(header)}


def _mlkem_public_key(request: JSON) -> JSON:
    return {"encapsulationKey": _hex(primitives.mlkem1024_public_key(_bytes(request, "seed")))}


def _mlkem_decapsulate(request: JSON) -> JSON:
    shared = primitives.mlkem1024_decapsulate(
        _bytes(request, "seed"), _bytes(request, "ciphertext")
    )
    return {"sharedSecret": _hex(shared)}


def _mlkem_check_encapsulation_key(request: JSON) -> JSON:
    primitives.mlkem1024_check_public_key(_bytes(request, "encapsulationKey"))
    return {}


def _kdf_rk(request: JSON) -> JSON:
    root, chain = chains.kdf_rk(_bytes(request, "rootKey"), _bytes(request, "dhOutput"))
    return {"newRootKey": _hex(root), "chainKey": _hex(chain)}


def _kdf_rk_he(request: JSON) -> JSON:
    root, chain, header = chains.kdf_rk_he(_bytes(request, "rootKey"), _bytes(request, "dhOutput"))
    return {"newRootKey": _hex(root), "chainKey": _hex(chain), "nextHeaderKey": _hex(header)}


def _kdf_ck(request: JSON) -> JSON:
    next_chain_key, message_key = chains.kdf_ck(_bytes(request, "chainKey"))
    return {"nextChainKey": _hex(next_chain_key), "messageKey": _hex(message_key)}


def _handshake_derive(request: JSON) -> JSON:
    t = _object(request, "transcript")
    transcript = pqxdh.Transcript(
        initiator_identity_key=_bytes(t, "initiatorIdentityKey"),
        responder_identity_key=_bytes(t, "responderIdentityKey"),
        signed_prekey_id=_int(t, "signedPrekeyId"),
        signed_prekey=_bytes(t, "signedPrekey"),
        signed_prekey_timestamp=_int(t, "signedPrekeyTimestamp"),
        one_time_prekey_id=_opt_int(t, "oneTimePrekeyId"),
        one_time_prekey=_opt_bytes(t, "oneTimePrekey"),
        kem_prekey_id=_opt_int(t, "kemPrekeyId"),
        kem_prekey=_opt_bytes(t, "kemPrekey"),
        kem_ciphertext=_opt_bytes(t, "kemCiphertext"),
        base_key=_bytes(t, "baseKey"),
        header_encryption=_bool(t, "headerEncryption"),
    )
    dh_outputs = request.get("dhOutputs")
    if not isinstance(dh_outputs, list):
        raise RequestError("bad_request", "'dhOutputs' must be a list of hex strings")
    secrets = pqxdh.derive(
        transcript,
        [_bytes({"dhOutputs[]": d}, "dhOutputs[]") for d in dh_outputs],
        _opt_bytes(request, "kemSharedSecret"),
    )
    return {
        "transcriptHash": _hex(transcript.digest()),
        "rootKey": _hex(secrets.root_key),
        "headerKey": _hex(secrets.header_key),
        "nextHeaderKey": _hex(secrets.next_header_key),
        "sessionId": _hex(secrets.session_id),
        "associatedData": _hex(secrets.associated_data),
    }


def _json_value(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else value


def _decode_bundle(request: JSON) -> JSON:
    bundle = PreKeyBundle.from_bytes(_bytes(request, "bundle"))
    return {
        "fields": {
            name: _json_value(getattr(bundle, attr))
            for name, attr in BUNDLE_FIELD_ATTRIBUTES.items()
        },
        "encoding": _hex(bundle.to_bytes()),
    }


def _decode_message(request: JSON) -> JSON:
    parsed = parse_message(_bytes(request, "message"))
    initial = parsed.initial
    fields: JSON = {
        "kind": "normal" if initial is None else "initial",
        "sessionId": _hex(parsed.session_id),
        "header": _hex(parsed.header),
        "ciphertext": _hex(parsed.ciphertext),
    }
    if initial is not None:
        fields.update(
            identityKey=_hex(initial.identity_key),
            baseKey=_hex(initial.base_key),
            signedPrekeyId=initial.signed_prekey_id,
            oneTimePrekeyId=initial.one_time_prekey_id,
            kemPrekeyId=initial.kem_prekey_id,
            kemCiphertext=_json_value(initial.kem_ciphertext),
            headerEncryption=initial.header_encryption,
        )
    encoding = (
        message_prefix(parsed.session_id, None if initial is None else initial.encode())
        + codec.encode_bytes(parsed.header)
        + codec.encode_bytes(parsed.ciphertext)
    )
    return {"fields": fields, "encoding": _hex(encoding)}


def _registration_ticket_check(request: JSON) -> JSON:
    """What the relay does with a ticket that comes with a device list (spec/relay.md 4.1)."""
    ticket = tickets.read_ticket(_bytes(request, "ticket"), _bytes(request, "authorityKey"))
    tickets.check_ticket(
        ticket,
        origin=_str(request, "relayOrigin"),
        user_id=_str(request, "userId"),
        user_key=_bytes(request, "userKey"),
        now=_int(request, "now"),
        max_lifetime=_int(request, "maxLifetime"),
    )
    return {
        "fields": {
            "origin": ticket.origin,
            "userId": ticket.user_id,
            "userKey": _hex(ticket.user_key),
            "issued": ticket.issued,
            "expires": ticket.expires,
        }
    }


def _registration_ticket_issue(request: JSON) -> JSON:
    fields = _object(request, "fields")
    ticket = tickets.issue_ticket(
        _bytes(request, "authoritySeed"),
        origin=_str(fields, "origin"),
        user_id=_str(fields, "userId"),
        user_key=_bytes(fields, "userKey"),
        issued=_int(fields, "issued"),
        expires=_int(fields, "expires"),
    )
    return {"ticket": _hex(ticket)}


def _device_list_verify(request: JSON) -> JSON:
    listed = SignedDeviceList.from_bytes(_bytes(request, "signedList")).device_list
    return {
        "fields": {
            "userId": listed.user_id,
            "userKey": _hex(listed.user_key),
            "counter": listed.counter,
            "devices": [[device, _hex(key)] for device, key in listed.devices],
        }
    }


def _device_list_sign(request: JSON) -> JSON:
    fields = _object(request, "fields")
    entries = fields.get("devices")
    if not isinstance(entries, list):
        raise RequestError("bad_request", "'devices' must be a list of [id, key] pairs")
    devices: dict[int, bytes] = {}
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 2:
            raise RequestError("bad_request", "a device is an [id, key] pair")
        device = _int({"id": entry[0]}, "id")
        if device in devices:
            raise RequestError("bad_request", f"device id {device} appears twice")
        devices[device] = _bytes({"key": entry[1]}, "key")
    identity = UserIdentity(_bytes(request, "userSeed"))
    signed = identity.sign_device_list(_str(fields, "userId"), _int(fields, "counter"), devices)
    return {"signedList": _hex(signed.to_bytes())}


def _login_payload(request: JSON) -> bytes:
    """The bytes a device signs to log in: label || CBOR([origin, challenge, user, device])."""
    return signing.relay_login_payload(
        relay_api.login_payload(
            _str(request, "relayOrigin"),
            _bytes(request, "challenge"),
            _str(request, "userId"),
            _int(request, "deviceId"),
        )
    )


def _relay_login_payload(request: JSON) -> JSON:
    return {"payload": _hex(_login_payload(request))}


def _relay_login_sign(request: JSON) -> JSON:
    signature = signing.sign(_bytes(request, "deviceSeed"), _login_payload(request))
    return {"signature": _hex(signature)}


STATELESS: dict[str, Callable[[JSON], JSON]] = {
    "x25519": _x25519,
    "x25519_public_key": _x25519_public_key,
    "identity_key_from_seed": _identity_key_from_seed,
    "identity_key_to_x25519": _identity_key_to_x25519,
    "bundle_signature_payload": _bundle_signature_payload,
    "verify_signature": _verify_signature,
    "hkdf_sha256": _hkdf_sha256,
    "message_key_expand": _message_key_expand,
    "message_encrypt": _message_encrypt,
    "message_decrypt": _message_decrypt,
    "header_seal": _header_seal,
    "header_open": _header_open,
    "mlkem_public_key": _mlkem_public_key,
    "mlkem_decapsulate": _mlkem_decapsulate,
    "mlkem_check_encapsulation_key": _mlkem_check_encapsulation_key,
    "kdf_rk": _kdf_rk,
    "kdf_rk_he": _kdf_rk_he,
    "kdf_ck": _kdf_ck,
    "handshake_derive": _handshake_derive,
    "decode_bundle": _decode_bundle,
    "decode_message": _decode_message,
    "registration_ticket_check": _registration_ticket_check,
    "registration_ticket_issue": _registration_ticket_issue,
    "device_list_verify": _device_list_verify,
    "device_list_sign": _device_list_sign,
    "relay_login_payload": _relay_login_payload,
    "relay_login_sign": _relay_login_sign,
}


# --- scenario operations --------------------------------------------------------------------


def _replay(request: JSON) -> LabelledReplay:
    random = request.get("random", [])
    encapsulations = request.get("kemEncapsulations", [])
    if not isinstance(random, list) or not isinstance(encapsulations, list):
        raise RequestError("bad_request", "'random' and 'kemEncapsulations' must be lists")
    try:
        return LabelledReplay(random, encapsulations)
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestError("bad_request", f"malformed random values: {exc}") from None


@dataclass
class Server:
    """The parties of the current scenario (each with at most one account and one session)."""

    accounts: dict[str, Account] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)

    def handle(self, request: Any) -> JSON:
        """Answer one request object with one response object."""
        request_id = request.get("id") if isinstance(request, dict) else None
        if request_id is not None and type(request_id) is not int:
            # Echoed, NaN or Infinity would make the response invalid JSON; true or 2.0
            # would be taken for another id.
            return _error(None, "bad_request", "'id' must be an integer")
        try:
            if not isinstance(request, dict):
                raise RequestError("bad_request", "a request is a JSON object")
            op = request.get("op")
            if not isinstance(op, str):
                raise RequestError("bad_request", "'op' must be a string")
            result = self._dispatch(op, request)
        except RequestError as exc:
            return _error(request_id, exc.category, str(exc))
        except ReplayError as exc:
            return _error(request_id, "replay_mismatch", str(exc))
        except RelayError as exc:  # the relay's error code goes with its category
            response = _error(request_id, exc.category, str(exc) or type(exc).__name__)
            response["error"]["code"] = exc.code
            return response
        except E2EEError as exc:
            return _error(request_id, exc.category, str(exc) or type(exc).__name__)
        except (KeyError, TypeError, ValueError) as exc:
            return _error(request_id, "bad_request", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything else is a bug of this adapter, reported as such
            return _error(request_id, "internal_error", f"{type(exc).__name__}: {exc}")
        return {"id": request_id, "result": result}

    def _dispatch(self, op: str, request: JSON) -> JSON:
        if op == "hello":
            return hello_result()
        if op == "shutdown":
            return {}
        if op == "reset":
            self.accounts.clear()
            self.sessions.clear()
            return {}
        if op == "fingerprint":
            return self._fingerprint(request)
        stateless = STATELESS.get(op)
        if stateless is not None:
            return stateless(request)
        scenario = _SCENARIO.get(op)
        if scenario is None:
            raise RequestError("unsupported_operation", f"unknown operation {op!r}")
        provider = _replay(request)
        result = scenario(self, request, provider)  # a failing step may leave values unused
        provider.check_exhausted()
        return result

    def _fingerprint(self, request: JSON) -> JSON:
        party = _party(request)
        of = request.get("of")
        holder: Account | Session | None
        if of == "account":
            holder = self.accounts.get(party)
        elif of == "session":
            holder = self.sessions.get(party)
        else:
            raise RequestError("bad_request", "'of' must be 'account' or 'session'")
        if holder is None:
            return {"fingerprint": None}
        return {"fingerprint": hashlib.sha256(holder.to_bytes()).hexdigest()}

    def account(self, request: JSON) -> Account:
        party = _party(request)
        if party not in self.accounts:
            raise RequestError("bad_request", f"{party} has no account")
        return self.accounts[party]

    def session(self, request: JSON) -> Session:
        party = _party(request)
        if party not in self.sessions:
            raise RequestError("bad_request", f"{party} has no session")
        return self.sessions[party]


def _generate_account(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    account = Account.generate(
        provider=provider, now=_int(request, "now"), post_quantum=_bool(request, "postQuantum")
    )
    server.accounts[_party(request)] = account
    return {"identityKey": _hex(account.identity_key)}


def _generate_one_time_prekeys(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    server.account(request).generate_one_time_prekeys(_int(request, "count"), provider=provider)
    return {}


def _rotate_signed_prekey(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    server.account(request).rotate_signed_prekey(provider=provider, now=_int(request, "now"))
    return {}


def _prekey_bundle(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    return {"bundle": _hex(server.account(request).prekey_bundle().to_bytes())}


def _start_session(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    config = _object(request, "config")
    account = server.account(request)
    session_config = SessionConfig(
        header_encryption=_bool(config, "headerEncryption"),
        allow_x3dh=_bool(config, "allowX3dh"),
    )
    with capture_handshake() as calls:
        session = account.start_session(
            PreKeyBundle.from_bytes(_bytes(request, "bundle")),
            config=session_config,
            provider=provider,
            now=_int(request, "now"),
        )
    server.sessions[_party(request)] = session
    return {
        "sessionId": _hex(session.session_id),
        "handshake": calls[0] if calls else None,
        "ratchet": ratchet_snapshot(session),
    }


def _accept_session(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    config = _object(request, "config")
    account = server.account(request)
    session_config = SessionConfig(
        require_header_encryption=_bool(config, "requireHeaderEncryption")
    )
    with capture_handshake() as calls:
        session, plaintext = account.accept_session(
            _bytes(request, "message"),
            config=session_config,
            provider=provider,
            now=_int(request, "now"),
        )
    server.sessions[_party(request)] = session
    return {
        "plaintext": _hex(plaintext),
        "sessionId": _hex(session.session_id),
        "handshake": calls[0] if calls else None,
        "ratchet": ratchet_snapshot(session),
    }


def _encrypt(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    session = server.session(request)
    plaintext = _bytes(request, "plaintext")
    repeat = 1 if request.get("repeat") is None else _int(request, "repeat")
    if repeat < 1:
        raise RequestError("bad_request", "'repeat' must be at least 1")
    message_key = sending_message_key(session)
    messages = [session.encrypt(plaintext, provider=provider) for _ in range(repeat)]
    result: JSON = {"ratchet": ratchet_snapshot(session)}
    if repeat == 1:
        result["message"] = _hex(messages[0])
        result["messageKey"] = None if message_key is None else _hex(message_key)
    return result


def _decrypt(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    session = server.session(request)
    plaintext = session.decrypt(_bytes(request, "message"), provider=provider)
    return {"plaintext": _hex(plaintext), "ratchet": ratchet_snapshot(session)}


def _save_session(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    key = _opt_bytes(request, "stateKey")
    return {"state": _hex(server.session(request).to_bytes(key=key, provider=provider))}


def _load_session(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    session = Session.from_bytes(_bytes(request, "state"), key=_opt_bytes(request, "stateKey"))
    server.sessions[_party(request)] = session
    return {"sessionId": _hex(session.session_id), "ratchet": ratchet_snapshot(session)}


def _save_account(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    return {"state": _hex(server.account(request).to_bytes())}


def _load_account(server: Server, request: JSON, provider: LabelledReplay) -> JSON:
    account = Account.from_bytes(_bytes(request, "state"))
    server.accounts[_party(request)] = account
    return {"identityKey": _hex(account.identity_key)}


_SCENARIO: dict[str, Callable[[Server, JSON, LabelledReplay], JSON]] = {
    "generate_account": _generate_account,
    "generate_one_time_prekeys": _generate_one_time_prekeys,
    "rotate_signed_prekey": _rotate_signed_prekey,
    "prekey_bundle": _prekey_bundle,
    "start_session": _start_session,
    "accept_session": _accept_session,
    "encrypt": _encrypt,
    "decrypt": _decrypt,
    "save_session": _save_session,
    "load_session": _load_session,
    "save_account": _save_account,
    "load_account": _load_account,
}


def _error(request_id: object, category: str, message: str) -> JSON:
    return {"id": request_id, "error": {"category": category, "message": message}}


def hello_result() -> JSON:
    """What ``serve`` announces: every area of the vectors, and the state format."""
    return {
        "protocol": PROTOCOL_NAME,
        "version": PROTOCOL_VERSION,
        "implementation": f"e2ee {e2ee.__version__} (Python reference)",
        "capabilities": [*AREA_OPS, STATE_CAPABILITY],
    }


def serve(stdin: IO[str] | None = None, stdout: IO[bytes] | None = None) -> int:
    """Answer requests until end of input; returns the exit status (0)."""
    source = sys.stdin if stdin is None else stdin
    sink = sys.stdout.buffer if stdout is None else stdout
    server = Server()
    for line in source:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            request = None
            response = _error(None, "bad_request", f"not JSON: {exc}")
        else:
            response = server.handle(request)
        sink.write(encode_line(response))
        sink.flush()
        if isinstance(request, dict) and request.get("op") == "shutdown":
            break
    return 0
