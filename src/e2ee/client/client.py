"""The client engine: one device of one user, on one durable store.

The application moves bytes: it uploads what :meth:`Client.prekeys_to_upload` and
:meth:`Client.device_list` give, hands :meth:`Client.send`'s envelopes to its transport, and
passes every envelope that arrives to :meth:`Client.receive`. Everything else (sessions, trust,
device lists, prekeys, exactly-once delivery) happens here, each step in one SQLite transaction.
"""

from __future__ import annotations

import dataclasses
import hmac
import sqlite3
import time
from pathlib import Path
from typing import Protocol

from e2ee.account import Account
from e2ee.client import devices, sessions, trust
from e2ee.client.envelope import MAX_BODY_SIZE, MESSAGE_ID_SIZE, Content, Envelope
from e2ee.client.events import Event, Message, ReceiveResult
from e2ee.client.prekeys import PrekeyPolicy, PrekeyUpload, maintain, pending_upload
from e2ee.client.store import Store, column
from e2ee.config import SessionConfig
from e2ee.crypto.provider import Provider
from e2ee.errors import (
    AuthenticationError,
    DecodeError,
    LinkError,
    LocalError,
    NoSessionError,
    StateError,
    UnknownDeviceError,
    UntrustedIdentityError,
)
from e2ee.identity import DeviceList, SignedDeviceList, UserIdentity
from e2ee.peek import peek
from e2ee.safety import SafetyNumber, safety_number
from e2ee.session import Session
from e2ee.wire.messages import PreKeyBundle

FIRST_DEVICE_ID = 1
PROCESSED_RETENTION = 31 * 24 * 3600
"""How long (seconds) a receive remembers an envelope's id to report a redelivery as a
duplicate: the relay's message TTL (30 days by default) plus a day for the difference between
the relay's clock and this device's (spec/client.md, section 3)."""


class Directory(Protocol):
    """Where the client fetches other users' device lists and prekey bundles (the relay:
    :class:`e2ee.relay.client.RelayClient`; tests:
    :class:`e2ee.client.memory.InMemoryDirectory`)."""

    def device_list(self, user_id: str) -> bytes | None: ...

    def bundle(self, user_id: str, device_id: int) -> bytes | None: ...


