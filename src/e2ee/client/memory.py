"""An in-memory directory and transport, for tests, examples and benchmarks.

The directory keeps each user's newest signed device list and, per device, the uploaded signed
bundle and one-time prekeys; :meth:`InMemoryDirectory.bundle` hands each one-time prekey out
exactly once and falls back to the signed last-resort keys. The transport is a mailbox per
(user, device). Neither checks anything a real relay would (spec/relay.md, :mod:`e2ee.relay`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict

from e2ee.client.envelope import Envelope
from e2ee.client.prekeys import PrekeyUpload
from e2ee.identity import SignedDeviceList
from e2ee.wire.messages import PreKeyBundle


class InMemoryDirectory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.device_lists: dict[str, bytes] = {}
        self._signed: dict[tuple[str, int], bytes] = {}
        self._one_time: dict[tuple[str, int], dict[int, tuple[bytes, bytes]]] = defaultdict(dict)
        self._one_time_kem: dict[tuple[str, int], dict[int, tuple[bytes, bytes]]] = defaultdict(
            dict
        )

    def publish_device_list(self, data: bytes) -> None:
        user = SignedDeviceList.from_bytes(data).device_list.user_id
        with self._lock:
            self.device_lists[user] = data

    def upload(self, upload: PrekeyUpload) -> None:
        key = (upload.user_id, upload.device_id)
        with self._lock:
            self._signed[key] = upload.signed_bundle
            for prekey_id, public, signature in upload.one_time:
                self._one_time[key][prekey_id] = (public, signature)
            for prekey_id, public, signature in upload.one_time_kem:
                self._one_time_kem[key][prekey_id] = (public, signature)

    def forget_device(self, user_id: str, device_id: int) -> None:
        key = (user_id, device_id)
        with self._lock:
            self._signed.pop(key, None)
            self._one_time.pop(key, None)
            self._one_time_kem.pop(key, None)

    def one_time_left(self, user_id: str, device_id: int) -> int:
        return len(self._one_time.get((user_id, device_id), {}))

    # Directory protocol

    def device_list(self, user_id: str) -> bytes | None:
        return self.device_lists.get(user_id)

    def bundle(self, user_id: str, device_id: int) -> bytes | None:
        key = (user_id, device_id)
        with self._lock:
            signed = self._signed.get(key)
            if signed is None:
                return None
            bundle = PreKeyBundle.from_bytes(signed)
            one_time = self._one_time.get(key)
            if one_time:
                prekey_id = next(iter(one_time))
                public, signature = one_time.pop(prekey_id)
                bundle = dataclasses.replace(
                    bundle,
                    one_time_prekey_id=prekey_id,
                    one_time_prekey=public,
                    one_time_prekey_signature=signature,
                )
            one_time_kem = self._one_time_kem.get(key)
            if one_time_kem:
                prekey_id = next(iter(one_time_kem))
                public, signature = one_time_kem.pop(prekey_id)
                bundle = dataclasses.replace(
                    bundle,
                    one_time_kem_prekey_id=prekey_id,
                    one_time_kem_prekey=public,
                    one_time_kem_prekey_signature=signature,
                )
            return bundle.to_bytes()


class InMemoryTransport:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[tuple[str, int], list[bytes]] = defaultdict(list)

    def post(self, envelopes: list[Envelope]) -> None:
        with self._lock:
            for envelope in envelopes:
                key = (envelope.recipient_user, envelope.recipient_device)
                self._boxes[key].append(envelope.to_bytes())

    def fetch(self, user_id: str, device_id: int) -> list[bytes]:
        with self._lock:
            return self._boxes.pop((user_id, device_id), [])

    def pending(self, user_id: str, device_id: int) -> int:
        return len(self._boxes.get((user_id, device_id), []))
