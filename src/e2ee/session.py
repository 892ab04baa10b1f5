"""A Double Ratchet session with one peer device."""

from __future__ import annotations

from typing import Any

from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider, default_provider
from e2ee.errors import AuthenticationError, DecodeError, StateError
from e2ee.handshake.pqxdh import HandshakeSecrets, associated_data
from e2ee.limits import (
    ED25519_KEY_SIZE,
    ENCRYPTED_HEADER_SIZE,
    HEADER_PLAINTEXT_SIZE,
    MAX_COUNTER,
    MAX_PLAINTEXT_SIZE,
    MAX_RECEIVING_CHAINS,
    MAX_SKIPPED_KEYS,
    SESSION_ID_SIZE,
    TYPE_SESSION_STATE,
    X25519_KEY_SIZE,
)
from e2ee.ratchet.double_ratchet import RatchetState
from e2ee.ratchet.skipped import SkippedKeys
from e2ee.state import Fields, check_bytes, check_uint, dump, load
from e2ee.wire.messages import (
    InitialFields,
    message_prefix,
    normal_message_layout,
    parse_initial_fields,
    parse_message,
    split_normal_message,
)

INITIATOR = 0
RESPONDER = 1


class Session:
    """One side of an end-to-end encrypted session. Persist it with :meth:`to_bytes`.

    Created by :meth:`e2ee.Account.start_session` (initiator) or
    :meth:`e2ee.Account.accept_session` (responder). The initiator sends the initial-message
    form until the first reply from the responder arrives.
    """

    __slots__ = (
        "_header_size",
        "_initial_fields_hash",
        "_layout",
        "_local_identity_key",
        "_normal_prefix_size",
        "_peer_identity_key",
        "_pending_initial",
        "_prefix",
        "_ratchet",
        "_role",
        "_session_id",
    )

    def __init__(
        self,
        *,
        role: int,
        session_id: bytes,
        local_identity_key: bytes,
        peer_identity_key: bytes,
        initial_fields_hash: bytes,
        pending_initial: bytes | None,
        ratchet: RatchetState,
    ) -> None:
        self._role = role
        self._session_id = session_id
        self._local_identity_key = local_identity_key
        self._peer_identity_key = peer_identity_key
        self._initial_fields_hash = initial_fields_hash
        self._pending_initial = pending_initial
        self._ratchet = ratchet
        self._prefix = message_prefix(session_id, pending_initial)
        self._layout = normal_message_layout(session_id, ratchet.header_encryption)
        self._normal_prefix_size = len(message_prefix(session_id, None))
        self._header_size = (
            ENCRYPTED_HEADER_SIZE if ratchet.header_encryption else HEADER_PLAINTEXT_SIZE
        )

    # --- construction by the account ------------------------------------------------------

    @classmethod
    def _create(
        cls,
        *,
        role: int,
        secrets: HandshakeSecrets,
        local_identity_key: bytes,
        peer_identity_key: bytes,
        initial: InitialFields,
        ratchet: RatchetState,
    ) -> Session:
        encoded = initial.encode()
        return cls(
            role=role,
            session_id=secrets.session_id,
            local_identity_key=local_identity_key,
            peer_identity_key=peer_identity_key,
            initial_fields_hash=primitives.sha256(encoded),
            pending_initial=encoded if role == INITIATOR else None,
            ratchet=ratchet,
        )

    # --- public properties -----------------------------------------------------------------

    @property
    def session_id(self) -> bytes:
        """16 bytes derived from the handshake transcript; :func:`e2ee.peek` reports the same."""
        return self._session_id

    @property
    def peer_identity_key(self) -> bytes:
        """The peer's Ed25519 identity public key."""
        return self._peer_identity_key

    @property
    def local_identity_key(self) -> bytes:
        return self._local_identity_key

    @property
    def header_encryption(self) -> bool:
        return self._ratchet.header_encryption

    @property
    def is_initiator(self) -> bool:
        return self._role == INITIATOR

    @property
    def awaiting_reply(self) -> bool:
        """True while the initiator still sends the initial-message form."""
        return self._pending_initial is not None

    @property
    def skipped_key_count(self) -> int:
        return len(self._ratchet.skipped)

    def __repr__(self) -> str:
        role = "initiator" if self._role == INITIATOR else "responder"
        return (
            f"Session(session_id={self._session_id.hex()}, role={role}, "
            f"header_encryption={self.header_encryption}, sent={self._ratchet.ns}, "
            f"received={self._ratchet.nr}, skipped={len(self._ratchet.skipped)})"
        )

    # --- messaging ---------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, provider: Provider | None = None) -> bytes:
        """Encrypt ``plaintext`` for the peer and return the wire message."""
        if not isinstance(plaintext, bytes):
            raise TypeError("plaintext must be bytes")
        if len(plaintext) > MAX_PLAINTEXT_SIZE:
            raise ValueError(f"plaintext is larger than {MAX_PLAINTEXT_SIZE} bytes")
        return self._ratchet.encrypt(plaintext, self._prefix, provider or default_provider())

    def decrypt(self, message: bytes, *, provider: Provider | None = None) -> bytes:
        """Decrypt a wire message of this session (initial or normal form).

        Raises an :class:`e2ee.errors.RemoteError` subclass on any problem; the session is then
        exactly as it was (``to_bytes()`` is byte-identical).
        """
        provider = provider or default_provider()
        split = split_normal_message(message, self._layout, self._header_size)
        if split is not None:
            header_start, body = split
            plaintext = self._ratchet.decrypt(
                message[header_start : header_start + self._header_size],
                message[body:],
                message[: self._normal_prefix_size],
                message[: header_start + self._header_size],
                provider,
            )
            self._reply_received()
            return plaintext
        parsed = parse_message(message)
        if parsed.session_id != self._session_id:
            raise AuthenticationError("message belongs to another session")
        if parsed.initial is not None:
            if self._role == INITIATOR:
                raise AuthenticationError("initial message sent to its own initiator")
            if not primitives.constant_time_equal(
                primitives.sha256(parsed.initial.encode()), self._initial_fields_hash
            ):
                raise AuthenticationError("initial fields differ from the session's handshake")
        plaintext = self._ratchet.decrypt(
            parsed.header,
            parsed.ciphertext,
            parsed.header_prefix,
            parsed.mac_prefix,
            provider,
        )
        self._reply_received()
        return plaintext

    def _reply_received(self) -> None:
        """After the first authenticated message from the peer, stop the initial form."""
        if self._pending_initial is not None:
            self._pending_initial = None
            self._prefix = message_prefix(self._session_id, None)

    # --- persistence -------------------------------------------------------------------------

    def to_bytes(self, *, key: bytes | None = None, provider: Provider | None = None) -> bytes:
        """Serialize (canonical CBOR); with ``key`` (32 bytes) encrypted at rest."""
        r = self._ratchet
        fields = {
            2: self._session_id,
            3: self._role,
            4: r.header_encryption,
            5: self._local_identity_key,
            6: self._peer_identity_key,
            7: self._initial_fields_hash,
            8: self._pending_initial,
            9: r.root_key,
            10: r.dhs_private,
            11: r.dhs_public,
            12: r.dhr,
            13: r.cks,
            14: r.ckr,
            15: r.ns,
            16: r.nr,
            17: r.pn,
            18: r.hks,
            19: r.hkr,
            20: r.nhks,
            21: r.nhkr,
            22: r.skipped.dump(),
        }
        return dump(
            TYPE_SESSION_STATE, fields, self._session_id, key, provider or default_provider()
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, key: bytes | None = None) -> Session:
        """Load a session saved by :meth:`to_bytes`; raises :class:`e2ee.errors.StateError`."""
        value, envelope_id = load(data, TYPE_SESSION_STATE, key)
        f = Fields(value)
        if set(f._map) != set(range(23)):
            raise StateError("session state has missing or unknown fields")
        role = f.uint(3, 1)
        header_encryption = f.boolean(4)
        local_key = f.bytes_(5, ED25519_KEY_SIZE)
        peer_key = f.bytes_(6, ED25519_KEY_SIZE)

        def header_key(index: int) -> bytes | None:
            value = f.optional_bytes(index, 32)
            if value is not None and not header_encryption:
                raise StateError("header keys in a session without header encryption")
            return value

        session_id = f.bytes_(2, SESSION_ID_SIZE)
        ratchet = RatchetState(
            header_encryption=header_encryption,
            associated_data=associated_data(local_key, peer_key)
            if role == INITIATOR
            else associated_data(peer_key, local_key),
            root_key=f.bytes_(9, 32),
            dhs_private=f.bytes_(10, X25519_KEY_SIZE),
            dhs_public=f.bytes_(11, X25519_KEY_SIZE),
            dhr=f.optional_bytes(12, X25519_KEY_SIZE),
            cks=f.optional_bytes(13, 32),
            ckr=f.optional_bytes(14, 32),
            ns=f.uint(15, MAX_COUNTER),
            nr=f.uint(16, MAX_COUNTER),
            pn=f.uint(17, MAX_COUNTER),
            hks=header_key(18),
            hkr=header_key(19),
            nhks=header_key(20),
            nhkr=header_key(21),
            skipped=_load_skipped(f.array(22), header_encryption),
        )
        if envelope_id is not None and envelope_id != session_id:
            raise StateError("sealed envelope belongs to another session")
        _check_ratchet_consistency(ratchet)
        pending = f.optional_bytes(8)
        if pending is not None and role != INITIATOR:
            raise StateError("only an initiator has a pending initial message")
        if pending is not None:
            try:
                fields = parse_initial_fields(pending)
            except DecodeError:
                raise StateError("pending initial fields are malformed") from None
            if (
                fields.encode() != pending
                or fields.identity_key != local_key
                or fields.header_encryption != header_encryption
                or primitives.sha256(pending) != f.bytes_(7, 32)
            ):
                raise StateError("pending initial fields do not belong to this session")
        return cls(
            role=role,
            session_id=session_id,
            local_identity_key=local_key,
            peer_identity_key=peer_key,
            initial_fields_hash=f.bytes_(7, 32),
            pending_initial=pending,
            ratchet=ratchet,
        )


