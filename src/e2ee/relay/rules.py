"""The relay's rules in plain Python: authentication, device lists, keys, claims, mailboxes.

Every operation is split in two: the method parses and checks whatever needs no stored state
(body shape, sizes, signatures that do not depend on the database) and returns a *job*, a
function of one storage transaction (:class:`e2ee.relay.storage.Tx`) that does the rest. The
caller runs the job with ``storage.run(job)`` (blocking) or ``await storage.submit(job)``
(the Starlette app); either way it is atomic. Every refusal is a typed
:class:`e2ee.errors.RelayError`; spec/relay.md is the normative description.

Time and randomness are injected (``clock``, ``provider``) so tests can move time and replay
randomness.
"""

from __future__ import annotations

import functools
import hmac
import math
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeVar

from e2ee.client.envelope import MAX_ENVELOPE_SIZE, Envelope
from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider, default_provider
from e2ee.errors import (
    DecodeError,
    DeviceListError,
    HandshakeError,
    MismatchedDevicesError,
    QueueFullError,
    RelayAuthError,
    RelayBadRequestError,
    RelayConflictError,
    RelayForbiddenError,
    RelayNotFoundError,
    RelayRateLimitedError,
    RelayTooLargeError,
)
from e2ee.handshake import signing
from e2ee.identity import SignedDeviceList
from e2ee.limits import (
    MAX_BUNDLE_SIZE,
    MAX_ONE_TIME_PREKEYS,
    MLKEM1024_PUBLIC_KEY_SIZE,
)
from e2ee.relay import api, tickets
from e2ee.relay.storage import KIND_EC, KIND_KEM, StoredList, Swept, TokenRow, Tx
from e2ee.relay.tickets import RegistrationTicket
from e2ee.wire import codec
from e2ee.wire.messages import PreKeyBundle

R = TypeVar("R")
Job = Callable[[Tx], R]

_U64 = struct.Struct(">Q")
_CHALLENGE_LABEL = b"e2ee/v1/relay/challenge\x00"
_MAX_FETCH_BYTES = 4 * 1024 * 1024


_POSITIVE_INTEGERS = (
    "challenge_ttl",
    "token_ttl",
    "message_ttl",
    "idempotency_ttl",
    "max_queue",
    "max_envelope_size",
    "max_send_body",
    "max_upload_batch",
    "max_upload_body",
    "max_stored_one_time",
    "max_ticket_lifetime",
    "sweep_batch",
    "max_streams_per_device",
)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Every limit of the relay (spec/relay.md, "Limits"): each TTL and size an integer of at
    least 1, checked when the configuration is made."""

    origin: str = "http://127.0.0.1:8080"
    challenge_ttl: int = 60
    token_ttl: int = 3600
    message_ttl: int = 30 * 24 * 3600
    idempotency_ttl: int = 24 * 3600
    max_queue: int = 10_000
    max_envelope_size: int = MAX_ENVELOPE_SIZE
    max_send_body: int = 8 * 1024 * 1024
    max_upload_batch: int = 100
    max_upload_body: int = 512 * 1024
    max_stored_one_time: int = MAX_ONE_TIME_PREKEYS
    claim_burst: int = 50
    """Claims a (claimer user, target user) bucket holds: an integer, at least 1."""
    claim_rate: float = 1.0
    """Claims per second refilled into the (claimer user, target user) bucket: finite, above
    0, and small enough to refill a bucket in finite time (``claim_burst / claim_rate``).
    0 would divide by zero in every claim and sweep; NaN would turn the limit off."""
    registration_key: bytes | None = None
    """The platform's registration authority (an Ed25519 public key, :mod:`e2ee.relay.tickets`):
    with it, a new user id is registered only with a ticket the authority signed for this
    origin, user id and user key. None (the default): open registration, the first validly
    self-signed list of a user id registers it."""
    max_ticket_lifetime: int = 24 * 3600
    """Longest validity (``expires - issued``) of a registration ticket the relay accepts."""
    sweep_batch: int = 10_000
    """Most rows one sweep job deletes from each table (expired messages, challenges, tokens,
    results; idle buckets), so that a job's time and memory do not grow with how much expired
    at once; the sweeper runs jobs back to back while they come back full."""
    max_streams_per_device: int = 2
    """Most WebSocket streams one device holds open on one relay process; a newer one closes
    the oldest with 4409. Every stream of a device is woken by each message queued for it, so
    without a bound a device opening thousands of streams made each message to it cost as many
    storage jobs. Two let a client's new connection overlap the old one it replaces."""

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTEGERS:  # a TTL or a size of 0, -1, True or 1.5 is a mistake
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1")
        if self.max_envelope_size > MAX_ENVELOPE_SIZE:  # Envelope.from_bytes refuses larger
            raise ValueError(f"max_envelope_size must be at most {MAX_ENVELOPE_SIZE}")
        if self.max_upload_body < self.max_upload_batch * 2 * (MLKEM1024_PUBLIC_KEY_SIZE + 80):
            raise ValueError("max_upload_body cannot hold a full batch")
        if type(self.claim_burst) is not int or self.claim_burst < 1:
            raise ValueError("claim_burst must be an integer of at least 1")
        rate = self.claim_rate
        if type(rate) not in (int, float) or not 0 < rate < math.inf:  # NaN compares false
            raise ValueError("claim_rate must be a finite number of claims per second above 0")
        try:
            refill = self.claim_burst / rate
        except OverflowError:
            refill = math.inf
        if refill == math.inf:
            raise ValueError("claim_burst / claim_rate (seconds to refill a bucket) is infinite")
        key = self.registration_key
        if key is not None and (
            type(key) is not bytes or not primitives.ed25519_is_valid_public_key(key)
        ):
            raise ValueError("registration_key must be a valid 32-byte Ed25519 public key")


