"""The bounded store of skipped message keys and remembered receiving chains.

A receiving chain is named by its *reference*: the peer's ratchet public key without header
encryption, the chain's header key with it. The store remembers the last
``MAX_RECEIVING_CHAINS`` chains (oldest first), each with the message keys that were skipped on
it, keyed by message number. Remembering a chain whose keys are all used lets a duplicate be
reported as a duplicate. At most ``MAX_SKIPPED_KEYS`` keys are kept in all: the oldest key is
evicted first (insertion order, which is chain order and then message order).
"""

from __future__ import annotations

from collections.abc import Iterator

from e2ee.limits import MAX_RECEIVING_CHAINS, MAX_SKIPPED_KEYS


class SkippedKeys:
    __slots__ = ("_chains", "_count")

    def __init__(self) -> None:
        self._chains: dict[bytes, dict[int, bytes]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"SkippedKeys(chains={len(self._chains)}, keys={self._count})"

    def references(self) -> Iterator[bytes]:
        """Chain references, newest first (the order in which headers are tried)."""
        return reversed(self._chains)

    def knows_chain(self, reference: bytes) -> bool:
        return reference in self._chains

    def has_keys(self, reference: bytes) -> bool:
        return bool(self._chains.get(reference))

    def get(self, reference: bytes, number: int) -> bytes | None:
        chain = self._chains.get(reference)
        return None if chain is None else chain.get(number)

    def remove(self, reference: bytes, number: int) -> None:
        del self._chains[reference][number]
        self._count -= 1

    def add_chain(self, reference: bytes) -> None:
        """Start remembering a new receiving chain, forgetting the oldest beyond the cap."""
        self._chains[reference] = {}
        while len(self._chains) > MAX_RECEIVING_CHAINS:
            oldest = next(iter(self._chains))
            self._count -= len(self._chains.pop(oldest))

    def add(self, reference: bytes, number: int, key: bytes) -> None:
        """Store one skipped key on a remembered chain, evicting the oldest beyond the cap."""
        # Keys are only ever skipped on the current chain (the newest remembered one) or, during
        # a DH step, on the chain that was current until then: both are always remembered.
        self._chains[reference][number] = key
        self._count += 1
        while self._count > MAX_SKIPPED_KEYS:
            oldest_chain = next(keys for keys in self._chains.values() if keys)
            del oldest_chain[next(iter(oldest_chain))]
            self._count -= 1

    # --- persistence ---------------------------------------------------------------------

    def dump(self) -> list[list[object]]:
        return [
            [reference, [[number, key] for number, key in keys.items()]]
            for reference, keys in self._chains.items()
        ]

    @classmethod
    def load(cls, chains: dict[bytes, dict[int, bytes]]) -> SkippedKeys:
        store = cls()
        store._chains = chains
        store._count = sum(len(keys) for keys in chains.values())
        return store
