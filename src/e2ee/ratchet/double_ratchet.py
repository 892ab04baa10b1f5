"""The Double Ratchet state machine (Signal spec sections 3 and 4).

One mechanism for both modes: with header encryption the receiving chains are named by their
header keys and headers are opened with XChaCha20-Poly1305; without it they are named by the
peer's ratchet public key and the header travels in clear (still authenticated by the message
MAC, which covers every byte before the ciphertext).

``decrypt`` never mutates anything before the message authenticates: it computes the
candidate chain keys in locals, verifies the tag, and only then commits. Keys for skipped
messages are derived after authentication, so a forged message costs at most ``MAX_SKIP``
HMACs plus one DH step and changes nothing.

PN is the number of messages sent on the previous sending chain (the spec's PN, not
libsignal's N - 1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from e2ee.crypto import primitives
from e2ee.crypto.provider import Provider
from e2ee.errors import (
    AuthenticationError,
    DecodeError,
    DuplicateMessageError,
    ExhaustedError,
    HandshakeError,
    LocalError,
    TooManySkippedError,
)
from e2ee.limits import (
    ENCRYPTED_HEADER_SIZE,
    HEADER_NONCE_SIZE,
    HEADER_PLAINTEXT_SIZE,
    MAX_COUNTER,
    MAX_PREVIOUS_CHAIN_SKIP,
    MAX_SKIP,
)
from e2ee.ratchet import chains
from e2ee.ratchet.skipped import SkippedKeys
from e2ee.wire import codec

_COUNTERS = struct.Struct(">II")


@dataclass(slots=True)
class RatchetState:
    """The mutable state of one side of a Double Ratchet session."""

    header_encryption: bool
    associated_data: bytes
    root_key: bytes
    dhs_private: bytes
    dhs_public: bytes
    dhr: bytes | None
    cks: bytes | None
    ckr: bytes | None
    ns: int
    nr: int
    pn: int
    hks: bytes | None
    hkr: bytes | None
    nhks: bytes | None
    nhkr: bytes | None
    skipped: SkippedKeys

    def __repr__(self) -> str:
        return (
            f"RatchetState(header_encryption={self.header_encryption}, ns={self.ns}, "
            f"nr={self.nr}, pn={self.pn}, skipped={len(self.skipped)})"
        )

    # --- initialisation (spec 3.3 / 4.3) ----------------------------------------------

    @classmethod
    def init_initiator(
        cls,
        *,
        root_key: bytes,
        header_key: bytes,
        next_header_key: bytes,
        peer_ratchet_key: bytes,
        associated_data: bytes,
        header_encryption: bool,
        provider: Provider,
    ) -> RatchetState:
        private = provider.random_bytes(32)
        public = primitives.x25519_public_key(private)
        dh = primitives.x25519(private, peer_ratchet_key)
        if header_encryption:
            rk, cks, nhks = chains.kdf_rk_he(root_key, dh)
        else:
            (rk, cks), nhks = chains.kdf_rk(root_key, dh), None
        return cls(
            header_encryption=header_encryption,
            associated_data=associated_data,
            root_key=rk,
            dhs_private=private,
            dhs_public=public,
            dhr=peer_ratchet_key,
            cks=cks,
            ckr=None,
            ns=0,
            nr=0,
            pn=0,
            hks=header_key if header_encryption else None,
            hkr=None,
            nhks=nhks,
            nhkr=next_header_key if header_encryption else None,
            skipped=SkippedKeys(),
        )

    @classmethod
    def init_responder(
        cls,
        *,
        root_key: bytes,
        header_key: bytes,
        next_header_key: bytes,
        ratchet_private: bytes,
        ratchet_public: bytes,
        associated_data: bytes,
        header_encryption: bool,
    ) -> RatchetState:
        return cls(
            header_encryption=header_encryption,
            associated_data=associated_data,
            root_key=root_key,
            dhs_private=ratchet_private,
            dhs_public=ratchet_public,
            dhr=None,
            cks=None,
            ckr=None,
            ns=0,
            nr=0,
            pn=0,
            hks=None,
            hkr=None,
            nhks=next_header_key if header_encryption else None,
            nhkr=header_key if header_encryption else None,
            skipped=SkippedKeys(),
        )

    # --- sending ---------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, prefix: bytes, provider: Provider) -> bytes:
        """Encrypt one message; ``prefix`` is the wire bytes before the header."""
        cks = self.cks
        if cks is None:
            raise LocalError("this session cannot send before it has received a message")
        if self.ns >= MAX_COUNTER:
            raise ExhaustedError("sending chain exhausted; start a new session")
        header = self.dhs_public + _COUNTERS.pack(self.pn, self.ns)
        if self.header_encryption:
            assert self.hks is not None
            nonce = provider.random_bytes(HEADER_NONCE_SIZE)
            header = nonce + primitives.xchacha20poly1305_encrypt(
                self.hks, nonce, header, self.associated_data + prefix
            )
        mac_prefix = prefix + codec.encode_bytes(header)
        self.cks, ciphertext = chains.seal(cks, plaintext, self.associated_data + mac_prefix)
        self.ns += 1
        return mac_prefix + codec.encode_bytes(ciphertext)

    # --- receiving -------------------------------------------------------------------------

    def decrypt(
        self,
        header: bytes,
        ciphertext: bytes,
        header_prefix: bytes,
        mac_prefix: bytes,
        provider: Provider,
    ) -> bytes:
        """Decrypt one message, committing state only after it authenticates."""
        ad = self.associated_data
        mac_ad = ad + mac_prefix
        if self.header_encryption:
            plain, reference, new_chain = self._open_header(header, ad + header_prefix)
        else:
            if len(header) != HEADER_PLAINTEXT_SIZE:
                raise DecodeError("header size does not match this session's mode")
            plain = header
            reference = header[:32]
            new_chain = reference != self.dhr and not self.skipped.knows_chain(reference)
        pn, n = _COUNTERS.unpack_from(plain, 32)
        if n >= MAX_COUNTER:
            # No sender uses this number (it stops at Ns = MAX_COUNTER - 1), and accepting it
            # would set Nr to 2^32, outside the u32 the state holds. PN may be MAX_COUNTER.
            raise DecodeError("message number out of range")

        if not new_chain:
            nr = self.nr
            if n == nr and reference == self._current_reference():
                # The next message on the current chain: the common case.
                ckr = self.ckr
                if ckr is None:
                    raise AuthenticationError("no receiving chain for this header")
                self.ckr, plaintext = chains.open_(ckr, ciphertext, mac_ad)
                self.nr = n + 1
                return plaintext
            if n < nr or reference != self._current_reference():
                key = self.skipped.get(reference, n)
                if key is None:
                    raise DuplicateMessageError("message key already used or discarded", counter=n)
                plaintext = chains.decrypt(key, ciphertext, mac_ad)
                self.skipped.remove(reference, n)
                return plaintext
            ckr = self.ckr
            if ckr is None:
                raise AuthenticationError("no receiving chain for this header")
            if n - nr > MAX_SKIP:
                raise TooManySkippedError(
                    "message is too far ahead on its chain", counter=n, limit=MAX_SKIP
                )
            skipped, chain_key = _advance(ckr, n - nr)
            self.ckr, plaintext = chains.open_(chain_key, ciphertext, mac_ad)
            self._store_skipped(reference, nr, skipped)
            self.nr = n + 1
            return plaintext

        # A new receiving chain: a DH ratchet step (spec 3.5 / 4.5). Only the receiving half
        # is needed to authenticate; the new sending key is drawn after that.
        if n > MAX_SKIP:
            raise TooManySkippedError(
                "first message of a new chain is too far ahead", counter=n, limit=MAX_SKIP
            )
        ratchet_key = plain[:32]
        try:
            dh_receive = primitives.x25519(self.dhs_private, ratchet_key)
        except HandshakeError:
            raise AuthenticationError("invalid ratchet public key") from None
        nhkr_new: bytes | None = None
        if self.header_encryption:
            rk1, ckr_new, nhkr_new = chains.kdf_rk_he(self.root_key, dh_receive)
        else:
            rk1, ckr_new = chains.kdf_rk(self.root_key, dh_receive)
        skipped, chain_key = _advance(ckr_new, n)
        next_ckr, plaintext = chains.open_(chain_key, ciphertext, mac_ad)

        # Authenticated: only now the new sending half is drawn (spec step 12), and before
        # anything is stored, so a provider that fails here leaves the state as it was.
        new_private = provider.random_bytes(32)
        new_public = primitives.x25519_public_key(new_private)
        dh_send = primitives.x25519(new_private, ratchet_key)
        nhks_new: bytes | None = None
        if self.header_encryption:
            root_key, cks, nhks_new = chains.kdf_rk_he(rk1, dh_send)
        else:
            root_key, cks = chains.kdf_rk(rk1, dh_send)

        # Commit. First the rest of the previous receiving chain.
        if self.ckr is not None and pn > self.nr:
            old_reference = self._current_reference()
            assert old_reference is not None
            count = min(pn - self.nr, MAX_PREVIOUS_CHAIN_SKIP)
            old_skipped, _ = _advance(self.ckr, count)
            self._store_skipped(old_reference, self.nr, old_skipped)
        self.skipped.add_chain(reference)
        self._store_skipped(reference, 0, skipped)
        self.root_key, self.cks = root_key, cks
        if self.header_encryption:
            self.hks = self.nhks
            self.hkr = self.nhkr
            self.nhkr = nhkr_new
            self.nhks = nhks_new
        self.pn = self.ns
        self.ns = 0
        self.nr = n + 1
        self.dhr = ratchet_key
        self.ckr = next_ckr
        self.dhs_private = new_private
        self.dhs_public = new_public
        return plaintext

    def _current_reference(self) -> bytes | None:
        """The name of the current receiving chain (see :mod:`e2ee.ratchet.skipped`)."""
        return self.hkr if self.header_encryption else self.dhr

    def _open_header(self, header: bytes, ad: bytes) -> tuple[bytes, bytes, bool]:
        """Open an encrypted header: (plaintext, chain reference, is it a new chain).

        Trial order (spec 4.5, cheapest first for the common cases): the current header key,
        the remembered chains that still hold skipped keys, the next header key (a DH step);
        only then the other remembered chains, so that a late duplicate is still reported as
        a duplicate. Each trial is one XChaCha20-Poly1305 open of 56 bytes; at most
        MAX_RECEIVING_CHAINS + 1 of them.
        """
        if len(header) != ENCRYPTED_HEADER_SIZE:
            raise DecodeError("header size does not match this session's mode")
        nonce, sealed = header[:HEADER_NONCE_SIZE], header[HEADER_NONCE_SIZE:]
        try_open = primitives.xchacha20poly1305_try_decrypt
        hkr = self.hkr
        if hkr is not None:
            plain = try_open(hkr, nonce, sealed, ad)
            if plain is not None:
                return plain, hkr, False
        others = [r for r in self.skipped.references() if r != hkr]
        for reference in others:
            if self.skipped.has_keys(reference):
                plain = try_open(reference, nonce, sealed, ad)
                if plain is not None:
                    return plain, reference, False
        nhkr = self.nhkr
        assert nhkr is not None  # header encryption always has a next header key (load checks)
        plain = try_open(nhkr, nonce, sealed, ad)
        if plain is not None:
            return plain, nhkr, True
        for reference in others:
            if not self.skipped.has_keys(reference):
                plain = try_open(reference, nonce, sealed, ad)
                if plain is not None:
                    return plain, reference, False
        raise AuthenticationError("header does not decrypt under any header key")

    def _store_skipped(self, reference: bytes, first: int, chain_keys: list[bytes]) -> None:
        for offset, chain_key in enumerate(chain_keys):
            self.skipped.add(reference, first + offset, chains.message_key(chain_key))


def _advance(chain_key: bytes, steps: int) -> tuple[list[bytes], bytes]:
    """The chain keys passed over in ``steps`` steps, and the chain key reached."""
    passed: list[bytes] = []
    step = chains.next_chain_key
    for _ in range(steps):
        passed.append(chain_key)
        chain_key = step(chain_key)
    return passed, chain_key