@dataclass(frozen=True, slots=True)
class Auth:
    user: str
    device: int
    device_key: bytes

    def __repr__(self) -> str:
        return f"Auth({self.user!r}/{self.device})"


_KEM_WITHOUT_LAST_RESORT = "one-time ML-KEM keys without a last-resort ML-KEM key"


@dataclass(frozen=True, slots=True)
class CheckedUpload:
    """An upload whose every signature verified against ``device_key``."""

    device_key: bytes
    signed_bundle: bytes
    keys: tuple[tuple[tuple[int, bytes, bytes], ...], tuple[tuple[int, bytes, bytes], ...]]
    has_kem_prekey: bool
    """Whether the signed bundle carries a last-resort ML-KEM prekey."""

    def __repr__(self) -> str:
        return f"CheckedUpload({len(self.keys[0])} EC, {len(self.keys[1])} ML-KEM)"


@dataclass(frozen=True, slots=True)
class Sent:
    body: bytes
    wake: tuple[tuple[str, int], ...]


@functools.lru_cache(maxsize=4096)
def _bundle_fields(signed: bytes) -> dict[int, object]:
    """The fields of a stored signed bundle (validated at upload), memoised by its bytes.
    Callers copy before adding one-time keys."""
    fields: dict[int, object] = codec.decode(signed, max_size=MAX_BUNDLE_SIZE)
    return fields


