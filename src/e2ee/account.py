"""A device's long-term identity and prekeys; it starts and accepts sessions.

The account holds one Ed25519 identity key (converted to X25519 for DH), the current signed
prekey with its last-resort ML-KEM-1024 companion, recently replaced signed prekeys (for a grace
period), and batches of one-time X25519 and ML-KEM-1024 prekeys, each signed.

``accept_session`` stages everything: the one-time prekeys it used are deleted, and the base key
of a first message that used no one-time prekey is remembered, only after the first message has
authenticated. A tampered initial message leaves the account byte-identical.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from e2ee.config import DEFAULT_CONFIG, SessionConfig
from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider, SystemProvider, default_provider
from e2ee.errors import (
    AuthenticationError,
    DuplicateMessageError,
    ExhaustedError,
    HandshakeError,
    StateError,
)
from e2ee.handshake import pqxdh, signing
from e2ee.limits import (
    ED25519_SIGNATURE_SIZE,
    MAX_BASE_KEYS_PER_PREKEY,
    MAX_COUNTER,
    MAX_OLD_SIGNED_PREKEYS,
    MAX_ONE_TIME_PREKEYS,
    MAX_SIGNED_PREKEY_AGE,
    MAX_SIGNED_PREKEY_FUTURE_SKEW,
    MLKEM1024_CIPHERTEXT_SIZE,
    MLKEM1024_PUBLIC_KEY_SIZE,
    MLKEM1024_SEED_SIZE,
    SHARED_SECRET_SIZE,
    SIGNED_PREKEY_GRACE_PERIOD,
    TYPE_ACCOUNT_STATE,
    X25519_KEY_SIZE,
)
from e2ee.ratchet.double_ratchet import RatchetState
from e2ee.session import INITIATOR, RESPONDER, Session
from e2ee.state import Fields, check_bytes, check_uint, dump, load
from e2ee.wire.messages import InitialFields, PreKeyBundle, parse_message


@dataclass(slots=True)
class _SignedPrekey:
    prekey_id: int
    timestamp: int
    private: bytes = field(repr=False)
    public: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    kem_id: int | None
    kem_seed: bytes | None = field(repr=False)
    kem_public: bytes | None = field(repr=False)
    seen_base_keys: set[bytes] = field(default_factory=set, repr=False)
    retired_at: int | None = None


@dataclass(slots=True)
class _OneTimePrekey:
    """A one-time X25519 prekey (private = 32-byte key) or ML-KEM prekey (private = seed)."""

    private: bytes = field(repr=False)
    public: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    published: bool = False


_IDS_PER_SIGNED_PREKEY = 2
"""Prekey ids a new signed prekey takes: its own and its ML-KEM companion's (reserved for both
kinds of account, so the point at which ids run out does not depend on the kind)."""


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


class Account:
    """A device's identity and prekeys. Persist it with :meth:`to_bytes` after every change."""

    __slots__ = (
        "_identity_dh_private",
        "_identity_key",
        "_identity_seed",
        "_next_prekey_id",
        "_one_time_kem_prekeys",
        "_one_time_prekeys",
        "_post_quantum",
        "_signed_prekeys",
    )

    def __init__(
        self,
        *,
        identity_seed: bytes,
        post_quantum: bool,
        next_prekey_id: int,
        signed_prekeys: list[_SignedPrekey],
        one_time_prekeys: dict[int, _OneTimePrekey],
        one_time_kem_prekeys: dict[int, _OneTimePrekey],
    ) -> None:
        self._identity_seed = identity_seed
        self._identity_key = primitives.ed25519_public_key(identity_seed)
        self._identity_dh_private = primitives.ed25519_seed_to_x25519(identity_seed)
        self._post_quantum = post_quantum
        self._next_prekey_id = next_prekey_id
        self._signed_prekeys = signed_prekeys
        self._one_time_prekeys = one_time_prekeys
        self._one_time_kem_prekeys = one_time_kem_prekeys

    # --- creation ------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        *,
        provider: Provider | None = None,
        now: int | None = None,
        post_quantum: bool = True,
    ) -> Account:
        """A new account with a fresh identity and signed prekey (plus its ML-KEM companion).

        ``post_quantum=False`` makes a classic account (no ML-KEM keys): only X3DH sessions can
        be started with it, and only by initiators whose config allows X3DH.
        """
        provider = provider or default_provider()
        account = cls(
            identity_seed=provider.random_bytes(32),
            post_quantum=post_quantum,
            next_prekey_id=1,
            signed_prekeys=[],
            one_time_prekeys={},
            one_time_kem_prekeys={},
        )
        spk = account._new_signed_prekey(provider, _now(now))
        account._next_prekey_id = _next_id_after(spk)
        account._signed_prekeys.append(spk)
        return account

    def _reserve_ids(self, count: int) -> None:
        """Raise before anything changes if ``count`` more prekey ids are not available."""
        if self._next_prekey_id + count > MAX_COUNTER + 1:
            raise ExhaustedError("prekey ids exhausted")

    def _new_signed_prekey(self, provider: Provider, now: int) -> _SignedPrekey:
        """Draw and sign a signed prekey with the next free id(s), changing nothing: a failing
        draw leaves the account as it was. The caller commits it, ``_next_prekey_id`` =
        ``_next_id_after(key)`` included, once nothing else can fail."""
        self._reserve_ids(_IDS_PER_SIGNED_PREKEY)
        private = provider.random_bytes(32)
        public = primitives.x25519_public_key(private)
        prekey_id = self._next_prekey_id
        kem_id = kem_seed = kem_public = None
        if self._post_quantum:
            kem_id = prekey_id + 1
            kem_seed = provider.random_bytes(MLKEM1024_SEED_SIZE)
            kem_public = primitives.mlkem1024_public_key(kem_seed)
        signature = signing.sign(
            self._identity_seed,
            signing.signed_prekey_payload(prekey_id, now, public, kem_id, kem_public),
        )
        return _SignedPrekey(
            prekey_id, now, private, public, signature, kem_id, kem_seed, kem_public
        )

    # --- public properties ---------------------------------------------------------------

    @property
    def identity_key(self) -> bytes:
        """The Ed25519 identity public key (32 bytes)."""
        return self._identity_key

    @property
    def post_quantum(self) -> bool:
        return self._post_quantum

    @property
    def signed_prekey_timestamp(self) -> int:
        return self._signed_prekeys[-1].timestamp

    def unpublished_one_time_prekey_count(self) -> int:
        """One-time EC prekeys not yet handed out in a bundle."""
        return sum(1 for k in self._one_time_prekeys.values() if not k.published)

    def one_time_prekey_count(self) -> int:
        """One-time EC prekeys whose private key is still held (published or not)."""
        return len(self._one_time_prekeys)

    def __repr__(self) -> str:
        return (
            f"Account(identity_key={self._identity_key.hex()}, "
            f"post_quantum={self._post_quantum}, "
            f"one_time_prekeys={len(self._one_time_prekeys)}, "
            f"one_time_kem_prekeys={len(self._one_time_kem_prekeys)})"
        )

    # --- prekeys -------------------------------------------------------------------------

    def generate_one_time_prekeys(self, count: int, *, provider: Provider | None = None) -> None:
        """Make ``count`` more one-time X25519 prekeys and, if post-quantum, ML-KEM prekeys."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("count must be a non-negative integer")
        if len(self._one_time_prekeys) + count > MAX_ONE_TIME_PREKEYS:
            raise ExhaustedError(
                f"an account holds at most {MAX_ONE_TIME_PREKEYS} one-time prekeys"
            )
        # ML-KEM one-time prekeys are capped on their own: initiators may use a one-time EC
        # prekey with the last-resort ML-KEM key, so the two supplies drift apart.
        kem_count = (
            min(count, MAX_ONE_TIME_PREKEYS - len(self._one_time_kem_prekeys))
            if self._post_quantum
            else 0
        )
        self._reserve_ids(count + kem_count)
        provider = provider or default_provider()
        # Every key is drawn and signed before the account changes: a failing draw leaves it
        # as it was (no id taken, no key added).
        next_id = self._next_prekey_id
        new_keys: dict[int, _OneTimePrekey] = {}
        new_kem_keys: dict[int, _OneTimePrekey] = {}
        for index in range(count):
            prekey_id = next_id
            next_id += 1
            private = provider.random_bytes(32)
            public = primitives.x25519_public_key(private)
            signature = signing.sign(
                self._identity_seed, signing.one_time_prekey_payload(prekey_id, public)
            )
            new_keys[prekey_id] = _OneTimePrekey(private, public, signature)
            if index < kem_count:
                kem_id = next_id
                next_id += 1
                seed = provider.random_bytes(MLKEM1024_SEED_SIZE)
                kem_public = primitives.mlkem1024_public_key(seed)
                kem_signature = signing.sign(
                    self._identity_seed, signing.one_time_kem_prekey_payload(kem_id, kem_public)
                )
                new_kem_keys[kem_id] = _OneTimePrekey(seed, kem_public, kem_signature)
        self._one_time_prekeys.update(new_keys)
        self._one_time_kem_prekeys.update(new_kem_keys)
        self._next_prekey_id = next_id

    def prekey_bundle(self) -> PreKeyBundle:
        """A bundle with the current signed prekey and an unpublished one-time prekey of each
        kind, which is marked as handed out. With none left: the signed last-resort ML-KEM
        prekey and no one-time EC prekey."""
        spk = self._signed_prekeys[-1]
        opk_id = _first_unpublished(self._one_time_prekeys)
        okem_id = _first_unpublished(self._one_time_kem_prekeys)
        opk = self._one_time_prekeys[opk_id] if opk_id is not None else None
        okem = self._one_time_kem_prekeys[okem_id] if okem_id is not None else None
        if opk is not None:
            opk.published = True
        if okem is not None:
            okem.published = True
        return PreKeyBundle(
            identity_key=self._identity_key,
            signed_prekey_id=spk.prekey_id,
            signed_prekey=spk.public,
            signed_prekey_timestamp=spk.timestamp,
            signed_prekey_signature=spk.signature,
            kem_prekey_id=spk.kem_id,
            kem_prekey=spk.kem_public,
            one_time_prekey_id=opk_id,
            one_time_prekey=opk.public if opk else None,
            one_time_prekey_signature=opk.signature if opk else None,
            one_time_kem_prekey_id=okem_id,
            one_time_kem_prekey=okem.public if okem else None,
            one_time_kem_prekey_signature=okem.signature if okem else None,
        )

    def unpublished_one_time_kem_prekey_count(self) -> int:
        """One-time ML-KEM prekeys not yet handed out in a bundle or an upload."""
        return sum(1 for k in self._one_time_kem_prekeys.values() if not k.published)

    def unpublished_one_time_prekeys(self) -> list[tuple[int, bytes, bytes]]:
        """(id, public key, signature) of every one-time EC prekey not yet published, for a
        client that uploads prekeys to a directory; :meth:`mark_published` records the upload."""
        return [
            (i, k.public, k.signature) for i, k in self._one_time_prekeys.items() if not k.published
        ]

    def unpublished_one_time_kem_prekeys(self) -> list[tuple[int, bytes, bytes]]:
        """(id, public key, signature) of every one-time ML-KEM prekey not yet published."""
        return [
            (i, k.public, k.signature)
            for i, k in self._one_time_kem_prekeys.items()
            if not k.published
        ]

    def mark_published(self, prekey_ids: list[int]) -> None:
        """Record that these one-time prekeys (EC or ML-KEM ids) were uploaded; unknown ids
        (already used) are ignored."""
        for prekey_id in prekey_ids:
            key = self._one_time_prekeys.get(prekey_id) or self._one_time_kem_prekeys.get(prekey_id)
            if key is not None:
                key.published = True

    def one_time_kem_prekey_count(self) -> int:
        """One-time ML-KEM prekeys whose private key is still held (published or not)."""
        return len(self._one_time_kem_prekeys)

    def discard_published_one_time_prekeys(self, one_time: int, one_time_kem: int = 0) -> None:
        """Forget the ``one_time`` oldest published one-time EC prekeys and the
        ``one_time_kem`` oldest published one-time ML-KEM prekeys (oldest: lowest id, which is
        creation order). A directory hands out one-time keys lowest id first, so these are the
        keys handed out longest ago whose initial message never came: keeping them for ever
        would fill the account's cap and stop the refill (handshake.md, section 12). An initial
        message that uses a discarded key is refused afterwards. Raises ``ValueError``, and
        changes nothing, if a count is negative or more than that kind's published keys."""
        kinds = ((one_time, self._one_time_prekeys), (one_time_kem, self._one_time_kem_prekeys))
        for count, keys in kinds:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError("counts must be non-negative integers")
            if count > sum(1 for k in keys.values() if k.published):
                raise ValueError("fewer published one-time prekeys than asked to discard")
        for count, keys in kinds:
            for prekey_id in [i for i, k in keys.items() if k.published][:count]:
                del keys[prekey_id]

    def signed_prekey_bundle(self) -> PreKeyBundle:
        """A bundle with the current signed prekey (and its last-resort ML-KEM companion) and
        no one-time prekey; nothing is marked as published. A directory combines it with
        uploaded one-time prekeys."""
        spk = self._signed_prekeys[-1]
        return PreKeyBundle(
            identity_key=self._identity_key,
            signed_prekey_id=spk.prekey_id,
            signed_prekey=spk.public,
            signed_prekey_timestamp=spk.timestamp,
            signed_prekey_signature=spk.signature,
            kem_prekey_id=spk.kem_id,
            kem_prekey=spk.kem_public,
        )

    def rotate_signed_prekey(
        self, *, provider: Provider | None = None, now: int | None = None
    ) -> None:
        """Replace the signed prekey (and its ML-KEM companion). The old one keeps accepting
        initial messages for the grace period; older ones are deleted."""
        current_time = _now(now)
        self._rotate(provider or default_provider(), current_time)

    def _rotate(self, provider: Provider, now: int) -> None:
        self._install_signed_prekey(self._new_signed_prekey(provider, now), now)

    def _install_signed_prekey(self, new: _SignedPrekey, now: int) -> None:
        """Make ``new`` (from :meth:`_new_signed_prekey`) current; cannot fail."""
        self._next_prekey_id = _next_id_after(new)
        self._signed_prekeys[-1].retired_at = now
        self._signed_prekeys.append(new)
        keep = [
            spk
            for spk in self._signed_prekeys[:-1]
            if spk.retired_at is not None and now - spk.retired_at <= SIGNED_PREKEY_GRACE_PERIOD
        ][-MAX_OLD_SIGNED_PREKEYS:]
        self._signed_prekeys = [*keep, self._signed_prekeys[-1]]

    def sign_relay_login(self, challenge: bytes) -> bytes:
        """Sign a relay's login challenge with the identity key, under the relay-login label
        (:func:`e2ee.handshake.signing.relay_login_payload`): the one thing this key signs for
        a caller, and never a payload of any other purpose."""
        if not isinstance(challenge, bytes):
            raise TypeError("challenge must be bytes")
        return signing.sign(self._identity_seed, signing.relay_login_payload(challenge))

    # --- sessions ------------------------------------------------------------------------

    def start_session(
        self,
        bundle: PreKeyBundle,
        *,
        config: SessionConfig | None = None,
        provider: Provider | None = None,
        now: int | None = None,
    ) -> Session:
        """Start a session from a peer's bundle (PQXDH, or X3DH if allowed and necessary).

        Every signature in the bundle is verified first; raises
        :class:`e2ee.errors.HandshakeError` (or its subclass ``SignatureError``).
        """
        if not isinstance(bundle, PreKeyBundle):
            raise TypeError("bundle must be a PreKeyBundle")
        config = config or DEFAULT_CONFIG
        provider = provider or default_provider()
        current_time = _now(now)
        peer_identity_dh = pqxdh.check_identity_key(bundle.identity_key)
        signing.verify(
            bundle.identity_key,
            signing.signed_prekey_payload(
                bundle.signed_prekey_id,
                bundle.signed_prekey_timestamp,
                bundle.signed_prekey,
                bundle.kem_prekey_id,
                bundle.kem_prekey,
            ),
            bundle.signed_prekey_signature,
        )
        if bundle.one_time_prekey is not None:
            assert bundle.one_time_prekey_id is not None
            assert bundle.one_time_prekey_signature is not None
            signing.verify(
                bundle.identity_key,
                signing.one_time_prekey_payload(bundle.one_time_prekey_id, bundle.one_time_prekey),
                bundle.one_time_prekey_signature,
            )
        if bundle.one_time_kem_prekey is not None:
            assert bundle.one_time_kem_prekey_id is not None
            assert bundle.one_time_kem_prekey_signature is not None
            signing.verify(
                bundle.identity_key,
                signing.one_time_kem_prekey_payload(
                    bundle.one_time_kem_prekey_id, bundle.one_time_kem_prekey
                ),
                bundle.one_time_kem_prekey_signature,
            )
        age = current_time - bundle.signed_prekey_timestamp
        if age > MAX_SIGNED_PREKEY_AGE:
            raise HandshakeError("the signed prekey is too old; fetch a fresh bundle")
        if -age > MAX_SIGNED_PREKEY_FUTURE_SKEW:
            raise HandshakeError("the signed prekey is dated in the future")

        kem_id: int | None
        kem_public: bytes | None
        if bundle.one_time_kem_prekey is not None:
            kem_id, kem_public = bundle.one_time_kem_prekey_id, bundle.one_time_kem_prekey
        else:
            kem_id, kem_public = bundle.kem_prekey_id, bundle.kem_prekey
        kem_secret = kem_ciphertext = None
        if kem_public is None:
            if not config.allow_x3dh:
                raise HandshakeError(
                    "bundle has no ML-KEM prekey and this config does not allow X3DH"
                )
        else:
            if type(provider) is not SystemProvider:
                # Another provider (a test's replay) may not load the key: check it here. The
                # system provider's encapsulation loads it through the same FIPS 203 check
                # and raises the same HandshakeError, so the key is parsed once, not twice.
                primitives.mlkem1024_check_public_key(kem_public)
            kem_secret, kem_ciphertext = provider.mlkem1024_encapsulate(kem_public)
            if len(kem_secret) != SHARED_SECRET_SIZE or len(kem_ciphertext) != (
                MLKEM1024_CIPHERTEXT_SIZE
            ):
                raise ValueError("the provider returned a malformed ML-KEM encapsulation")

        base_private = provider.random_bytes(32)
        base_public = primitives.x25519_public_key(base_private)
        dh_outputs = pqxdh.initiator_dh(
            identity_dh_private=self._identity_dh_private,
            base_private=base_private,
            responder_identity_dh=peer_identity_dh,
            signed_prekey=bundle.signed_prekey,
            one_time_prekey=bundle.one_time_prekey,
        )
        transcript = pqxdh.Transcript(
            initiator_identity_key=self._identity_key,
            responder_identity_key=bundle.identity_key,
            signed_prekey_id=bundle.signed_prekey_id,
            signed_prekey=bundle.signed_prekey,
            signed_prekey_timestamp=bundle.signed_prekey_timestamp,
            one_time_prekey_id=bundle.one_time_prekey_id,
            one_time_prekey=bundle.one_time_prekey,
            kem_prekey_id=kem_id,
            kem_prekey=kem_public,
            kem_ciphertext=kem_ciphertext,
            base_key=base_public,
            header_encryption=config.header_encryption,
        )
        secrets = pqxdh.derive(transcript, dh_outputs, kem_secret)
        initial = InitialFields(
            identity_key=self._identity_key,
            base_key=base_public,
            signed_prekey_id=bundle.signed_prekey_id,
            one_time_prekey_id=bundle.one_time_prekey_id,
            kem_prekey_id=kem_id,
            kem_ciphertext=kem_ciphertext,
            header_encryption=config.header_encryption,
        )
        ratchet = RatchetState.init_initiator(
            root_key=secrets.root_key,
            header_key=secrets.header_key,
            next_header_key=secrets.next_header_key,
            peer_ratchet_key=bundle.signed_prekey,
            associated_data=secrets.associated_data,
            header_encryption=config.header_encryption,
            provider=provider,
        )
        return Session._create(
            role=INITIATOR,
            secrets=secrets,
            local_identity_key=self._identity_key,
            peer_identity_key=bundle.identity_key,
            initial=initial,
            ratchet=ratchet,
        )

    def accept_session(
        self,
        message: bytes,
        *,
        config: SessionConfig | None = None,
        provider: Provider | None = None,
        now: int | None = None,
    ) -> tuple[Session, bytes]:
        """Create the responder's session from an initial message and decrypt it.

        The one-time prekeys the message used are deleted, and only after it authenticated.
        On any error the account is unchanged.
        """
        config = config or DEFAULT_CONFIG
        provider = provider or default_provider()
        current_time = _now(now)
        parsed = parse_message(message)
        initial = parsed.initial
        if initial is None:
            raise HandshakeError("not an initial message")
        if config.require_header_encryption and not initial.header_encryption:
            raise HandshakeError("this account requires header encryption")
        spk = self._find_signed_prekey(initial.signed_prekey_id, current_time)

        kem_seed: bytes | None = None
        kem_public: bytes | None = None
        one_time_kem: _OneTimePrekey | None = None
        if initial.kem_prekey_id is None:
            if spk.kem_id is not None:
                raise HandshakeError("X3DH initial message for a post-quantum signed prekey")
        elif initial.kem_prekey_id == spk.kem_id:
            kem_seed, kem_public = spk.kem_seed, spk.kem_public
        else:
            one_time_kem = self._one_time_kem_prekeys.get(initial.kem_prekey_id)
            if one_time_kem is None:
                raise HandshakeError("unknown or already used ML-KEM prekey")
            kem_seed, kem_public = one_time_kem.private, one_time_kem.public

        one_time: _OneTimePrekey | None = None
        if initial.one_time_prekey_id is not None:
            one_time = self._one_time_prekeys.get(initial.one_time_prekey_id)
            if one_time is None:
                raise HandshakeError("unknown or already used one-time prekey")
        remember_base_key = one_time is None and one_time_kem is None
        if remember_base_key:
            if initial.base_key in spk.seen_base_keys:
                raise DuplicateMessageError("initial message replayed")
            if len(spk.seen_base_keys) >= MAX_BASE_KEYS_PER_PREKEY:
                raise HandshakeError("signed prekey retired: its replay memory is full")

        peer_identity_dh = pqxdh.check_identity_key(initial.identity_key)
        dh_outputs = pqxdh.responder_dh(
            identity_dh_private=self._identity_dh_private,
            signed_prekey_private=spk.private,
            one_time_prekey_private=one_time.private if one_time else None,
            initiator_identity_dh=peer_identity_dh,
            base_key=initial.base_key,
        )
        kem_secret = None
        if kem_seed is not None:
            assert initial.kem_ciphertext is not None
            kem_secret = primitives.mlkem1024_decapsulate(kem_seed, initial.kem_ciphertext)
        transcript = pqxdh.Transcript(
            initiator_identity_key=initial.identity_key,
            responder_identity_key=self._identity_key,
            signed_prekey_id=spk.prekey_id,
            signed_prekey=spk.public,
            signed_prekey_timestamp=spk.timestamp,
            one_time_prekey_id=initial.one_time_prekey_id,
            one_time_prekey=one_time.public if one_time else None,
            kem_prekey_id=initial.kem_prekey_id,
            kem_prekey=kem_public,
            kem_ciphertext=initial.kem_ciphertext,
            base_key=initial.base_key,
            header_encryption=initial.header_encryption,
        )
        secrets = pqxdh.derive(transcript, dh_outputs, kem_secret)
        if secrets.session_id != parsed.session_id:
            raise AuthenticationError("session id does not match the handshake")
        ratchet = RatchetState.init_responder(
            root_key=secrets.root_key,
            header_key=secrets.header_key,
            next_header_key=secrets.next_header_key,
            ratchet_private=spk.private,
            ratchet_public=spk.public,
            associated_data=secrets.associated_data,
            header_encryption=initial.header_encryption,
        )
        session = Session._create(
            role=RESPONDER,
            secrets=secrets,
            local_identity_key=self._identity_key,
            peer_identity_key=initial.identity_key,
            initial=initial,
            ratchet=ratchet,
        )
        plaintext = session.decrypt(message, provider=provider)

        # Authenticated. Remembering the base key may fill the current signed prekey's replay
        # memory, which calls for a rotation. The new signed prekey is drawn now, before
        # anything is committed, so that an ExhaustedError (no ids left) or a failing draw
        # leaves the account unchanged and the message can be accepted later.
        rotate = (
            remember_base_key
            and len(spk.seen_base_keys) + 1 >= MAX_BASE_KEYS_PER_PREKEY
            and spk is self._signed_prekeys[-1]
        )
        new_signed_prekey = self._new_signed_prekey(provider, current_time) if rotate else None

        # Nothing below can fail: commit the account changes.
        if one_time is not None:
            assert initial.one_time_prekey_id is not None
            del self._one_time_prekeys[initial.one_time_prekey_id]
        if one_time_kem is not None:
            assert initial.kem_prekey_id is not None
            del self._one_time_kem_prekeys[initial.kem_prekey_id]
        if remember_base_key:
            spk.seen_base_keys.add(initial.base_key)
        if new_signed_prekey is not None:
            self._install_signed_prekey(new_signed_prekey, current_time)
        return session, plaintext

    def _find_signed_prekey(self, prekey_id: int, now: int) -> _SignedPrekey:
        for spk in self._signed_prekeys:
            if spk.prekey_id == prekey_id:
                if spk.retired_at is not None and now - spk.retired_at > SIGNED_PREKEY_GRACE_PERIOD:
                    break
                return spk
        raise HandshakeError("unknown or expired signed prekey")

    # --- persistence ---------------------------------------------------------------------

    def to_bytes(self, *, key: bytes | None = None, provider: Provider | None = None) -> bytes:
        """Serialize (canonical CBOR); with ``key`` (32 bytes) encrypted at rest."""
        fields = {
            2: self._identity_seed,
            3: self._post_quantum,
            4: self._next_prekey_id,
            5: [
                [
                    s.prekey_id,
                    s.timestamp,
                    s.private,
                    s.public,
                    s.signature,
                    s.kem_id,
                    s.kem_seed,
                    s.kem_public,
                    sorted(s.seen_base_keys),
                    s.retired_at,
                ]
                for s in self._signed_prekeys
            ],
            6: [
                [i, k.private, k.public, k.signature, k.published]
                for i, k in self._one_time_prekeys.items()
            ],
            7: [
                [i, k.private, k.public, k.signature, k.published]
                for i, k in self._one_time_kem_prekeys.items()
            ],
        }
        return dump(
            TYPE_ACCOUNT_STATE, fields, self._identity_key, key, provider or default_provider()
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, key: bytes | None = None) -> Account:
        """Load an account saved by :meth:`to_bytes`; raises :class:`e2ee.errors.StateError`."""
        value, envelope_id = load(data, TYPE_ACCOUNT_STATE, key)
        f = Fields(value)
        if set(f._map) != set(range(8)):
            raise StateError("account state has missing or unknown fields")
        post_quantum = f.boolean(3)
        signed = [_load_signed_prekey(item, post_quantum) for item in f.array(5)]
        if not signed or any(s.retired_at is None for s in signed[:-1]):
            raise StateError("account state has no current signed prekey")
        if signed[-1].retired_at is not None:
            raise StateError("account state has no current signed prekey")
        one_time = _load_one_time(f.array(6), X25519_KEY_SIZE, X25519_KEY_SIZE)
        one_time_kem = _load_one_time(f.array(7), MLKEM1024_SEED_SIZE, MLKEM1024_PUBLIC_KEY_SIZE)
        if one_time_kem and not post_quantum:
            raise StateError("classic account with ML-KEM prekeys")
        ids = [s.prekey_id for s in signed] + [s.kem_id for s in signed if s.kem_id is not None]
        ids += [*one_time, *one_time_kem]
        next_id = f.uint(4, MAX_COUNTER + 1)
        if len(set(ids)) != len(ids) or any(i >= next_id for i in ids):
            raise StateError("account state has duplicate or unissued prekey ids")
        if len(signed) > MAX_OLD_SIGNED_PREKEYS + 1:
            raise StateError("account state has too many signed prekeys")
        account = cls(
            identity_seed=f.bytes_(2, 32),
            post_quantum=post_quantum,
            next_prekey_id=next_id,
            signed_prekeys=signed,
            one_time_prekeys=one_time,
            one_time_kem_prekeys=one_time_kem,
        )
        if envelope_id is not None and envelope_id != account.identity_key:
            raise StateError("sealed envelope belongs to another account")
        return account


