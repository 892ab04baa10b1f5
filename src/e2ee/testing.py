"""Providers for tests, vectors and benchmarks: reproducible randomness.

Not part of the protocol core: no core module imports this one (an import-linter contract
enforces it), so a deterministic provider can never end up in production code paths by
accident.
"""

from __future__ import annotations

import hashlib
from collections import deque

from e2ee.crypto import primitives


class DeterministicProvider:
    """Randomness expanded from a seed with SHAKE-256; ML-KEM encapsulations are real and
    recorded in :attr:`encapsulations` (cryptography cannot take encapsulation randomness), so
    a :class:`ReplayProvider` can reproduce a run exactly."""

    def __init__(self, seed: bytes | str) -> None:
        self._seed = seed.encode() if isinstance(seed, str) else seed
        self._counter = 0
        self.drawn: list[bytes] = []
        self.encapsulations: list[tuple[bytes, bytes]] = []

    def random_bytes(self, length: int) -> bytes:
        self._counter += 1
        out = hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(length)
        self.drawn.append(out)
        return out

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        result = primitives.mlkem1024_encapsulate(public_key)
        self.encapsulations.append(result)
        return result

    def __repr__(self) -> str:
        return f"DeterministicProvider(draws={self._counter})"


class ReplayProvider:
    """Replays recorded random values and encapsulations in order; fails loudly when a run
    asks for something that was not recorded."""

    def __init__(
        self, random_values: list[bytes], encapsulations: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self._random = deque(random_values)
        self._encapsulations = deque(encapsulations or [])

    def random_bytes(self, length: int) -> bytes:
        if not self._random:
            raise AssertionError("replay provider ran out of random values")
        value = self._random.popleft()
        if len(value) != length:
            raise AssertionError(f"replay expected {len(value)} random bytes, asked for {length}")
        return value

    def mlkem1024_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        primitives.mlkem1024_check_public_key(public_key)
        if not self._encapsulations:
            raise AssertionError("replay provider ran out of ML-KEM encapsulations")
        return self._encapsulations.popleft()

    @property
    def exhausted(self) -> bool:
        return not self._random and not self._encapsulations
