"""A relay client (httpx, plus a ``websockets`` stream) wired into :class:`e2ee.client.Client`.

:class:`RelayClient` is the client layer's :class:`~e2ee.client.Directory` (device lists and
claimed bundles come from the relay) and its transport: :meth:`RelayClient.send` encrypts with
the client and posts one request per recipient user; :meth:`RelayClient.receive` and
:meth:`RelayClient.stream` hand every envelope to :meth:`Client.receive` and acknowledge it
only after that call returned, i.e. after the client's transaction committed. A crash in
between redelivers the envelope, which the client reports as a duplicate (and it is acked then).

Retries reuse the request's idempotency key (client message id, claim id), so a send or claim
retried after a lost answer is stored or handed out once.

Every answer of the relay is untrusted (spec/threat-model.md, A1). Answers are streamed and read
up to a limit ([REQ-RL-31]): a ``Content-Length`` above it is refused before the body is read, a
body without one is read until it passes the limit and no further, error bodies are read up to
a small limit (above it the error is reported from the status alone), and compressed answers
are neither asked for (``Accept-Encoding: identity``) nor accepted, so no body is ever inflated.
An answer must also arrive in full within ``answer_timeout`` seconds: httpx's ``timeout`` bounds
each network read, so a relay sending one byte per read would otherwise hold the caller for as
long as the body limit lasts.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from e2ee.client import Client, ReceiveResult
from e2ee.client.envelope import Envelope
from e2ee.errors import (
    DecodeError,
    DeviceListError,
    LocalError,
    MismatchedDevicesError,
    RelayAuthError,
    RelayBadRequestError,
    RelayConflictError,
    RelayError,
    RelayNotFoundError,
    RelayUnavailableError,
    RemoteError,
    StateError,
    UntrustedIdentityError,
)
from e2ee.identity import DeviceList, SignedDeviceList
from e2ee.relay import api
from e2ee.wire import codec

log = logging.getLogger("e2ee.relay.client")
_MAX_RESPONSE = 16 * 1024 * 1024
_MAX_ERROR_BODY = api.MAX_SMALL_BODY  # an error body is a small map (spec/relay.md section 2)
MAX_PAGES = 1000
"""Pages one :meth:`RelayClient.receive` call fetches at most (at the default limit of 100,
ten times the relay's default queue of 10,000 messages)."""
_monotonic = time.monotonic  # the answer deadline's clock (a test drives it)


class _AnswerDeadline:
    """The deadline of the answer in progress (None between answers): every connect, read
    and write waits at most until then, as well as at most its own timeout. httpx bounds each
    read by its timeout only, so without this a relay trickling the status line and headers
    would hold the caller for as long as httpcore's 100 KiB header limit lasts. Past the
    deadline it raises :class:`RelayUnavailableError`, which httpx passes through unmapped (so
    the request is not retried)."""

    def __init__(self) -> None:
        self.deadline: float | None = None

    def remaining(self, timeout: float | None) -> float | None:
        if self.deadline is None:
            return timeout
        left = self.deadline - _monotonic()
        if left <= 0:
            raise RelayUnavailableError("relay answer too slow")
        return left if timeout is None else min(timeout, left)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, clock: _AnswerDeadline) -> None:
        self.inner = inner
        self.clock = clock

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(
            host, port, self.clock.remaining(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self.clock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_unix_socket(path, self.clock.remaining(timeout), socket_options)
        return _DeadlineStream(stream, self.clock)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, clock: _AnswerDeadline) -> None:
        self.inner = inner
        self.clock = clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self.inner.read(max_bytes, self.clock.remaining(timeout))
        except httpcore.ReadTimeout:
            self.clock.remaining(None)  # raises if the deadline, not the timeout, ran out
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self.inner.write(buffer, self.clock.remaining(timeout))
        except httpcore.WriteTimeout:
            self.clock.remaining(None)
            raise

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.start_tls(ssl_context, server_hostname, self.clock.remaining(timeout))
        return _DeadlineStream(stream, self.clock)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


def _install_deadline(http: httpx.Client) -> _AnswerDeadline | None:
    """Put the deadline in front of the network backend of every connection pool of ``http``
    (its transport and any proxy mounts). httpx has no public way to give its transports a
    network backend, so this reaches into their pools; None when their layout is not the one
    this was written for (the body is still bounded by :func:`_read_body`, and a test in
    tests/test_relay_client.py fails, so an httpx upgrade that changes it is noticed)."""
    transports = [getattr(http, "_transport", None), *getattr(http, "_mounts", {}).values()]
    pools: list[Any] = [getattr(t, "_pool", None) for t in transports if t is not None]
    if not pools or not all(hasattr(pool, "_network_backend") for pool in pools):
        return None
    clock = _AnswerDeadline()
    for pool in pools:
        pool._network_backend = _DeadlineBackend(pool._network_backend, clock)
    return clock


def origin_of(base_url: str) -> str:
    """``scheme://host:port`` of a URL, the form the relay's configured origin takes."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


@dataclass
class ReceiveReport:
    """What one :meth:`RelayClient.receive` call did."""

    results: list[ReceiveResult] = field(default_factory=list)
    acked: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(relay message id, error category) of envelopes the client refused for good (acked)."""
    kept: int = 0
    """Envelopes left queued (untrusted identity pending approval, or a local failure)."""
    more: bool = False
    """The call stopped after ``max_pages`` pages while the relay said more were queued."""


class RelayClient:
    """One device's connection to a relay. Not thread-safe (one per thread)."""

    def __init__(
        self,
        base_url: str,
        client: Client,
        *,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
        answer_timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        """``timeout`` bounds each network operation (connect, each read and write);
        ``answer_timeout`` bounds the whole wait for one answer, from sending the request to
        the last byte of its body (a relay that keeps sending a few bytes at a time is cut
        off: :class:`RelayUnavailableError`). Both are positive numbers of seconds."""
        for name, value in (("timeout", timeout), ("answer_timeout", answer_timeout)):
            if type(value) not in (int, float) or not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds")
        self.base_url = base_url.rstrip("/")
        self.origin = origin_of(self.base_url)
        self.client = client
        self.retries = retries
        self.answer_timeout = float(answer_timeout)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        # Only a client made here gets the deadline on every read; a caller's own ``http``
        # keeps its transport, and its answers are bounded in time once their body starts.
        self._deadline = _install_deadline(self._http) if http is None else None
        self._token: bytes | None = None
        self._lists: dict[str, DeviceList] = {}

    def __repr__(self) -> str:
        return f"RelayClient({self.base_url!r}, {self.client!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP --------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, bytes]:
        """One request, retried on transport errors (the API is idempotent) and once after a
        401 with a fresh login. Any other failure to read the answer is a typed RelayError."""
        relogged = False
        attempt = 0
        while True:
            headers = {"content-type": api.CONTENT_TYPE, "accept-encoding": "identity"}
            if auth:
                if self._token is None:
                    self.login()
                assert self._token is not None
                headers["authorization"] = "Bearer " + api.encode_token(self._token)
            try:
                status, data = self._exchange(method, path, body, params, headers)
            except httpx.TransportError:
                attempt += 1
                if attempt > self.retries:
                    raise RelayUnavailableError("relay unreachable") from None
                continue
            except httpx.HTTPError as exc:  # DecodingError, TooManyRedirects, ...
                raise RelayBadRequestError(
                    f"relay answer unreadable: {type(exc).__name__}"
                ) from None
            if status == 401 and auth and not relogged:
                relogged = True
                self._token = None
                continue
            if status >= 400:
                raise api.error_from_response(status, data)
            return status, data

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        params: dict[str, str] | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        """Send one request; the answer's status and body, read within its limit. An error
        answer whose body is over its limit or compressed comes back with an empty body (its
        status says enough); such a success answer is refused."""
        deadline = _monotonic() + self.answer_timeout
        if self._deadline is not None:
            self._deadline.deadline = deadline
        try:
            with self._http.stream(
                method, path, content=body, params=params, headers=headers
            ) as response:
                status = response.status_code
                error = status >= 400
                encoding = response.headers.get("content-encoding", "identity")
                if encoding.strip().lower() != "identity":
                    if error:
                        return status, b""
                    raise RelayBadRequestError("relay answered with a compressed body")
                limit = _MAX_ERROR_BODY if error else _MAX_RESPONSE
                data = _read_body(response, limit, deadline)
                if data is None:
                    if error:
                        return status, b""
                    raise RelayBadRequestError("relay answer too large")
                return status, data
        finally:
            if self._deadline is not None:
                self._deadline.deadline = None

    @staticmethod
    def _map(data: bytes) -> dict[int, object]:
        try:
            value = codec.decode(data, max_size=_MAX_RESPONSE)
        except DecodeError:
            raise RelayBadRequestError("relay answered with malformed CBOR") from None
        if not isinstance(value, dict):
            raise RelayBadRequestError("relay answered with an unexpected body")
        return value

    # --- authentication and publishing -------------------------------------------------------

    def login(self) -> None:
        """Prove possession of this device's identity key; keeps the bearer token."""
        user, device = self.client.user_id, self._device_id()
        who = codec.encode({0: user.encode(), 1: device})
        _, data = self._call("POST", api.CHALLENGE, who, auth=False)
        challenge = self._map(data).get(0)
        if type(challenge) is not bytes or len(challenge) != api.CHALLENGE_SIZE:
            raise RelayBadRequestError("relay sent a malformed challenge")
        signature = self.client.sign_relay_login(
            api.login_payload(self.origin, challenge, user, device)
        )
        body = codec.encode({0: user.encode(), 1: device, 2: challenge, 3: signature})
        _, data = self._call("POST", api.LOGIN, body, auth=False)
        token = self._map(data).get(0)
        if type(token) is not bytes or len(token) != api.TOKEN_SIZE:
            raise RelayBadRequestError("relay sent a malformed token")
        self._token = token

    def _device_id(self) -> int:
        device = self.client.device_id
        if device is None:
            raise LocalError("this device is not linked yet")
        return device

    def publish_device_list(
        self, data: bytes | None = None, *, ticket: bytes | None = None
    ) -> bool:
        """Publish this user's newest signed device list (registers the user the first time);
        True if the relay registered the user now. A relay with a registration authority
        registers a new user only with a ``ticket`` its platform issued for this user id and
        user key (:mod:`e2ee.relay.tickets`; without one: :class:`RelayForbiddenError`, code
        ``ticket_required``)."""
        fields: dict[int, bytes] = {0: data if data is not None else self.client.device_list()}
        if ticket is not None:
            fields[1] = ticket
        body = codec.encode(fields)
        status, _ = self._call("PUT", api.DEVICE_LIST, body, auth=False)
        return status == 201

    def publish_prekeys(self, *, now: int | None = None) -> tuple[int, int]:
        """Ask the relay how many one-time keys it still holds for this device, refill/rotate
        as the client's policy says with those counts, and upload the signed bundle and what
        is unpublished, in batches; the client marks the keys published only after the relay
        stored them. Call it now and then (the CLI does on every receive): it is what rotates
        the signed prekey and replaces claimed one-time keys. Returns the relay's stored
        (EC, ML-KEM) one-time key counts."""
        upload = self.client.prekeys_to_upload(stored=self.key_counts(), now=now)
        batch = 100
        counts = (0, 0)
        rounds = max(1, -(-max(len(upload.one_time), len(upload.one_time_kem)) // batch))
        for i in range(rounds):
            part = api.KeyUpload(
                upload.signed_bundle,
                tuple(api.OneTimeKey(*k) for k in upload.one_time[i * batch : (i + 1) * batch]),
                tuple(api.OneTimeKey(*k) for k in upload.one_time_kem[i * batch : (i + 1) * batch]),
            )
            _, data = self._call("PUT", api.KEYS, part.to_bytes())
            counts = self._counts(data)
        self.client.mark_uploaded(upload)
        return counts

    def key_counts(self) -> tuple[int, int]:
        _, data = self._call("GET", api.KEYS)
        return self._counts(data)

    def _counts(self, data: bytes) -> tuple[int, int]:
        value = self._map(data)
        ec, kem = value.get(0), value.get(1)
        if type(ec) is not int or type(kem) is not int or min(ec, kem) < 0:
            raise RelayBadRequestError("relay sent malformed key counts")
        return ec, kem

    # --- Directory ---------------------------------------------------------------------------

    def device_list(self, user_id: str) -> bytes | None:
        try:
            _, data = self._call("GET", api.DEVICE_LIST, params={"user": user_id})
        except RelayNotFoundError:
            return None
        signed = self._map(data).get(0)
        if type(signed) is not bytes:
            raise RelayBadRequestError("relay sent a malformed device list")
        try:
            parsed = SignedDeviceList.from_bytes(signed).device_list
        except DeviceListError:
            raise RelayBadRequestError("relay sent an invalid device list") from None
        if parsed.user_id != user_id:
            raise RelayBadRequestError("relay sent another user's device list")
        self._lists[user_id] = parsed
        return signed

    def bundle(self, user_id: str, device_id: int) -> bytes | None:
        return self.claim(user_id, [device_id]).get(device_id)

    def claim(
        self, user_id: str, devices: list[int] | None = None, *, claim_id: bytes | None = None
    ) -> dict[int, bytes]:
        """Claim a bundle for every (or each named) device of ``user_id``; a retry with the
        same ``claim_id`` is answered with the same bundles."""
        cid = claim_id or self.client.store.provider.random_bytes(api.CLAIM_ID_SIZE)
        fields: dict[int, object] = {0: user_id.encode(), 1: cid}
        if devices is not None:
            fields[2] = sorted(devices)
        _, data = self._call("POST", api.CLAIM, codec.encode(fields))
        found = self._map(data).get(0)
        if type(found) is not list:
            raise RelayBadRequestError("relay sent a malformed claim answer")
        bundles: dict[int, bytes] = {}
        for item in found:
            if (
                type(item) is not list
                or len(item) != 2
                or type(item[0]) is not int
                or type(item[1]) is not bytes
            ):
                raise RelayBadRequestError("relay sent a malformed claim answer")
            bundles[item[0]] = item[1]
        return bundles

    # --- sending -----------------------------------------------------------------------------

    def send(self, to_user: str, body: bytes, *, now: int | None = None) -> bytes:
        """Encrypt ``body`` to every device of ``to_user`` (and copies to this user's other
        devices) and store them on the relay, one atomic request per user. Returns the message
        id. :class:`~e2ee.errors.MismatchedDevicesError` means the relay's device list moved
        on between the list fetch and the send: call again."""
        envelopes = self.client.send(to_user, body, self, now=now)
        by_user: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            by_user.setdefault(envelope.recipient_user, []).append(envelope)
        message_id = envelopes[0].message_id if envelopes else b""
        for user in sorted(by_user, key=lambda u: u != to_user):
            self.post(user, by_user[user])
        return message_id

    def post(self, user: str, envelopes: list[Envelope]) -> None:
        listed = self._lists.get(user)
        keys = {} if listed is None else dict(listed.devices)
        request = api.SendRequest(
            user,
            envelopes[0].message_id,
            tuple(
                (e.recipient_device, keys.get(e.recipient_device, bytes(32)), e.to_bytes())
                for e in envelopes
            ),
        )
        try:
            self._call("POST", api.MESSAGES, request.to_bytes())
        except MismatchedDevicesError:
            if user == to_user_of(envelopes):
                raise
            # Copies to this user's own other devices are best effort: a device without
            # published keys yet misses them (as in Client.send).
            log.info("own-device copies skipped: device list changed")

    # --- receiving ---------------------------------------------------------------------------

    def receive(
        self, *, limit: int = 100, now: int | None = None, max_pages: int = MAX_PAGES
    ) -> ReceiveReport:
        """Fetch every queued envelope over HTTP, hand each to the client, acknowledge what the
        client durably processed (or refused for good). Each page must carry ids above the
        last one seen ([REQ-RL-33]), so the call always makes progress; it stops after
        ``max_pages`` pages (``report.more`` then says to call again)."""
        report = ReceiveReport()
        after = 0
        for _ in range(max_pages):
            _, data = self._call(
                "GET", api.MESSAGES, params={"after": str(after), "limit": str(limit)}
            )
            rows, more = self._page(data, after)
            acks: list[int] = []
            for message_id, envelope in rows:
                after = message_id
                if self._process(message_id, envelope, report):
                    acks.append(message_id)
            if acks:
                self.ack(acks)
                report.acked += len(acks)
            if not more:
                return report
        report.more = True
        return report

    def fetch(self, *, after: int = 0, limit: int = 100) -> tuple[list[tuple[int, bytes]], bool]:
        """One page of queued envelopes as (relay message id, envelope), without processing or
        acknowledging them, and whether more are queued (for tools that inspect or reorder
        delivery; hand each to :meth:`Client.receive`, then :meth:`ack` the ids)."""
        _, data = self._call("GET", api.MESSAGES, params={"after": str(after), "limit": str(limit)})
        rows, more = self._page(data, after)
        page: list[tuple[int, bytes]] = []
        for message_id, envelope in rows:
            if type(envelope) is not bytes:
                raise RelayBadRequestError("relay sent a malformed message")
            page.append((message_id, envelope))
        return page, more

    def _page(self, data: bytes, after: int) -> tuple[list[tuple[int, object]], bool]:
        """A ``GET /v1/messages`` answer as (relay message id, envelope as sent) rows and
        whether more are queued, checked whole before any row is used: ids above ``after``
        and increasing, and no empty page that says more are queued ([REQ-RL-33])."""
        value = self._map(data)
        rows, more = value.get(0), value.get(1)
        if type(rows) is not list:
            raise RelayBadRequestError("relay sent a malformed message page")
        page: list[tuple[int, object]] = []
        last = after
        for row in rows:
            if type(row) is not list or len(row) != 2 or type(row[0]) is not int:
                raise RelayBadRequestError("relay sent a malformed message")
            if row[0] <= last:
                raise RelayBadRequestError("relay sent message ids that do not increase")
            last = row[0]
            page.append((row[0], row[1]))
        if more is True and not page:
            raise RelayBadRequestError("relay sent an empty page that says more are queued")
        return page, more is True

    def _process(self, message_id: int, envelope: object, report: ReceiveReport) -> bool:
        """True when the envelope may be acknowledged."""
        if type(envelope) is not bytes:
            report.refused.append((message_id, "decode_error"))
            return True
        try:
            result = self.client.receive(envelope)
        except UntrustedIdentityError:
            report.kept += 1  # redelivered once the application approved the new key
            return False
        except StateError:
            report.kept += 1  # the device's own store is damaged, not the envelope: keep it
            return False
        except RemoteError as exc:
            report.refused.append((message_id, exc.category))
            return True
        except LocalError:
            report.kept += 1
            return False
        report.results.append(result)
        return True

    def ack(self, ids: list[int]) -> int:
        total = 0
        for i in range(0, len(ids), api.MAX_ACK_IDS):
            _, data = self._call("POST", api.ACK, codec.encode({0: ids[i : i + api.MAX_ACK_IDS]}))
            acked = self._map(data).get(0)
            total += acked if type(acked) is int else 0
        return total

    def _open_stream(self) -> Any:
        """The WebSocket of ``GET /v1/stream``, authenticated. A token kept from an earlier
        login may have expired meanwhile (the relay closes a stream with 4401 when it does):
        a refused handshake with such a token logs in once more and tries again, so a caller
        that reopens the stream after each close goes on past the token's lifetime."""
        kept = self._token is not None
        while True:
            if self._token is None:
                self.login()
            assert self._token is not None
            url = "ws" + self.base_url[4:] + api.STREAM
            headers = {"Authorization": "Bearer " + api.encode_token(self._token)}
            try:
                return connect(url, additional_headers=headers, max_size=_MAX_RESPONSE)
            except (OSError, ConnectionClosed) as exc:
                raise RelayUnavailableError(f"stream failed: {type(exc).__name__}") from None
            except Exception as exc:  # websockets' handshake rejections
                self._token = None
                if not kept:
                    raise RelayAuthError(f"stream refused: {type(exc).__name__}") from None
                kept = False

    def stream(self, *, idle_timeout: float = 30.0) -> Iterator[tuple[int, ReceiveResult | None]]:
        """Pushed envelopes over the WebSocket, processed and acknowledged one by one; yields
        (relay message id, result or None when refused or kept). Ends after ``idle_timeout``
        seconds without a message or when the relay closes the stream, also while an envelope
        was being processed (it closes the stream when the token expires): that envelope is
        still yielded, and, unacknowledged, is delivered again later and reported as a
        duplicate ([REQ-RL-32]). Except when the relay closed it with 4409 because newer
        streams of this device replaced it ([REQ-RL-42]): then, after any envelope in
        progress is yielded, :class:`RelayConflictError` (code ``stream_superseded``), so
        that a caller that reconnects on every close does not push those streams out in turn."""
        socket = self._open_stream()
        with socket:
            while True:
                try:
                    frame = socket.recv(timeout=idle_timeout)
                except TimeoutError:
                    return
                except ConnectionClosed:
                    _check_superseded(socket)
                    return
                if not isinstance(frame, bytes):
                    raise RelayBadRequestError("relay pushed a text frame")
                value = self._map(frame)
                message_id, envelope = value.get(0), value.get(1)
                if type(message_id) is not int:
                    raise RelayBadRequestError("relay pushed a malformed message")
                report = ReceiveReport()
                closed = False
                if self._process(message_id, envelope, report):
                    try:
                        socket.send(codec.encode({0: [message_id]}))
                    except ConnectionClosed:
                        closed = True
                yield message_id, (report.results[0] if report.results else None)
                if closed:
                    _check_superseded(socket)
                    return


def _check_superseded(socket: Any) -> None:
    """Raise when the relay closed the stream because newer ones of this device replaced it."""
    if socket.close_code == api.STREAM_SUPERSEDED:
        raise RelayConflictError(
            "a newer stream of this device replaced this one", code="stream_superseded"
        )


def _read_body(response: httpx.Response, limit: int, deadline: float) -> bytes | None:
    """The body of an identity-encoded answer, or None as soon as it is known to exceed
    ``limit`` bytes: from ``Content-Length`` before anything is read, else once the bytes read
    pass it (at most ``limit`` plus one chunk is held). ``iter_bytes`` decodes nothing here
    (the encoding was checked) and also serves a body the transport already read. Past
    ``deadline`` (a :data:`_monotonic` time) the answer is given up, checked as each chunk
    arrives and once the body is complete: a read itself waits at most httpx's timeout."""
    length = response.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise RelayBadRequestError("relay answered with a malformed Content-Length")
        digits = length.lstrip("0")  # int() of a very long string raises ValueError
        if len(digits) > len(str(limit)) or int(digits or "0") > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if _monotonic() > deadline:
            raise RelayUnavailableError("relay answer too slow")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    if _monotonic() > deadline:
        raise RelayUnavailableError("relay answer too slow")
    return b"".join(chunks)


def to_user_of(envelopes: list[Envelope]) -> str | None:
    """The conversation user when the request goes to another user; None for own copies."""
    first = envelopes[0]
    return None if first.recipient_user == first.sender_user else first.recipient_user


__all__ = ["MAX_PAGES", "ReceiveReport", "RelayClient", "RelayError", "origin_of"]
