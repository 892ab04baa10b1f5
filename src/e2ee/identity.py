"""User identity keys and the signed, versioned device lists they sign.

A user has one long-term Ed25519 *user identity key*, held by the first device, and one or more
devices, each an :class:`e2ee.Account` with its own *device identity key*. The user key signs
the list of the user's devices (device id -> device identity key) with a counter that only
grows, so an old list cannot be replayed. Trust (spec/client.md) is placed in user keys.

Device list (canonical CBOR, CDDL in spec/client.md)::

    device-list = {0: 1, 1: 32, 2: user_id (utf-8 bytes), 3: user identity key,
                   4: counter, 5: [* [device_id, device identity key]]}
    signed-device-list = {0: 1, 1: 33, 2: bstr .cbor device-list, 3: signature}

The signature is Ed25519 by the user key over ``SIG_LABEL_DEVICE_LIST || device-list bytes``.
Devices are sorted by id, ids are unique, keys are unique. Parsing is strict: anything else is
a :class:`~e2ee.errors.DeviceListError`. Pure and sans-IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider, default_provider
from e2ee.errors import DecodeError, DeviceListError, SignatureError, StateError
from e2ee.handshake import signing
from e2ee.limits import (
    ED25519_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    MAX_COUNTER,
    SIG_LABEL_DEVICE_LIST,
    TYPE_DEVICE_LIST,
    TYPE_SIGNED_DEVICE_LIST,
    TYPE_USER_IDENTITY_STATE,
)
from e2ee.state import Fields, dump, load
from e2ee.wire import codec

DEVICE_LIST_VERSION = 1
MAX_DEVICES = 64
MAX_USER_ID_SIZE = 256
MAX_DEVICE_ID = 2**31 - 1
MAX_SIGNED_DEVICE_LIST_SIZE = 8 * 1024


@dataclass(frozen=True, slots=True)
class DeviceList:
    """Which devices a user has, as signed by the user identity key (public data)."""

    user_id: str
    user_key: bytes
    counter: int
    devices: tuple[tuple[int, bytes], ...]

    def device_key(self, device_id: int) -> bytes | None:
        for did, key in self.devices:
            if did == device_id:
                return key
        return None

    @property
    def device_ids(self) -> list[int]:
        return [did for did, _ in self.devices]

    def encode(self) -> bytes:
        return codec.encode(
            {
                0: DEVICE_LIST_VERSION,
                1: TYPE_DEVICE_LIST,
                2: self.user_id.encode(),
                3: self.user_key,
                4: self.counter,
                5: [[did, key] for did, key in self.devices],
            }
        )

    def __repr__(self) -> str:
        return (
            f"DeviceList(user_id={self.user_id!r}, counter={self.counter}, "
            f"devices={self.device_ids})"
        )


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    """A device list with the user key's signature; :meth:`from_bytes` verifies it."""

    device_list: DeviceList
    encoded_list: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return codec.encode(
            {
                0: DEVICE_LIST_VERSION,
                1: TYPE_SIGNED_DEVICE_LIST,
                2: self.encoded_list,
                3: self.signature,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDeviceList:
        """Parse and check the signature against the user key the list names (self-signed;
        whether that key is *trusted* is the client's decision). Raises DeviceListError."""
        try:
            outer = codec.decode(data, max_size=MAX_SIGNED_DEVICE_LIST_SIZE)
            if (
                not isinstance(outer, dict)
                or set(outer) != {0, 1, 2, 3}
                or not codec.is_int(outer[0], DEVICE_LIST_VERSION)
                or not codec.is_int(outer[1], TYPE_SIGNED_DEVICE_LIST)
                or type(outer[2]) is not bytes
                or type(outer[3]) is not bytes
                or len(outer[3]) != ED25519_SIGNATURE_SIZE
            ):
                raise DeviceListError("not a signed device list of this version")
            device_list = _parse_list(outer[2])
        except DecodeError as exc:
            raise DeviceListError(f"malformed device list: {exc}") from None
        try:
            signing.verify(device_list.user_key, SIG_LABEL_DEVICE_LIST + outer[2], outer[3])
        except SignatureError:
            raise DeviceListError("device list signature does not verify") from None
        return cls(device_list, outer[2], outer[3])


def _parse_list(data: bytes) -> DeviceList:
    value = codec.decode(data, max_size=MAX_SIGNED_DEVICE_LIST_SIZE)
    if (
        not isinstance(value, dict)
        or set(value) != {0, 1, 2, 3, 4, 5}
        or not codec.is_int(value[0], DEVICE_LIST_VERSION)
        or not codec.is_int(value[1], TYPE_DEVICE_LIST)
        or type(value[2]) is not bytes
        or not 0 < len(value[2]) <= MAX_USER_ID_SIZE
        or type(value[3]) is not bytes
        or len(value[3]) != ED25519_KEY_SIZE
        or type(value[4]) is not int
        or not 0 <= value[4] <= MAX_COUNTER
        or type(value[5]) is not list
        or not 0 < len(value[5]) <= MAX_DEVICES
    ):
        raise DeviceListError("malformed device list")
    try:
        user_id = value[2].decode()
    except UnicodeDecodeError:
        raise DeviceListError("user id is not UTF-8") from None
    devices: list[tuple[int, bytes]] = []
    for item in value[5]:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not int
            or not 0 <= item[0] <= MAX_DEVICE_ID
            or type(item[1]) is not bytes
            or len(item[1]) != ED25519_KEY_SIZE
        ):
            raise DeviceListError("malformed device entry")
        devices.append((item[0], item[1]))
    ids = [d for d, _ in devices]
    if ids != sorted(set(ids)) or len({k for _, k in devices}) != len(devices):
        raise DeviceListError("device ids must be sorted and unique, keys unique")
    return DeviceList(user_id, value[3], value[4], tuple(devices))


class UserIdentity:
    """The user identity key pair (held by the user's first device). Signs device lists."""

    __slots__ = ("_public_key", "_seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise TypeError("seed must be 32 bytes")
        self._seed = seed
        self._public_key = primitives.ed25519_public_key(seed)

    @classmethod
    def generate(cls, *, provider: Provider | None = None) -> UserIdentity:
        return cls((provider or default_provider()).random_bytes(32))

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def __repr__(self) -> str:
        return f"UserIdentity(public_key={self._public_key.hex()})"

    def sign_device_list(
        self, user_id: str, counter: int, devices: dict[int, bytes]
    ) -> SignedDeviceList:
        """Sign the list ``devices`` (device id -> device identity key) with ``counter``."""
        if not isinstance(counter, int) or not 0 <= counter <= MAX_COUNTER:
            raise ValueError("counter out of range")
        if not devices or len(devices) > MAX_DEVICES:
            raise ValueError(f"a device list holds 1 to {MAX_DEVICES} devices")
        device_list = DeviceList(user_id, self._public_key, counter, tuple(sorted(devices.items())))
        encoded = device_list.encode()
        signature = primitives.ed25519_sign(self._seed, SIG_LABEL_DEVICE_LIST + encoded)
        return SignedDeviceList(_parse_list(encoded), encoded, signature)

    def to_bytes(self, *, key: bytes | None = None, provider: Provider | None = None) -> bytes:
        """Serialize (canonical CBOR state, ``TYPE_USER_IDENTITY_STATE``); with ``key``
        encrypted at rest."""
        return dump(
            TYPE_USER_IDENTITY_STATE,
            {2: self._seed},
            self._public_key,
            key,
            provider or default_provider(),
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, key: bytes | None = None) -> UserIdentity:
        value, envelope_id = load(data, TYPE_USER_IDENTITY_STATE, key)
        f = Fields(value)
        if set(f._map) != {0, 1, 2}:
            raise StateError("user identity state has missing or unknown fields")
        identity = cls(f.bytes_(2, 32))
        if envelope_id is not None and envelope_id != identity.public_key:
            raise StateError("sealed envelope belongs to another user identity")
        return identity