def _next_id_after(spk: _SignedPrekey) -> int:
    """The next free prekey id once ``spk`` is installed: after its ML-KEM companion's id, or
    after its own on a classic account."""
    return (spk.prekey_id if spk.kem_id is None else spk.kem_id) + 1


def _first_unpublished(keys: dict[int, _OneTimePrekey]) -> int | None:
    for prekey_id, key in keys.items():
        if not key.published:
            return prekey_id
    return None


def _load_signed_prekey(item: Any, post_quantum: bool) -> _SignedPrekey:
    if type(item) is not list or len(item) != 10:
        raise StateError("malformed signed prekey in state")
    (
        prekey_id,
        timestamp,
        private,
        public,
        signature,
        kem_id,
        kem_seed,
        kem_public,
        seen,
        retired,
    ) = item
    if post_quantum:
        kem_id = check_uint(kem_id, MAX_COUNTER)
        kem_seed = check_bytes(kem_seed, MLKEM1024_SEED_SIZE)
        kem_public = check_bytes(kem_public, MLKEM1024_PUBLIC_KEY_SIZE)
    elif (kem_id, kem_seed, kem_public) != (None, None, None):
        raise StateError("classic account with an ML-KEM prekey")
    if type(seen) is not list or len(seen) > MAX_BASE_KEYS_PER_PREKEY:
        raise StateError("malformed replay memory in state")
    seen_set = {check_bytes(k, X25519_KEY_SIZE) for k in seen}
    if len(seen_set) != len(seen):
        raise StateError("duplicate base keys in state")
    return _SignedPrekey(
        prekey_id=check_uint(prekey_id, MAX_COUNTER),
        timestamp=check_uint(timestamp, 2**63 - 1),
        private=check_bytes(private, 32),
        public=check_bytes(public, X25519_KEY_SIZE),
        signature=check_bytes(signature, ED25519_SIGNATURE_SIZE),
        kem_id=kem_id,
        kem_seed=kem_seed,
        kem_public=kem_public,
        seen_base_keys=seen_set,
        retired_at=None if retired is None else check_uint(retired, 2**63 - 1),
    )


def _load_one_time(
    items: list[Any], private_size: int, public_size: int
) -> dict[int, _OneTimePrekey]:
    if len(items) > MAX_ONE_TIME_PREKEYS:
        raise StateError("too many one-time prekeys in state")
    keys: dict[int, _OneTimePrekey] = {}
    for item in items:
        if type(item) is not list or len(item) != 5 or type(item[4]) is not bool:
            raise StateError("malformed one-time prekey in state")
        prekey_id = check_uint(item[0], MAX_COUNTER)
        if prekey_id in keys:
            raise StateError("duplicate one-time prekey id in state")
        keys[prekey_id] = _OneTimePrekey(
            private=check_bytes(item[1], private_size),
            public=check_bytes(item[2], public_size),
            signature=check_bytes(item[3], ED25519_SIGNATURE_SIZE),
            published=item[4],
        )
    return keys