def _check_ratchet_consistency(r: RatchetState) -> None:
    """Invariants every session made by this library satisfies; anything else is corrupt."""
    if r.cks is None:
        raise StateError("session state has no sending chain")
    if primitives.x25519_public_key(r.dhs_private) != r.dhs_public:
        raise StateError("ratchet key pair does not match")
    if r.ckr is not None and r.dhr is None:
        raise StateError("receiving chain without a peer ratchet key")
    if r.ckr is not None:
        # The current receiving chain is always the newest remembered one: the ratchet stores
        # the keys it skips on it, so a state that forgot it would silently lose them.
        reference = r.hkr if r.header_encryption else r.dhr
        newest = next(r.skipped.references(), None)
        if (
            reference is None
            or newest is None
            or not primitives.constant_time_equal(newest, reference)
        ):
            raise StateError("current receiving chain is not remembered")
    if r.header_encryption:
        if r.hks is None or r.nhks is None or r.nhkr is None:
            raise StateError("header encryption on but header keys missing")
        if (r.hkr is None) != (r.ckr is None):
            raise StateError("receiving header key and chain disagree")
    if r.ns > MAX_COUNTER or r.pn > MAX_COUNTER:
        raise StateError("counter out of range")


def _load_skipped(raw: list[Any], header_encryption: bool) -> SkippedKeys:
    if len(raw) > MAX_RECEIVING_CHAINS:
        raise StateError("too many receiving chains in state")
    chains: dict[bytes, dict[int, bytes]] = {}
    total = 0
    for entry in raw:
        if type(entry) is not list or len(entry) != 2 or type(entry[1]) is not list:
            raise StateError("malformed skipped-key chain")
        reference = check_bytes(entry[0], 32)
        if reference in chains:
            raise StateError("duplicate receiving chain in state")
        keys: dict[int, bytes] = {}
        for item in entry[1]:
            if type(item) is not list or len(item) != 2:
                raise StateError("malformed skipped key")
            number = check_uint(item[0], MAX_COUNTER)
            if number in keys:
                raise StateError("duplicate skipped key in state")
            keys[number] = check_bytes(item[1], 32)
        total += len(keys)
        chains[reference] = keys
    if total > MAX_SKIPPED_KEYS:
        raise StateError("too many skipped keys in state")
    return SkippedKeys.load(chains)