class Relay:
    """The relay rules over a storage. Thread-safe; holds no mutable state of its own."""

    def __init__(
        self,
        secret: bytes,
        config: RelayConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        provider: Provider | None = None,
    ) -> None:
        if len(secret) != 32:
            raise ValueError("secret must be 32 bytes")
        self._secret = secret
        self.config = config or RelayConfig()
        self.clock = clock
        self.provider = provider or default_provider()

    @staticmethod
    def secret_job(provider: Provider | None = None) -> Job[bytes]:
        """The job that loads (creating on first start) the relay's challenge key."""
        fresh = (provider or default_provider()).random_bytes(32)
        return lambda tx: tx.secret("challenge_key", fresh)

    def __repr__(self) -> str:
        return f"Relay(origin={self.config.origin!r})"

    def now(self) -> int:
        return int(self.clock())

    # --- authentication --------------------------------------------------------------------

    def _challenge_tag(self, nonce: bytes, expires: int, user: str, device: int) -> bytes:
        data = _CHALLENGE_LABEL + codec.encode([nonce, expires, user.encode(), device])
        return primitives.hmac_sha256(self._secret, data)[:24]

    def challenge(self, body: bytes) -> bytes:
        """A fresh challenge for (user, device): ``nonce || expiry || tag``, authenticated by
        the relay's key, so issuing one stores nothing. No job needed."""
        v = api.decode_map(body, {0, 1}, limit=api.MAX_SMALL_BODY)
        user, device = api.user_field(v[0]), api.device_field(v[1])
        nonce = self.provider.random_bytes(16)
        expires = self.now() + self.config.challenge_ttl
        challenge = nonce + _U64.pack(expires) + self._challenge_tag(nonce, expires, user, device)
        return codec.encode({0: challenge, 1: expires})

    def login(self, body: bytes) -> Job[bytes]:
        v = api.decode_map(body, {0, 1, 2, 3}, limit=api.MAX_SMALL_BODY)
        user, device = api.user_field(v[0]), api.device_field(v[1])
        challenge = api.bytes_field(v[2], api.CHALLENGE_SIZE)
        signature = api.bytes_field(v[3], 64)
        nonce, expires, tag = challenge[:16], _U64.unpack(challenge[16:24])[0], challenge[24:]
        if not hmac.compare_digest(tag, self._challenge_tag(nonce, expires, user, device)):
            raise RelayAuthError("challenge was not issued by this relay for this device")
        if expires <= self.now():
            raise RelayAuthError("challenge expired", code="challenge_expired")
        payload = api.login_payload(self.config.origin, challenge, user, device)
        token = self.provider.random_bytes(api.TOKEN_SIZE)
        token_expires = self.now() + self.config.token_ttl

        def job(tx: Tx) -> bytes:
            # locked: a publication that removes the device waits, then purges the token
            listed = tx.device_list(user, lock="share")
            device_key = None if listed is None else listed.devices.get(device)
            if device_key is None:
                raise RelayAuthError("device is not on its user's newest device list")
            try:
                signing.verify(device_key, signing.relay_login_payload(payload), signature)
            except HandshakeError:
                raise RelayAuthError("challenge signature does not verify") from None
            if not tx.use_challenge(nonce, expires):
                raise RelayAuthError("challenge was already used", code="challenge_replayed")
            tx.put_token(
                primitives.sha256(token), TokenRow(user, device, device_key, token_expires)
            )
            return codec.encode({0: token, 1: token_expires})

        return job

    def authenticate(
        self, tx: Tx, token: bytes | None, *, lock: Literal["share"] | None = None
    ) -> Auth:
        """The token's device. ``lock="share"`` in a job that then stores something for that
        device (its keys, its results): where transactions run concurrently (PostgreSQL), a
        publication removing the device waits for the job and purges what it stored, or the
        job waits and finds the token gone (:meth:`Tx.token`). Jobs that only read, or only
        delete the device's own rows, authenticate without a lock (spec/relay.md REQ-RL-34)."""
        if token is None:
            raise RelayAuthError("no bearer token")
        row = tx.token(primitives.sha256(token), lock=lock)
        if row is None:
            raise RelayAuthError("unknown token")
        if row.expires <= self.now():
            raise RelayAuthError("token expired", code="token_expired")
        return Auth(row.user, row.device, row.device_key)

    def auth_job(self, token: bytes | None) -> Job[Auth]:
        return lambda tx: self.authenticate(tx, token)

    # --- device lists ----------------------------------------------------------------------

    def publish_device_list(self, body: bytes) -> Job[tuple[bytes, bool]]:
        """Register a user (first list) or replace its list by a newer one signed by the same
        user key. Devices that left the list, or whose key changed, are purged. With a
        registration authority configured, a first list needs a registration ticket for its
        user id and user key (:mod:`e2ee.relay.tickets`). Once registered, a user id stays
        bound to its user key, so a ticket admits nothing more after its first use."""
        v = api.decode_map(body, {0}, frozenset({1}), limit=api.MAX_SMALL_BODY)
        data = api.bytes_field(v[0])
        try:
            new = SignedDeviceList.from_bytes(data).device_list
        except DeviceListError:
            raise RelayBadRequestError(
                "not a validly signed device list", code="bad_device_list"
            ) from None
        entry = StoredList(
            api.check_user_id(new.user_id), new.user_key, new.counter, data, dict(new.devices)
        )
        ticket = self._ticket(v.get(1), entry) if 1 in v else None

        def job(tx: Tx) -> tuple[bytes, bool]:
            # locked before the purge: a job that stored something on the strength of the old
            # list or a token (a login, a send, an upload, a claim's result) either committed
            # first, and the purge sees what it stored, or waits and then reads the new list
            old = tx.device_list(entry.user, lock="update")
            if old is None:
                if self.config.registration_key is not None and ticket is None:
                    raise RelayForbiddenError(
                        "this relay registers a user only with a registration ticket",
                        code="ticket_required",
                    )
            else:
                if not hmac.compare_digest(old.user_key, entry.user_key):
                    raise RelayForbiddenError(
                        "device list is not signed by the registered user key",
                        code="user_key_mismatch",
                    )
                if entry.counter < old.counter or (
                    entry.counter == old.counter and old.signed != entry.signed
                ):
                    raise RelayConflictError(
                        "device list is not newer than the stored one", code="stale_device_list"
                    )
                for device, key in old.devices.items():
                    if entry.devices.get(device) != key:
                        tx.purge_device(entry.user, device)
            tx.put_device_list(entry)
            return codec.encode({0: entry.counter}), old is None

        return job

    def _ticket(self, value: object, entry: StoredList) -> RegistrationTicket:
        """The request's registration ticket, verified and checked against the list it comes
        with (CPU only). A relay without an authority refuses any ticket: the caller expects
        its registration to be checked, and it would not be."""
        authority = self.config.registration_key
        if authority is None:  # whatever the field holds
            raise RelayBadRequestError(
                "this relay has no registration authority", code="bad_ticket"
            )
        data = api.bytes_field(value)
        ticket = tickets.read_ticket(data, authority)
        tickets.check_ticket(
            ticket,
            origin=self.config.origin,
            user_id=entry.user,
            user_key=entry.user_key,
            now=self.now(),
            max_lifetime=self.config.max_ticket_lifetime,
        )
        return ticket

    def get_device_list(self, token: bytes | None, user: str) -> Job[bytes]:
        def job(tx: Tx) -> bytes:
            self.authenticate(tx, token)
            listed = tx.device_list(user)
            if listed is None:
                raise RelayNotFoundError("unknown user")
            return codec.encode({0: listed.signed})

        return job

    # --- keys ------------------------------------------------------------------------------

    def check_upload(self, auth: Auth, body: bytes) -> CheckedUpload:
        """Parse an upload and verify every signature with the device's key (CPU only)."""
        upload = api.KeyUpload.from_bytes(
            body, max_batch=self.config.max_upload_batch, limit=self.config.max_upload_body
        )
        try:
            bundle = PreKeyBundle.from_bytes(upload.signed_bundle)
        except DecodeError:
            raise RelayBadRequestError("malformed signed bundle", code="malformed") from None
        if not hmac.compare_digest(bundle.identity_key, auth.device_key):
            raise RelayForbiddenError(
                "bundle is not this device's identity key", code="wrong_identity_key"
            )
        if bundle.one_time_prekey_id is not None or bundle.one_time_kem_prekey_id is not None:
            raise RelayBadRequestError("signed bundle carries one-time keys", code="malformed")
        try:
            if not primitives.x25519_is_canonical(bundle.signed_prekey):
                raise HandshakeError("signed prekey is not canonical")
            signing.verify(
                auth.device_key,
                signing.signed_prekey_payload(
                    bundle.signed_prekey_id,
                    bundle.signed_prekey_timestamp,
                    bundle.signed_prekey,
                    bundle.kem_prekey_id,
                    bundle.kem_prekey,
                ),
                bundle.signed_prekey_signature,
            )
            if bundle.kem_prekey is not None:
                primitives.mlkem1024_check_public_key(bundle.kem_prekey)
            ec = []
            for k in upload.one_time:
                if not primitives.x25519_is_canonical(k.public):
                    raise HandshakeError("one-time prekey is not a canonical X25519 key")
                payload = signing.one_time_prekey_payload(k.key_id, k.public)
                signing.verify(auth.device_key, payload, k.signature)
                ec.append((k.key_id, k.public, k.signature))
            kem = []
            for k in upload.one_time_kem:
                primitives.mlkem1024_check_public_key(k.public)
                payload = signing.one_time_kem_prekey_payload(k.key_id, k.public)
                signing.verify(auth.device_key, payload, k.signature)
                kem.append((k.key_id, k.public, k.signature))
        except HandshakeError as exc:  # SignatureError included
            raise RelayBadRequestError(
                f"uploaded key refused: {exc}", code="bad_signature"
            ) from None
        if kem and bundle.kem_prekey is None:
            raise RelayBadRequestError(_KEM_WITHOUT_LAST_RESORT)
        return CheckedUpload(
            auth.device_key,
            upload.signed_bundle,
            (tuple(ec), tuple(kem)),
            bundle.kem_prekey is not None,
        )

    def store_upload(self, token: bytes | None, checked: CheckedUpload) -> Job[bytes]:
        def job(tx: Tx) -> bytes:
            auth = self.authenticate(tx, token, lock="share")  # it stores the device's keys
            if not hmac.compare_digest(auth.device_key, checked.device_key):
                raise RelayConflictError("device key changed during upload")
            # A claim hands out one-time ML-KEM keys only beside a last-resort ML-KEM key
            # (_bundle): a bundle without one would strand the stored ones, and claims would
            # then give out the bundle alone while keys remain (REQ-RL-08).
            if not checked.has_kem_prekey and tx.one_time_count(auth.user, auth.device, KIND_KEM):
                raise RelayBadRequestError(_KEM_WITHOUT_LAST_RESORT)
            tx.put_signed_bundle(auth.user, auth.device, checked.signed_bundle)
            counts = []
            for kind, keys in ((KIND_EC, checked.keys[0]), (KIND_KEM, checked.keys[1])):
                mark = tx.high_water(auth.user, auth.device, kind)
                # Ids at or below the mark were accepted before (stored, or already claimed):
                # a re-upload after a crash must never bring a claimed key back.
                new = [k for k in keys if k[0] > mark]
                stored = tx.one_time_count(auth.user, auth.device, kind)
                if stored + len(new) > self.config.max_stored_one_time:
                    raise RelayTooLargeError(
                        f"more than {self.config.max_stored_one_time} stored one-time keys",
                        code="too_many_keys",
                    )
                tx.add_one_time(auth.user, auth.device, kind, new)
                counts.append(stored + len(new))
            return codec.encode({0: counts[0], 1: counts[1]})

        return job

    def key_counts(self, token: bytes | None) -> Job[bytes]:
        def job(tx: Tx) -> bytes:
            auth = self.authenticate(tx, token)
            return codec.encode(
                {
                    0: tx.one_time_count(auth.user, auth.device, KIND_EC),
                    1: tx.one_time_count(auth.user, auth.device, KIND_KEM),
                    2: tx.signed_bundle(auth.user, auth.device) is not None,
                }
            )

        return job

    # --- claims ----------------------------------------------------------------------------

    def claim(self, token: bytes | None, body: bytes) -> Job[bytes]:
        v = api.decode_map(body, {0, 1}, frozenset({2}), limit=api.MAX_SMALL_BODY)
        target = api.user_field(v[0])
        claim_id = api.bytes_field(v[1], api.CLAIM_ID_SIZE)
        wanted: set[int] | None = None
        if v.get(2) is not None:
            wanted = {api.device_field(d) for d in api.list_field(v[2], 64)}
        now = self.clock()

        def job(tx: Tx) -> bytes:
            # locked: the result is stored for the claiming device (purged with it); the
            # target's list is read without a lock, as the claim stores nothing for its
            # devices (it only deletes one-time keys, which a purge deletes anyway)
            auth = self.authenticate(tx, token, lock="share")
            key = primitives.sha256(
                codec.encode([auth.user.encode(), auth.device, claim_id, target.encode()])
            )
            done = tx.result("claim", key)
            if done is not None:
                return done  # a retried claim gets the same bundles and costs nothing
            listed = tx.device_list(target)
            if listed is None:
                raise RelayNotFoundError("unknown user")
            self._take_claim_token(tx, auth.user, target, now)
            bundles: list[list[object]] = []
            without: list[int] = []
            for device in sorted(listed.devices):
                if wanted is not None and device not in wanted:
                    continue
                if target == auth.user and device == auth.device:
                    continue
                signed = tx.signed_bundle(target, device)
                if signed is None:
                    without.append(device)
                    continue
                bundles.append([device, self._bundle(tx, target, device, signed)])
            response = codec.encode({0: bundles, 1: without})
            tx.put_result(
                "claim",
                key,
                (auth.user, auth.device),
                response,
                int(now) + self.config.idempotency_ttl,
            )
            return response

        return job

    def _bundle(self, tx: Tx, user: str, device: int, signed: bytes) -> bytes:
        """The signed bundle with one claimed one-time key of each kind added (map keys 9-11
        and 12-14 of the bundle layout, wire.md), or alone when none is left."""
        fields = dict(_bundle_fields(signed))
        ec = tx.claim_one_time(user, device, KIND_EC)
        if ec is not None:
            fields[9], fields[10], fields[11] = ec
        if 8 in fields:  # a last-resort ML-KEM key: one-time ML-KEM keys may go with it
            kem = tx.claim_one_time(user, device, KIND_KEM)
            if kem is not None:
                fields[12], fields[13], fields[14] = kem
        return codec.encode(fields)

    def _take_claim_token(self, tx: Tx, claimer: str, target: str, now: float) -> None:
        key = primitives.sha256(b"claim\x00" + codec.encode([claimer.encode(), target.encode()]))
        burst, rate = float(self.config.claim_burst), self.config.claim_rate
        found = tx.bucket(key)
        tokens = burst if found is None else min(burst, found[0] + (now - found[1]) * rate)
        if tokens < 1.0:
            wait = max(1, int((1.0 - tokens) / rate + 0.999))
            raise RelayRateLimitedError(
                "too many claims for this user; retry later", retry_after=wait
            )
        tx.put_bucket(key, tokens - 1.0, now)

    # --- messages --------------------------------------------------------------------------

    def send(self, token: bytes | None, body: bytes) -> Job[Sent]:
        """Store one envelope per device of the recipient, all or none."""
        cfg = self.config
        request = api.SendRequest.from_bytes(
            body, max_envelope=cfg.max_envelope_size, limit=cfg.max_send_body
        )
        envelopes = []
        for device, _, data in request.messages:
            try:
                envelope = Envelope.from_bytes(data)
            except DecodeError:
                raise RelayBadRequestError("malformed envelope", code="bad_envelope") from None
            if (
                envelope.recipient_user != request.recipient
                or envelope.recipient_device != device
                or not hmac.compare_digest(envelope.message_id, request.client_message_id)
            ):
                raise RelayBadRequestError(
                    "envelope routing differs from the request", code="bad_envelope"
                )
            envelopes.append(envelope)
        now = self.now()

        def job(tx: Tx) -> Sent:
            auth = self.authenticate(tx, token, lock="share")  # the result is the sender's
            for envelope in envelopes:
                if envelope.sender_user != auth.user or envelope.sender_device != auth.device:
                    raise RelayForbiddenError("envelope names another sender", code="bad_envelope")
            key = primitives.sha256(
                codec.encode(
                    [
                        auth.user.encode(),
                        auth.device,
                        request.recipient.encode(),
                        request.client_message_id,
                    ]
                )
            )
            done = tx.result("send", key)
            if done is not None:
                return Sent(done, ())  # stored once; a retry is answered the same
            listed = tx.device_list(request.recipient, lock="share")  # messages for its devices
            if listed is None:
                raise RelayNotFoundError("unknown user")
            expected = listed.devices
            if request.recipient == auth.user:  # a copy to the sender's other devices
                expected = {d: k for d, k in expected.items() if d != auth.device}
            given = {d: k for d, k, _ in request.messages}
            if given != expected:  # identity keys are public: no constant time needed
                _refuse_mismatch(expected, given)
            full = tuple(
                d for d in sorted(given) if tx.queue_length(request.recipient, d) >= cfg.max_queue
            )
            if full:
                raise QueueFullError("a recipient device's queue is full", devices=full)
            expires = now + cfg.message_ttl
            for device, _, data in request.messages:
                tx.enqueue(request.recipient, device, data, expires)
            response = _stored_count(len(request.messages))
            tx.put_result(
                "send", key, (auth.user, auth.device), response, now + cfg.idempotency_ttl
            )
            return Sent(response, tuple((request.recipient, d) for d in sorted(given)))

        return job

    def fetch(self, token: bytes | None, after: int, limit: int) -> Job[bytes]:
        limit = max(1, min(limit, api.MAX_FETCH))
        now = self.now()

        def job(tx: Tx) -> bytes:
            auth = self.authenticate(tx, token)
            rows, more = self.fetch_rows(tx, auth, after, limit, now)
            return codec.encode({0: [[i, e] for i, e in rows], 1: more})

        return job

    def pending(self, token: bytes | None, after: int, limit: int) -> Job[list[tuple[int, bytes]]]:
        """The next queued messages (for the WebSocket push; re-authenticates every time, so
        an expired token or a removed device stops the stream)."""
        return lambda tx: self.fetch_rows(tx, self.authenticate(tx, token), after, limit)[0]

    def fetch_rows(
        self, tx: Tx, auth: Auth, after: int, limit: int, now: int | None = None
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """A page: at most ``limit`` messages after ``after`` and at most _MAX_FETCH_BYTES of
        envelopes (but at least one message), and whether a message was left out (``more``).
        The storage reads one message past the page, the one over the count or the byte
        budget, so that it knows; and no more than that. A first envelope alone over the budget
        does not end the storage's read, so a page of it alone says more only when a message
        follows it."""
        rows = tx.fetch(
            auth.user,
            auth.device,
            after,
            limit + 1,
            self.now() if now is None else now,
            _MAX_FETCH_BYTES,
        )
        total = 0
        for index, (_, envelope) in enumerate(rows):
            total += len(envelope)
            if index == limit or (index > 0 and total > _MAX_FETCH_BYTES):
                del rows[index:]  # the first message left out: by the count or the bytes
                return rows, True
        return rows, False

    def ack(self, token: bytes | None, body: bytes) -> Job[bytes]:
        return self.ack_ids(token, api.ack_ids(body, limit=api.MAX_SMALL_BODY))

    def ack_ids(self, token: bytes | None, ids: Sequence[int]) -> Job[bytes]:
        def job(tx: Tx) -> bytes:
            auth = self.authenticate(tx, token)
            return codec.encode({0: tx.ack(auth.user, auth.device, ids)})

        return job

    def sweep(self) -> Job[Swept]:
        """One bounded sweep job: delete what has expired, and claim-rate buckets idle long
        enough to be full again (a full bucket and no bucket mean the same), so that table does
        not grow with every (claimer, target) pair ever seen; at most ``sweep_batch`` rows of
        each table. Returns the number of expired messages deleted and whether the job stopped
        at the bound somewhere (``more``: run another job; spec/relay.md REQ-RL-41)."""
        now = self.now()
        refill = self.config.claim_burst / self.config.claim_rate
        limit = self.config.sweep_batch

        def job(tx: Tx) -> Swept:
            swept = tx.sweep(now, limit)
            if tx.drop_buckets(now - refill, limit) >= limit:
                return Swept(swept.messages, True)
            return swept

        return job


def _refuse_mismatch(expected: Mapping[int, bytes], given: Mapping[int, bytes]) -> NoReturn:
    missing = tuple(sorted(set(expected) - set(given)))
    extra = tuple(sorted(set(given) - set(expected)))
    stale = tuple(sorted(d for d in set(given) & set(expected) if given[d] != expected[d]))
    raise MismatchedDevicesError(
        "the sender's view of the recipient's devices is out of date",
        missing=missing,
        extra=extra,
        stale=stale,
    )


@functools.lru_cache(maxsize=64)
def _stored_count(count: int) -> bytes:
    """The answer to an accepted send (the same few bytes every time)."""
    return codec.encode({0: count})
