"""Independent cross-checks of e2ee's primitive usage against published known answers.

The files come from the PyPI package ``cryptography-vectors`` (the pyca/cryptography test
vectors, a test dependency), not from this repository:

* RFC 7748 section 5.2 (X25519): ``asymmetric/X25519/rfc7748.txt``;
* RFC 5869 appendix A (HKDF-SHA-256): ``KDF/rfc-5869-HKDF-SHA256.txt``;
* RFC 8032 section 7.1 / the SUPERCOP list (Ed25519): ``asymmetric/Ed25519/sign.input``;
* FIPS 203 ML-KEM-1024 known answers: ``asymmetric/MLKEM/kat_MLKEM_1024.rsp``.

Every value is computed with :mod:`e2ee.crypto.primitives`, the functions the protocol uses.
Each test asserts how many cases it checked, so an emptied or renamed file cannot pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cryptography_vectors
import pytest

from e2ee.crypto import primitives
from e2ee.errors import HandshakeError, SignatureError
from e2ee.vectors import reference

VECTORS_ROOT = Path(cryptography_vectors.__file__).resolve().parent


def _read(*parts: str) -> str:
    with cryptography_vectors.open_vector_file(str(Path(*parts)), "r") as handle:
        text: str = handle.read()
    return text


def _blocks(text: str, first_key: str) -> Iterator[dict[str, str]]:
    """``KEY = value`` records, a new one starting at each ``first_key`` line."""
    record: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        if key == first_key and record:
            yield record
            record = {}
        record[key] = value
    if record:
        yield record


def test_the_vector_package_is_the_expected_one() -> None:
    for parts in (
        ("asymmetric", "X25519", "rfc7748.txt"),
        ("KDF", "rfc-5869-HKDF-SHA256.txt"),
        ("asymmetric", "Ed25519", "sign.input"),
        ("asymmetric", "MLKEM", "kat_MLKEM_1024.rsp"),
    ):
        assert (VECTORS_ROOT / Path(*parts)).is_file(), parts


def test_x25519_rfc7748() -> None:
    """RFC 7748 section 5.2. e2ee refuses u-coordinates with the top bit set (non-canonical,
    primitives.md) where RFC 7748 masks the bit; such a case must be refused, and must give the
    RFC's answer once the caller masks the bit itself."""
    checked = refused = 0
    for case in _blocks(_read("asymmetric", "X25519", "rfc7748.txt"), "COUNT"):
        scalar = bytes.fromhex(case["INPUT_SCALAR"])
        u = bytes.fromhex(case["INPUT_U"])
        expected = bytes.fromhex(case["OUTPUT_U"])
        if u[31] & 0x80:
            with pytest.raises(HandshakeError):
                primitives.x25519(scalar, u)
            u = u[:31] + bytes([u[31] & 0x7F])
            refused += 1
        assert primitives.x25519(scalar, u) == expected, case["COUNT"]
        if u == bytes([9]) + bytes(31):
            assert primitives.x25519_public_key(scalar) == expected
        checked += 1
    assert checked == 3
    assert refused == 1  # the second RFC 7748 vector has the top bit of u set


def test_hkdf_sha256_rfc5869() -> None:
    checked = 0
    for case in _blocks(_read("KDF", "rfc-5869-HKDF-SHA256.txt"), "COUNT"):
        assert case["Hash"] == "SHA-256"
        okm = primitives.hkdf_sha256(
            bytes.fromhex(case["salt"]),
            bytes.fromhex(case["IKM"]),
            bytes.fromhex(case["info"]),
            int(case["L"]),
        )
        assert okm.hex() == case["OKM"], case["COUNT"]
        checked += 1
    assert checked == 3  # RFC 5869 A.1-A.3 (A.3: empty salt and info)


def test_ed25519_rfc8032_sign_input() -> None:
    """Keys, deterministic signatures and strict verification (1024 SUPERCOP cases, the first
    ones being RFC 8032 section 7.1); every tenth signature is also corrupted and refused."""
    checked = 0
    for number, line in enumerate(_read("asymmetric", "Ed25519", "sign.input").splitlines()):
        if not line.strip():
            continue
        secret, public, message, signed, _ = (bytes.fromhex(f) for f in line.split(":"))
        seed, signature = secret[:32], signed[:64]
        assert signed[64:] == message
        assert primitives.ed25519_public_key(seed) == public
        assert primitives.ed25519_sign(seed, message) == signature
        primitives.ed25519_verify(public, message, signature)
        if number % 10 == 0:
            with pytest.raises(SignatureError):
                primitives.ed25519_verify(
                    public, message, signature[:-1] + bytes([signature[-1] ^ 1])
                )
            with pytest.raises(SignatureError):
                primitives.ed25519_verify(public, message + b"\x00", signature)
        checked += 1
    assert checked == 1024


def _mlkem_cases() -> list[dict[str, str]]:
    return list(_blocks(_read("asymmetric", "MLKEM", "kat_MLKEM_1024.rsp"), "count"))


def test_mlkem1024_fips203_known_answers() -> None:
    """Key generation from (d, z), decapsulation of the valid ciphertext, and implicit rejection
    of the modified one (``ct_n`` -> ``ss_n``), for every KAT entry."""
    checked = 0
    for case in _mlkem_cases():
        seed = bytes.fromhex(case["d"] + case["z"])
        public = bytes.fromhex(case["pk"])
        assert primitives.mlkem1024_public_key(seed) == public, case["count"]
        primitives.mlkem1024_check_public_key(public)
        ciphertext = bytes.fromhex(case["ct"])
        assert primitives.mlkem1024_decapsulate(seed, ciphertext).hex() == case["ss"]
        rejected = bytes.fromhex(case["ct_n"])
        assert primitives.mlkem1024_decapsulate(seed, rejected).hex() == case["ss_n"]
        checked += 1
    assert checked == 1000


def test_mlkem1024_encapsulation_of_the_vector_generator() -> None:
    """The vectors' ML-KEM encapsulations come from the pure-Python FIPS 203 code of
    :mod:`e2ee.vectors.reference` (``Encaps_internal(ek, m)``): it must reproduce the KAT
    ciphertexts and secrets from ``msg`` (a few entries: it is slow)."""
    cases = _mlkem_cases()[:4]
    for case in cases:
        shared, ciphertext = reference.mlkem1024_encaps(
            bytes.fromhex(case["pk"]), bytes.fromhex(case["msg"])
        )
        assert ciphertext.hex() == case["ct"]
        assert shared.hex() == case["ss"]
    assert len(cases) == 4
