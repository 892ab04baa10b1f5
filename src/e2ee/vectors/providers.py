"""Providers that name every random value by its purpose.

* :class:`LabelledRecorder` (generator): each value is SHAKE-256 of a namespace and its label,
  so a vector's randomness is a pure function of fixed strings; ML-KEM encapsulations use the
  FIPS 203 deterministic ``Encaps_internal(ek, m)`` of :mod:`e2ee.vectors.reference` with a
  labelled 32-byte ``m``. Nothing is drawn from the system, so regeneration is byte for byte.
* :class:`LabelledReplay` (verifier): hands out exactly the values a vector step lists, in
  order, checking each length, and replays the recorded (shared secret, ciphertext) pairs;
  after the step it must be exhausted.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

from e2ee.crypto import primitives
from e2ee.vectors import reference
from e2ee.vectors.common import JSON, hx, unhex


class ReplayError(AssertionError):
    """A step asked for randomness its vector does not list (or left some unused)."""


def derive_value(namespace: str, label: str, length: int) -> bytes:
    return hashlib.shake_256(f"e2ee test vectors\x00{namespace}\x00{label}".encode()).digest(length)


class LabelledRecorder:
    """Deterministic provider for generation: draws are named by the labels it is given."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._labels: deque[str] = deque()
        self._kem_labels: deque[str] = deque()
        self.random: list[JSON] = []
        self.encapsulations: list[JSON] = []

    def expect(self, labels: list[str], kem_labels: list[str] | None = None) -> None:
        """Name the next draws (unused names are dropped by :meth:`take`)."""
        self._labels = deque(labels)
        self._kem_labels = deque(kem_labels or [])
        self.random = []
        self.encapsulations = []

    def take(self) -> tuple[list[JSON], list[JSON]]:
        """The draws of the step that just ran, as vector JSON; forgets unused labels."""
        out = (self.random, self.encapsulations)
        self.expect([])
        return out

    def random_bytes(self, length: int) -> bytes:
        if not self._labels:
            raise ReplayError(f"unlabelled draw of {length} bytes in {self.namespace}")
        label = self._labels.popleft()
        value = derive_value(self.namespace, label, length)
        self.random.append({"label": label, "value": hx(value)})
        return value

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        primitives.mlkem1024_check_public_key(public_key)
        if not self._kem_labels:
            raise ReplayError(f"unlabelled ML-KEM encapsulation in {self.namespace}")
        label = self._kem_labels.popleft()
        m = derive_value(self.namespace, label, 32)
        shared, ciphertext = reference.mlkem1024_encaps(public_key, m)
        self.encapsulations.append(
            {
                "label": label,
                "m": hx(m),
                "encapsulationKeySha256": hx(hashlib.sha256(public_key).digest()),
                "sharedSecret": hx(shared),
                "ciphertext": hx(ciphertext),
            }
        )
        return shared, ciphertext


class LabelledReplay:
    """Replays one step's listed random values and ML-KEM encapsulations, in order."""

    def __init__(self, random: list[Any], encapsulations: list[Any] | None = None) -> None:
        self._random = deque((str(r["label"]), unhex(r["value"])) for r in random)
        self._encapsulations = deque(encapsulations or [])

    def random_bytes(self, length: int) -> bytes:
        if not self._random:
            raise ReplayError(f"the step asked for {length} random bytes its vector lacks")
        label, value = self._random.popleft()
        if len(value) != length:
            raise ReplayError(f"{label!r} has {len(value)} bytes, the step asked for {length}")
        return value

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        primitives.mlkem1024_check_public_key(public_key)
        if not self._encapsulations:
            raise ReplayError("the step asked for an ML-KEM encapsulation its vector lacks")
        record = self._encapsulations.popleft()
        if hashlib.sha256(public_key).hexdigest() != record["encapsulationKeySha256"]:
            raise ReplayError(f"{record['label']!r} was recorded for another public key")
        return unhex(record["sharedSecret"]), unhex(record["ciphertext"])

    def check_exhausted(self) -> None:
        if self._random or self._encapsulations:
            left = [label for label, _ in self._random] + [
                str(e["label"]) for e in self._encapsulations
            ]
            raise ReplayError(f"the step left listed values unused: {left}")