class Client:
    """One device. Safe to share between threads; several processes may open the same store."""

    def __init__(
        self,
        store: Store,
        *,
        policy: trust.TrustPolicy = "warn",
        prekey_policy: PrekeyPolicy | None = None,
        config: SessionConfig | None = None,
        processed_retention: int = PROCESSED_RETENTION,
    ) -> None:
        if policy not in ("block", "warn"):
            raise ValueError("policy must be 'block' or 'warn'")
        if type(processed_retention) is not int or processed_retention <= 0:
            raise ValueError("processed_retention must be a positive number of seconds")
        self.processed_retention = processed_retention
        self._store = store
        self.policy: trust.TrustPolicy = policy
        self.prekey_policy = prekey_policy or PrekeyPolicy()
        self._config = config
        with store.transaction() as conn:
            user_id = store.get_meta(conn, "user_id")
            device_key = store.get_meta(conn, "device_key")
            if user_id is None or device_key is None:
                raise LocalError("this store holds no client; use Client.create or create_linked")
            self._user_id = column(user_id, str, "user id")
            self._device_key = column(device_key, bytes, "device key")
            # Loading the account now checks the store key (a wrong key, or none for an
            # encrypted store, is a StateError here, before any call can act on the store).
            if self._account(conn).identity_key != self._device_key:
                raise StateError("the account does not match this store's device key")

    # --- creation --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        user_id: str,
        *,
        key: bytes | None = None,
        provider: Provider | None = None,
        now: int | None = None,
        **options: object,
    ) -> Client:
        """The first device of a new user: makes the user identity key, the device account and
        the first signed device list (counter 1, this device as id 1)."""
        store = Store(path, key=key, provider=provider)
        identity = UserIdentity.generate(provider=store.provider)
        account = Account.generate(provider=store.provider, now=now)
        signed = identity.sign_device_list(user_id, 1, {FIRST_DEVICE_ID: account.identity_key})
        with store.transaction() as conn:
            if store.get_meta(conn, "user_id") is not None:
                raise LocalError("this store already holds a client")
            cls._init_store(conn, store, user_id, account)
            store.set_meta(conn, "device_id", FIRST_DEVICE_ID)
            conn.execute(
                "INSERT INTO user_identity VALUES (1, ?)",
                (identity.to_bytes(key=store.key, provider=store.provider),),
            )
            conn.execute(
                "INSERT INTO identities (user_id, identity_key, verified) VALUES (?, ?, 1)",
                (user_id, identity.public_key),
            )
            conn.execute("INSERT INTO device_lists VALUES (?, 1, ?)", (user_id, signed.to_bytes()))
        return cls(store, **options)  # type: ignore[arg-type]

    @classmethod
    def create_linked(
        cls,
        path: str | Path,
        user_id: str,
        *,
        key: bytes | None = None,
        provider: Provider | None = None,
        now: int | None = None,
        **options: object,
    ) -> Client:
        """A new device for an existing user; show :meth:`link_code`, send
        :meth:`link_request` to a device holding the user key, then :meth:`complete_link`."""
        store = Store(path, key=key, provider=provider)
        account = Account.generate(provider=store.provider, now=now)
        code = devices.new_code(store.provider.random_bytes(7))
        request = devices.LinkRequest.make(
            user_id,
            account.identity_key,
            store.provider.random_bytes(devices.LINK_NONCE_SIZE),
            code,
        )
        with store.transaction() as conn:
            if store.get_meta(conn, "user_id") is not None:
                raise LocalError("this store already holds a client")
            cls._init_store(conn, store, user_id, account)
            store.set_meta(conn, "link_code", store.seal_link_code(code))
            store.set_meta(conn, "link_request", request.to_bytes())
        return cls(store, **options)  # type: ignore[arg-type]

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        key: bytes | None = None,
        provider: Provider | None = None,
        now: int | None = None,
        **options: object,
    ) -> Client:
        """Open an existing device's store (``now``: see :class:`Store`, for a migration). A
        missing file is a :class:`StoreError` and a file holding no client a
        :class:`LocalError`; neither is written to."""
        store = Store(path, key=key, provider=provider, now=now, create=False)
        return cls(store, **options)  # type: ignore[arg-type]

    @staticmethod
    def _init_store(conn: sqlite3.Connection, store: Store, user_id: str, account: Account) -> None:
        store.set_meta(conn, "user_id", user_id)
        store.set_meta(conn, "device_key", account.identity_key)
        conn.execute(
            "INSERT INTO account VALUES (1, ?)",
            (account.to_bytes(key=store.key, provider=store.provider),),
        )

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"Client(user_id={self._user_id!r}, device_id={self.device_id})"

    # --- properties ------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self._store

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def device_key(self) -> bytes:
        """This device's identity public key (its account's)."""
        return self._device_key

    @property
    def device_id(self) -> int | None:
        """None until a linked device completed linking."""
        with self._store.transaction() as conn:
            return self._device_id_in(conn)

    def _device_id_in(self, conn: sqlite3.Connection) -> int | None:
        value = self._store.get_meta(conn, "device_id")
        return None if value is None else column(value, int, "device id")

    def _require_device_id(self, conn: sqlite3.Connection) -> int:
        value = self._device_id_in(conn)
        if value is None:
            raise LocalError("this device is not linked yet")
        return value

    @property
    def user_key(self) -> bytes | None:
        """The user identity public key this device trusts for its own user."""
        with self._store.transaction() as conn:
            known = trust.identity(conn, self._user_id)
        return None if known is None else known[0]

    def device_list(self) -> bytes:
        """The newest signed device list of this device's own user (to publish)."""
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT signed FROM device_lists WHERE user_id = ?", (self._user_id,)
            ).fetchone()
        if row is None:
            raise LocalError("no device list yet (link this device first)")
        return column(row[0], bytes, "device list")

    # --- linking ---------------------------------------------------------------------------

    @property
    def link_code(self) -> str:
        """The short code a new device shows until it is linked."""
        with self._store.transaction() as conn:
            return self._pending_link_code(conn)

    def link_request(self) -> bytes:
        with self._store.transaction() as conn:
            return self._pending_link_request(conn)

    def _pending_link_code(self, conn: sqlite3.Connection) -> str:
        stored = self._store.get_meta(conn, "link_code")
        if stored is None:
            raise LocalError("this device is not waiting to be linked")
        return self._store.open_link_code(stored)

    def _pending_link_request(self, conn: sqlite3.Connection) -> bytes:
        request = self._store.get_meta(conn, "link_request")
        if request is None:
            raise LocalError("this device is not waiting to be linked")
        if type(request) is not bytes:
            raise StateError("malformed pending link request")
        return request

    def approve_link(self, request: bytes, code: str) -> bytes:
        """On a device holding the user key: check the code the user typed against the request,
        add the new device to a new signed device list, and return the approval to send back."""
        parsed = devices.LinkRequest.from_bytes(request)
        if parsed.user_id != self._user_id:
            raise LinkError("link request is for another user")
        parsed.check(code)
        with self._store.transaction() as conn:
            identity = self._user_identity(conn)
            current = self._own_list(conn)
            entries = dict(current.devices)
            if parsed.device_key in entries.values():
                raise LinkError("this device is already linked")
            # Device ids are never reused (sessions and the processed log are keyed by them).
            issued = self._store.get_meta(conn, "next_device_id")
            next_id = 0 if issued is None else column(issued, int, "next device id")
            device_id = max(max(entries) + 1, next_id)
            self._store.set_meta(conn, "next_device_id", device_id + 1)
            entries[device_id] = parsed.device_key
            signed = identity.sign_device_list(self._user_id, current.counter + 1, entries)
            devices.accept(conn, signed.to_bytes(), self._user_id, self.policy)
            self._emit(conn, [Event("device_list_changed", self._user_id, device_id, "linked")])
        return devices.LinkApproval.make(parsed, code, device_id, signed.to_bytes()).to_bytes()

    def complete_link(self, approval: bytes) -> list[Event]:
        """On the new device: check the approval and adopt the user key and device list."""
        parsed = devices.LinkApproval.from_bytes(approval)
        with self._store.transaction() as conn:
            code = self._pending_link_code(conn)
            request = devices.LinkRequest.from_bytes(self._pending_link_request(conn))
            parsed.check(request, code)
            device_list = SignedDeviceList.from_bytes(parsed.signed_device_list).device_list
            if (
                device_list.user_id != self._user_id
                or device_list.device_key(parsed.device_id) != self._device_key
            ):
                raise LinkError("the approved device list does not name this device")
            known = conn.execute(
                "SELECT identity_key FROM identities WHERE user_id = ?", (self._user_id,)
            ).fetchone()
            if known is None or known[0] != device_list.user_key:
                # a list this device took for its own user before the link, under another
                # key, goes with that key (REQ-CL-30); kept, a forged one with a high counter
                # made the genuine approval "older" for good
                conn.execute("DELETE FROM device_lists WHERE user_id = ?", (self._user_id,))
            conn.execute(
                "INSERT OR REPLACE INTO identities (user_id, identity_key, verified) "
                "VALUES (?, ?, 1)",
                (self._user_id, device_list.user_key),
            )
            _, events = devices.accept(conn, parsed.signed_device_list, self._user_id, "block")
            self._store.set_meta(conn, "device_id", parsed.device_id)
            conn.execute("DELETE FROM meta WHERE name IN ('link_code', 'link_request')")
            self._emit(conn, events)
        return events

    def remove_device(self, device_id: int) -> bytes:
        """On a device holding the user key: sign a new list without ``device_id``."""
        with self._store.transaction() as conn:
            identity = self._user_identity(conn)
            current = self._own_list(conn)
            entries = dict(current.devices)
            if device_id not in entries or device_id == self._require_device_id(conn):
                raise ValueError("not another device of this user")
            del entries[device_id]
            signed = identity.sign_device_list(self._user_id, current.counter + 1, entries)
            devices.accept(conn, signed.to_bytes(), self._user_id, self.policy)
            self._emit(conn, [Event("device_list_changed", self._user_id, device_id, "removed")])
        return signed.to_bytes()

    def _user_identity(self, conn: sqlite3.Connection) -> UserIdentity:
        row = conn.execute("SELECT state FROM user_identity WHERE id = 1").fetchone()
        if row is None:
            raise LocalError("this device does not hold the user identity key")
        state = column(row[0], bytes, "user identity state")
        return UserIdentity.from_bytes(state, key=self._store.key)

    def _own_list(self, conn: sqlite3.Connection) -> DeviceList:
        current = devices.stored_list(conn, self._user_id)
        if current is None:
            raise LocalError("no own device list")
        return current

    # --- prekeys ---------------------------------------------------------------------------

    def prekeys_to_upload(
        self, *, stored: tuple[int, int] | None = None, now: int | None = None
    ) -> PrekeyUpload:
        """Refill one-time prekeys and rotate the signed prekey as the policy says, then
        return what the directory needs (call :meth:`mark_uploaded` once it accepted it).
        ``stored``: the (EC, ML-KEM) one-time key counts the directory reports for this device
        (``GET /v1/keys``); without them only unpublished keys count as supply, and no key
        handed out is ever discarded to make room (spec/client.md [REQ-CL-34])."""
        current = int(time.time()) if now is None else now
        if stored is not None and (
            len(stored) != 2 or any(type(n) is not int or n < 0 for n in stored)
        ):
            raise ValueError("stored must be two non-negative integers")
        with self._store.transaction() as conn:
            device_id = self._require_device_id(conn)
            account = self._account(conn)
            if maintain(account, self.prekey_policy, self._store.provider, current, stored):
                self._save_account(conn, account)
            return pending_upload(account, self._user_id, device_id)

    def sign_relay_login(self, payload: bytes) -> bytes:
        """Sign a relay login challenge with this device's identity key. The signature covers
        ``SIG_LABEL_RELAY_LOGIN || payload``, so whatever bytes a relay chooses, it never gets a
        signature that is valid for any other purpose (spec/relay.md, "Authentication")."""
        if not isinstance(payload, bytes):
            raise TypeError("payload must be bytes")
        with self._store.transaction() as conn:
            account = self._account(conn)
        return account.sign_relay_login(payload)

    def mark_uploaded(self, upload: PrekeyUpload) -> None:
        with self._store.transaction() as conn:
            account = self._account(conn)
            account.mark_published(upload.prekey_ids)
            self._save_account(conn, account)

    def prekey_counts(self) -> tuple[int, int]:
        """(unpublished one-time EC prekeys, unpublished one-time ML-KEM prekeys)."""
        with self._store.transaction() as conn:
            account = self._account(conn)
        return (
            account.unpublished_one_time_prekey_count(),
            account.unpublished_one_time_kem_prekey_count(),
        )

    def _account(self, conn: sqlite3.Connection) -> Account:
        row = conn.execute("SELECT state FROM account WHERE id = 1").fetchone()
        if row is None:
            raise StateError("no account in the client store")
        return Account.from_bytes(column(row[0], bytes, "account state"), key=self._store.key)

    def _save_account(self, conn: sqlite3.Connection, account: Account) -> None:
        conn.execute(
            "UPDATE account SET state = ? WHERE id = 1",
            (account.to_bytes(key=self._store.key, provider=self._store.provider),),
        )

    # --- device lists and trust --------------------------------------------------------------

    def process_device_list(self, data: bytes, user_id: str) -> list[Event]:
        """Accept a signed device list for ``user_id`` (from the directory)."""
        try:
            with self._store.transaction() as conn:
                _, events = devices.accept(conn, data, user_id, self.policy)
                self._emit(conn, events)
                return events
        except UntrustedIdentityError:
            self._record_pending(data)
            raise

    def _record_pending(self, data: bytes) -> None:
        new = SignedDeviceList.from_bytes(data).device_list
        with self._store.transaction() as conn:
            trust.record_pending(conn, new.user_id, new.user_key)

    def approve_identity(self, user_id: str, *, key: bytes | None = None) -> bool:
        """Accept the pending new identity key of ``user_id`` (after UntrustedIdentityError);
        its old device list and sessions are dropped, verification is cleared. Returns True.

        With ``key`` (the pending key the user compared safety numbers for), only that key is
        accepted: if another key became pending meanwhile, nothing changes and the result is
        False. Without any pending change: :class:`LocalError`, with or without ``key``."""
        with self._store.transaction() as conn:
            known = trust.identity(conn, user_id)
            if known is None or known[2] is None:
                raise LocalError("no pending identity change for this user")
            if key is not None and not hmac.compare_digest(known[2], key):
                return False
            trust.replace(conn, user_id, known[2])
            conn.execute("DELETE FROM sessions WHERE peer_user = ?", (user_id,))
            self._emit(conn, [Event("identity_changed", user_id, detail="approved")])
        return True

    def identity_key_of(self, user_id: str) -> bytes | None:
        with self._store.transaction() as conn:
            known = trust.identity(conn, user_id)
        return None if known is None else known[0]

    def known_identities(self) -> list[trust.KnownIdentity]:
        """Every user whose identity key this device holds (its own user included), in user-id
        order, with whether it is verified and whether a key change is pending."""
        with self._store.transaction() as conn:
            return trust.known(conn)

    def is_verified(self, user_id: str) -> bool:
        with self._store.transaction() as conn:
            known = trust.identity(conn, user_id)
        return known is not None and known[1]

    def safety_number(self, user_id: str) -> SafetyNumber:
        own = self.user_key
        other = self.identity_key_of(user_id)
        if own is None or other is None:
            raise LocalError("no identity key known for this user")
        return safety_number(own, self._user_id, other, user_id)

    def mark_verified(
        self, user_id: str, scanned: bytes | None = None, *, key: bytes | None = None
    ) -> bool:
        """Record that the user compared safety numbers (or, with ``scanned``, check the payload
        scanned from the peer's screen first). With ``key``, only if that is still the user's
        key (the one whose safety number was compared). Returns whether ``user_id`` is now
        verified."""
        number = self.safety_number(user_id)
        if scanned is not None and not number.matches_scanned(scanned):
            return False
        with self._store.transaction() as conn:
            known = trust.identity(conn, user_id)
            if known is None or number != self._safety_in(conn, user_id, known[0]):
                return False  # the key changed in the meantime
            if key is not None and not hmac.compare_digest(known[0], key):
                return False
            trust.set_verified(conn, user_id, True)
        return True

    def _safety_in(self, conn: sqlite3.Connection, user_id: str, key: bytes) -> SafetyNumber:
        own = trust.identity(conn, self._user_id)
        assert own is not None
        return safety_number(own[0], self._user_id, key, user_id)

    # --- sending ---------------------------------------------------------------------------

    def send(
        self,
        to_user: str,
        body: bytes,
        directory: Directory | None = None,
        *,
        now: int | None = None,
    ) -> list[Envelope]:
        """Encrypt ``body`` to every device of ``to_user``'s newest list and to this user's
        other devices. With a ``directory``, the device lists are refreshed first and bundles
        are fetched for devices without a session."""
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        if len(body) > MAX_BODY_SIZE:
            raise ValueError(f"body is larger than {MAX_BODY_SIZE} bytes")
        users = [to_user] if to_user == self._user_id else [to_user, self._user_id]
        if directory is not None:
            for user in users:
                data = directory.device_list(user)
                if data is not None:
                    self.process_device_list(data, user)
        with self._store.transaction() as conn:
            device_id = self._require_device_id(conn)
            targets = self._targets(conn, users, device_id)
            missing = [
                (user, device, key)
                for user, device, key in targets
                if not self._has_session(conn, user, device, key)
            ]
        bundles: dict[tuple[str, int], PreKeyBundle] = {}
        if directory is not None:
            for user, device, key in missing:
                data = directory.bundle(user, device)
                if data is None:
                    continue
                bundle = PreKeyBundle.from_bytes(data)
                if bundle.identity_key != key:
                    raise UnknownDeviceError("bundle does not belong to the listed device")
                bundles[(user, device)] = bundle

        message_id = self._store.provider.random_bytes(MESSAGE_ID_SIZE)
        content = Content(message_id, to_user, body, self._user_id, device_id).to_bytes()
        envelopes: list[Envelope] = []
        with self._store.transaction() as conn:
            own_list = conn.execute(
                "SELECT signed FROM device_lists WHERE user_id = ?", (self._user_id,)
            ).fetchone()[0]
            account: Account | None = None
            events: list[Event] = []
            for user, device, key in self._targets(conn, users, device_id):
                session = sessions.active(conn, self._store, user, device)
                new = session is None or session.peer_identity_key != key
                if new:
                    found = bundles.get((user, device))
                    if found is None:
                        if user == to_user and to_user != self._user_id:
                            raise NoSessionError(
                                f"no session with {user!r}/{device} and no bundle to start one"
                            )
                        continue  # an own device without a bundle misses this copy
                    if found.identity_key != key:
                        # The bundle was checked against the list of the first transaction; a
                        # newer list accepted meanwhile may give this device another key.
                        raise UnknownDeviceError("bundle does not belong to the listed device")
                    account = account or self._account(conn)
                    session = account.start_session(
                        found, config=self._config, provider=self._store.provider, now=now
                    )
                    events.append(Event("session_new", user, device))
                assert session is not None
                wire = session.encrypt(content, provider=self._store.provider)
                sessions.save(conn, self._store, user, device, session, make_active=new)
                envelopes.append(
                    Envelope(
                        sender_user=self._user_id,
                        sender_device=device_id,
                        recipient_user=user,
                        recipient_device=device,
                        message_id=message_id,
                        payload=wire,
                        sender_device_list=own_list if session.awaiting_reply else None,
                    )
                )
            self._emit(conn, events)
        return envelopes

    def _targets(
        self, conn: sqlite3.Connection, users: list[str], own_device: int
    ) -> list[tuple[str, int, bytes]]:
        targets: list[tuple[str, int, bytes]] = []
        for user in users:
            known = trust.identity(conn, user)
            if known is not None and known[2] is not None and self.policy == "block":
                raise UntrustedIdentityError(
                    f"the identity key of user {user!r} changed; approve it first", user_id=user
                )
            device_list = devices.stored_list(conn, user)
            if device_list is None:
                raise UnknownDeviceError(f"no device list known for user {user!r}")
            for device, key in device_list.devices:
                if user == self._user_id and device == own_device:
                    continue
                targets.append((user, device, key))
        return targets

    @staticmethod
    def _has_session(conn: sqlite3.Connection, user: str, device: int, key: bytes) -> bool:
        row = conn.execute(
            "SELECT 1 FROM sessions WHERE peer_user = ? AND peer_device = ? AND peer_key = ?",
            (user, device, key),
        ).fetchone()
        return row is not None

    # --- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes, *, now: int | None = None) -> ReceiveResult:
        """Decrypt one envelope in one transaction: decrypt, save the session (and the account
        if a one-time prekey was used), record the message id, append the message to the inbox
        and the events to the event log, forget ids older than ``processed_retention``, commit.
        An envelope already processed is reported as a duplicate without decrypting. On any
        error nothing changed (retry or drop it), except that under the ``"block"`` policy a
        refused new identity key is remembered as pending (REQ-CL-28)."""
        envelope = Envelope.from_bytes(data)
        store = self._store
        try:
            with store.transaction() as conn:
                device_id = self._require_device_id(conn)
                if envelope.recipient_user != self._user_id or envelope.recipient_device != (
                    device_id
                ):
                    raise UnknownDeviceError("envelope is not addressed to this device")
                if envelope.sender_user == self._user_id and envelope.sender_device == device_id:
                    raise UnknownDeviceError("envelope claims to come from this device")
                if self._processed(conn, envelope):
                    return ReceiveResult(None, (), duplicate=True)
                events: list[Event] = []
                if envelope.sender_device_list is not None:
                    _, events = devices.accept(
                        conn,
                        envelope.sender_device_list,
                        envelope.sender_user,
                        self.policy,
                        ignore_older=True,
                    )
                info = peek(envelope.payload)  # the payload, looked at only now (REQ-CL-06/07)
                message, more = self._decrypt(conn, envelope, info.session_id, info.is_initial, now)
                events += more
                self._emit(conn, events)
                store.checkpoint("after_save")
            store.checkpoint("after_commit")
        except UntrustedIdentityError:
            if envelope.sender_device_list is not None:
                self._record_pending(envelope.sender_device_list)
            raise
        return ReceiveResult(message, tuple(events))

    def _processed(self, conn: sqlite3.Connection, envelope: Envelope) -> bool:
        row = conn.execute(
            "SELECT 1 FROM processed WHERE sender_user = ? AND sender_device = ? "
            "AND message_id = ?",
            (envelope.sender_user, envelope.sender_device, envelope.message_id),
        ).fetchone()
        return row is not None

    def _decrypt(
        self,
        conn: sqlite3.Connection,
        envelope: Envelope,
        session_id: bytes,
        is_initial: bool,
        now: int | None,
    ) -> tuple[Message, list[Event]]:
        store = self._store
        user, device = envelope.sender_user, envelope.sender_device
        device_list = devices.stored_list(conn, user)
        device_key = device_list.device_key(device) if device_list is not None else None
        if device_key is None:
            raise UnknownDeviceError("sender device is not in the sender's signed device list")
        events: list[Event] = []
        store.checkpoint("before_decrypt")
        account: Account | None = None
        session = sessions.by_id(conn, store, user, device, session_id)
        if session is not None:
            plaintext = session.decrypt(envelope.payload, provider=store.provider)
        elif is_initial:
            account = self._account(conn)
            session, plaintext = account.accept_session(
                envelope.payload, config=self._config, provider=store.provider, now=now
            )
            if sessions.count(conn, user, device):
                events.append(Event("session_replaced", user, device))
            else:
                events.append(Event("session_new", user, device))
        else:
            raise NoSessionError("message for a session this device does not hold")
        if session.peer_identity_key != device_key:
            raise UnknownDeviceError("session key differs from the sender's listed device key")
        content = _content(plaintext)
        if content.message_id != envelope.message_id:
            raise AuthenticationError("message id differs from the authenticated one")
        if (content.sender_user, content.sender_device) != (user, device):
            raise AuthenticationError("sender differs from the authenticated one")
        outgoing = user == self._user_id
        if not outgoing and content.conversation != self._user_id:
            raise AuthenticationError("message was addressed to another user")
        message = Message(
            sender_user=user,
            sender_device=device,
            conversation=content.conversation if outgoing else user,
            message_id=content.message_id,
            body=content.body,
            outgoing=outgoing,
        )
        store.checkpoint("after_decrypt")
        sessions.save(conn, store, user, device, session, make_active=True)
        if account is not None:
            self._save_account(conn, account)
        received = int(time.time()) if now is None else now
        row = (user, device, envelope.message_id, received)
        conn.execute("INSERT INTO processed VALUES (?, ?, ?, ?)", row)
        conn.execute(
            "DELETE FROM processed WHERE received < ?", (received - self.processed_retention,)
        )
        ad = _inbox_ad(message)
        conn.execute(
            "INSERT INTO inbox (sender_user, sender_device, conversation, message_id, outgoing,"
            " body) VALUES (?, ?, ?, ?, ?, ?)",
            (
                user,
                device,
                message.conversation,
                message.message_id,
                int(outgoing),
                store.seal(message.body, ad),
            ),
        )
        return message, events

    # --- durable queues ----------------------------------------------------------------------

    def _emit(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        for event in events:
            conn.execute("INSERT INTO events (event) VALUES (?)", (event.to_bytes(),))

    def take_events(self) -> list[Event]:
        """Every event not taken yet, oldest first (and removes them)."""
        with self._store.transaction() as conn:
            rows = conn.execute("SELECT event FROM events ORDER BY seq").fetchall()
            events = [Event.from_bytes(column(row[0], bytes, "event")) for row in rows]
            conn.execute("DELETE FROM events")  # only once every event was read
        return events

    def inbox(self, *, take: bool = False) -> list[Message]:
        """Delivered messages, oldest first; with ``take`` they are removed."""
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT sender_user, sender_device, conversation, message_id, outgoing, body "
                "FROM inbox ORDER BY seq"
            ).fetchall()
            messages = [self._inbox_message(*row) for row in rows]
            if take:
                conn.execute("DELETE FROM inbox")  # only once every message was read
        return messages

    def _inbox_message(
        self,
        user: object,
        device: object,
        conversation: object,
        message_id: object,
        outgoing: object,
        body: object,
    ) -> Message:
        header = Message(
            column(user, str, "inbox sender"),
            column(device, int, "inbox sender device"),
            column(conversation, str, "inbox conversation"),
            column(message_id, bytes, "inbox message id"),
            b"",
            bool(column(outgoing, int, "inbox direction")),
        )
        opened = self._store.open(column(body, bytes, "inbox body"), _inbox_ad(header))
        return dataclasses.replace(header, body=opened)

    def sessions_with(self, user_id: str, device_id: int) -> list[Session]:
        """The sessions held with one peer device, active first (for inspection and tests)."""
        with self._store.transaction() as conn:
            return sessions.by_use(conn, self._store, user_id, device_id)


def _content(plaintext: bytes) -> Content:
    try:
        return Content.from_bytes(plaintext)
    except DecodeError:
        raise AuthenticationError("authenticated content is malformed") from None


def _inbox_ad(message: Message) -> bytes:
    return b"%s\x00%d\x00%s" % (
        message.sender_user.encode(),
        message.sender_device,
        message.message_id,
    )
