"""Independent reference implementations used by the vector *generator* only.

The expected values of the primitive and KDF vectors are computed here, from the standards
(RFC 7748, RFC 8032, RFC 5869, RFC 8439 / draft-irtf-cfrg-xchacha, FIPS 203), without going
through :mod:`e2ee.crypto.primitives`. ``e2ee vectors verify`` then recomputes every value with
e2ee's own functions, so a vector passes only when two independent code paths agree.

These functions are slow, variable-time and meant for fixed public test inputs: never use them
for real keys. Nothing outside :mod:`e2ee.vectors` (and the tests) imports this module.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# --- hashing, HMAC, HKDF (RFC 2104, RFC 5869) ----------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand, written out."""
    prk = hmac_sha256(salt if salt else bytes(32), ikm)
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


# --- X25519 (RFC 7748 section 5, Montgomery ladder) -----------------------------------------

P25519 = 2**255 - 19
_A24 = 121665


def x25519_clamp(scalar: bytes) -> int:
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(k, "little")


def x25519(scalar: bytes, u_bytes: bytes) -> bytes:
    """X25519 as RFC 7748 defines it: the top bit of u is masked, u is reduced mod p, and an
    all-zero result is returned as is (the caller's policy decides what to do with it)."""
    k = x25519_clamp(scalar)
    u = (int.from_bytes(u_bytes, "little") & ((1 << 255) - 1)) % P25519
    x1, x2, z2, x3, z3 = u, 1, 0, u, 1
    swap = 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a = (x2 + z2) % P25519
        aa = a * a % P25519
        b = (x2 - z2) % P25519
        bb = b * b % P25519
        e = (aa - bb) % P25519
        c = (x3 + z3) % P25519
        d = (x3 - z3) % P25519
        da = d * a % P25519
        cb = c * b % P25519
        x3 = (da + cb) ** 2 % P25519
        z3 = x1 * (da - cb) ** 2 % P25519
        x2 = aa * bb % P25519
        z2 = e * (aa + _A24 * e) % P25519
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P25519 - 2, P25519) % P25519).to_bytes(32, "little")


def x25519_base(scalar: bytes) -> bytes:
    return x25519(scalar, (9).to_bytes(32, "little"))


def x25519_is_on_twist(u: int) -> bool:
    """True when u^3 + A u^2 + u is a non-square mod p (the point lies on the twist)."""
    rhs = (u * u * u + 486662 * u * u + u) % P25519
    return rhs != 0 and pow(rhs, (P25519 - 1) // 2, P25519) == P25519 - 1


# --- Ed25519 (RFC 8032 section 5.1, written out) --------------------------------------------

ED_L = 2**252 + 27742317777372353535851937790883648493
_ED_D = -121665 * pow(121666, P25519 - 2, P25519) % P25519
_SQRT_M1 = pow(2, (P25519 - 1) // 4, P25519)

EdPoint = tuple[int, int, int, int]


def _ed_add(p: EdPoint, q: EdPoint) -> EdPoint:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P25519
    b = (p[1] + p[0]) * (q[1] + q[0]) % P25519
    c = 2 * p[3] * q[3] * _ED_D % P25519
    d = 2 * p[2] * q[2] % P25519
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P25519, g * h % P25519, f * g % P25519, e * h % P25519)


def _ed_mul(scalar: int, point: EdPoint) -> EdPoint:
    result: EdPoint = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = _ed_add(result, point)
        point = _ed_add(point, point)
        scalar >>= 1
    return result


def _ed_recover_x(y: int, sign: int) -> int | None:
    if y >= P25519:
        return None
    x2 = (y * y - 1) * pow(_ED_D * y * y + 1, P25519 - 2, P25519) % P25519
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P25519 + 3) // 8, P25519)
    if (x * x - x2) % P25519 != 0:
        x = x * _SQRT_M1 % P25519
    if (x * x - x2) % P25519 != 0:
        return None
    if (x & 1) != sign:
        x = P25519 - x
    return x


_ED_BY = 4 * pow(5, P25519 - 2, P25519) % P25519
_ED_BX = _ed_recover_x(_ED_BY, 0)
assert _ED_BX is not None
ED_BASE: EdPoint = (_ED_BX, _ED_BY, 1, _ED_BX * _ED_BY % P25519)


def ed_encode(point: EdPoint) -> bytes:
    zinv = pow(point[2], P25519 - 2, P25519)
    x = point[0] * zinv % P25519
    y = point[1] * zinv % P25519
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ed_decode(data: bytes) -> EdPoint | None:
    value = int.from_bytes(data, "little")
    y = value & ((1 << 255) - 1)
    x = _ed_recover_x(y, value >> 255)
    if x is None:
        return None
    return (x, y, 1, x * y % P25519)


def _ed_secret(seed: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public_key(seed: bytes) -> bytes:
    a, _prefix = _ed_secret(seed)
    return ed_encode(_ed_mul(a, ED_BASE))


def ed25519_sign_parts(seed: bytes, message: bytes) -> tuple[bytes, int]:
    """(R, S) of the RFC 8032 signature; S is returned as an integer below L."""
    a, prefix = _ed_secret(seed)
    public = ed_encode(_ed_mul(a, ED_BASE))
    r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % ED_L
    big_r = ed_encode(_ed_mul(r, ED_BASE))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % ED_L
    return big_r, (r + k * a) % ED_L


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    big_r, s = ed25519_sign_parts(seed, message)
    return big_r + s.to_bytes(32, "little")


def ed25519_neutral_r_signature(seed: bytes, message: bytes) -> bytes:
    """A signature with R = the neutral element (encoded 01 00..00, a point of small order)
    that satisfies the cofactorless equation [S]B = R + [k]A: S = k * a mod L, with
    k = SHA-512(R || A || M) mod L and a the signer's clamped secret scalar. A verifier that
    checks only the equation accepts it; a strict one (RFC 8032 plus the small-order R rule of
    libsodium) rejects it. Not a forgery: it needs the secret scalar."""
    a, _prefix = _ed_secret(seed)
    public = ed_encode(_ed_mul(a, ED_BASE))
    big_r = ed_encode((0, 1, 1, 0))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % ED_L
    s = k * a % ED_L
    assert ed_encode(_ed_add(_ed_mul(s, ED_BASE), _ed_mul(ED_L - k, _ed_mul(a, ED_BASE)))) == big_r
    return big_r + s.to_bytes(32, "little")


def ed25519_public_to_x25519(public_key: bytes) -> bytes:
    """u = (1 + y) / (1 - y) (RFC 7748 section 4.1 birational map)."""
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow((1 - y) % P25519, P25519 - 2, P25519) % P25519
    return u.to_bytes(32, "little")


def ed25519_seed_to_x25519(seed: bytes) -> bytes:
    """The clamped scalar of the Ed25519 key (RFC 8032 section 5.1.5), as 32 bytes."""
    return x25519_clamp(hashlib.sha512(seed).digest()[:32]).to_bytes(32, "little")


# --- XChaCha20-Poly1305 (HChaCha20 written out; ChaCha20-Poly1305 from cryptography) --------


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) & 0xFFFFFFFF) | (value >> (32 - shift))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 7)


def ed25519_small_order_points() -> list[bytes]:
    """The eight canonical encodings of points of order dividing 8, sorted."""
    points: set[bytes] = set()
    y = 3
    while len(points) < 8:
        point = ed_decode(y.to_bytes(32, "little"))
        y += 1
        if point is None:
            continue
        torsion = _ed_mul(ED_L, point)
        for k in range(8):
            points.add(ed_encode(_ed_mul(k, torsion)))
    return sorted(points)


def ed25519_mixed_order_key(seed: bytes, torsion: bytes) -> bytes:
    """A valid public key plus a small-order point: on the curve, canonical, but not in the
    prime-order subgroup."""
    point = ed_decode(ed25519_public_key(seed))
    small = ed_decode(torsion)
    assert point is not None
    assert small is not None
    return ed_encode(_ed_add(point, small))


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    constants = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state = (
        constants
        + [int.from_bytes(key[i : i + 4], "little") for i in range(0, 32, 4)]
        + [int.from_bytes(nonce16[i : i + 4], "little") for i in range(0, 16, 4)]
    )
    for _ in range(10):
        _quarter(state, 0, 4, 8, 12)
        _quarter(state, 1, 5, 9, 13)
        _quarter(state, 2, 6, 10, 14)
        _quarter(state, 3, 7, 11, 15)
        _quarter(state, 0, 5, 10, 15)
        _quarter(state, 1, 6, 11, 12)
        _quarter(state, 2, 7, 8, 13)
        _quarter(state, 3, 4, 9, 14)
    words = state[0:4] + state[12:16]
    return b"".join(w.to_bytes(4, "little") for w in words)


def xchacha20poly1305_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    subkey = hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(subkey).encrypt(bytes(4) + nonce[16:], plaintext, ad)


# --- AES-256-CBC with PKCS#7 (from cryptography's block cipher) -----------------------------


def aes256_cbc_encrypt_raw(key: bytes, iv: bytes, data: bytes) -> bytes:
    """CBC over whole blocks, no padding (the caller pads, or deliberately does not)."""
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def pkcs7(data: bytes) -> bytes:
    pad = 16 - len(data) % 16
    return data + bytes((pad,)) * pad


# --- the message encryption of the Double Ratchet (e2ee spec, written out) -----------------


def message_key_expansion(message_key: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    out = hkdf_sha256(bytes(32), message_key, info, 80)
    return out[:32], out[32:64], out[64:]


# --- canonical CBOR for the transcript (a flat array of uint / bool / null / bytes) --------


def cbor_head(major: int, value: int) -> bytes:
    top = major << 5
    if value < 24:
        return bytes((top | value,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes((top | info,)) + value.to_bytes(width, "big")
    raise ValueError("integer too large for CBOR")


def cbor_flat_array(items: list[int | bool | bytes | None]) -> bytes:
    out = cbor_head(4, len(items))
    for item in items:
        if item is None:
            out += b"\xf6"
        elif item is True:
            out += b"\xf5"
        elif item is False:
            out += b"\xf4"
        elif isinstance(item, int):
            out += cbor_head(0, item)
        else:
            out += cbor_head(2, len(item)) + item
    return out


# --- ML-KEM-1024 (FIPS 203, written out) ----------------------------------------------------

Q = 3329
_N = 256
_K = 4
_ETA1 = 2
_ETA2 = 2
_DU = 11
_DV = 5


def _bitrev7(value: int) -> int:
    return int(f"{value:07b}"[::-1], 2)


_ZETAS = [pow(17, _bitrev7(i), Q) for i in range(128)]
_GAMMAS = [pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(128)]

Poly = list[int]


def _ntt(f: Poly) -> Poly:
    f = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, _N, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = (f[j] - t) % Q
                f[j] = (f[j] + t) % Q
        length //= 2
    return f


def _ntt_inverse(f: Poly) -> Poly:
    f = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, _N, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % Q
                f[j + length] = zeta * (f[j + length] - t) % Q
        length *= 2
    return [x * 3303 % Q for x in f]


def _multiply_ntts(f: Poly, g: Poly) -> Poly:
    h = [0] * _N
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def _add(f: Poly, g: Poly) -> Poly:
    return [(a + b) % Q for a, b in zip(f, g, strict=True)]


def _byte_encode(f: Poly, d: int) -> bytes:
    acc = 0
    for i, value in enumerate(f):
        acc |= (value & ((1 << d) - 1)) << (d * i)
    return acc.to_bytes(32 * d, "little")


def _byte_decode(data: bytes, d: int) -> Poly:
    acc = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    values = [(acc >> (d * i)) & mask for i in range(_N)]
    return [v % Q for v in values] if d == 12 else values


def _compress(f: Poly, d: int) -> Poly:
    return [((x << d) + Q // 2) // Q % (1 << d) for x in f]


def _decompress(f: Poly, d: int) -> Poly:
    return [(y * Q + (1 << (d - 1))) >> d for y in f]


def _sample_ntt(seed: bytes) -> Poly:
    stream = hashlib.shake_128(seed).digest(1344)
    out: Poly = []
    pos = 0
    while len(out) < _N:
        if pos + 3 > len(stream):  # pragma: no cover - astronomically unlikely
            stream = hashlib.shake_128(seed).digest(len(stream) * 2)
        c0, c1, c2 = stream[pos], stream[pos + 1], stream[pos + 2]
        pos += 3
        d1 = c0 + 256 * (c1 % 16)
        d2 = c1 // 16 + 16 * c2
        if d1 < Q:
            out.append(d1)
        if d2 < Q and len(out) < _N:
            out.append(d2)
    return out


def _sample_cbd(data: bytes, eta: int) -> Poly:
    bits = int.from_bytes(data, "little")
    f = []
    for i in range(_N):
        x = sum((bits >> (2 * i * eta + j)) & 1 for j in range(eta))
        y = sum((bits >> (2 * i * eta + eta + j)) & 1 for j in range(eta))
        f.append((x - y) % Q)
    return f


def _prf(eta: int, seed: bytes, nonce: int) -> bytes:
    return hashlib.shake_256(seed + bytes((nonce,))).digest(64 * eta)


def _matrix(rho: bytes) -> list[list[Poly]]:
    return [[_sample_ntt(rho + bytes((j, i))) for j in range(_K)] for i in range(_K)]


def _pke_keygen(d: bytes) -> tuple[bytes, bytes]:
    g = hashlib.sha3_512(d + bytes((_K,))).digest()
    rho, sigma = g[:32], g[32:]
    a_hat = _matrix(rho)
    nonce = 0
    s = []
    for _ in range(_K):
        s.append(_sample_cbd(_prf(_ETA1, sigma, nonce), _ETA1))
        nonce += 1
    e = []
    for _ in range(_K):
        e.append(_sample_cbd(_prf(_ETA1, sigma, nonce), _ETA1))
        nonce += 1
    s_hat = [_ntt(p) for p in s]
    e_hat = [_ntt(p) for p in e]
    t_hat = []
    for i in range(_K):
        acc = e_hat[i]
        for j in range(_K):
            acc = _add(acc, _multiply_ntts(a_hat[i][j], s_hat[j]))
        t_hat.append(acc)
    ek = b"".join(_byte_encode(p, 12) for p in t_hat) + rho
    dk = b"".join(_byte_encode(p, 12) for p in s_hat)
    return ek, dk


def _pke_encrypt(ek: bytes, m: bytes, r: bytes) -> bytes:
    t_hat = [_byte_decode(ek[384 * i : 384 * (i + 1)], 12) for i in range(_K)]
    rho = ek[384 * _K :]
    a_hat = _matrix(rho)
    nonce = 0
    y = []
    for _ in range(_K):
        y.append(_sample_cbd(_prf(_ETA1, r, nonce), _ETA1))
        nonce += 1
    e1 = []
    for _ in range(_K):
        e1.append(_sample_cbd(_prf(_ETA2, r, nonce), _ETA2))
        nonce += 1
    e2 = _sample_cbd(_prf(_ETA2, r, nonce), _ETA2)
    y_hat = [_ntt(p) for p in y]
    u = []
    for i in range(_K):
        acc = [0] * _N
        for j in range(_K):
            acc = _add(acc, _multiply_ntts(a_hat[j][i], y_hat[j]))
        u.append(_add(_ntt_inverse(acc), e1[i]))
    mu = _decompress(_byte_decode(m, 1), 1)
    acc = [0] * _N
    for j in range(_K):
        acc = _add(acc, _multiply_ntts(t_hat[j], y_hat[j]))
    v = _add(_add(_ntt_inverse(acc), e2), mu)
    c1 = b"".join(_byte_encode(_compress(p, _DU), _DU) for p in u)
    c2 = _byte_encode(_compress(v, _DV), _DV)
    return c1 + c2


def _pke_decrypt(dk: bytes, c: bytes) -> bytes:
    size = 32 * _DU
    u = [_decompress(_byte_decode(c[size * i : size * (i + 1)], _DU), _DU) for i in range(_K)]
    v = _decompress(_byte_decode(c[size * _K :], _DV), _DV)
    s_hat = [_byte_decode(dk[384 * i : 384 * (i + 1)], 12) for i in range(_K)]
    acc = [0] * _N
    for i in range(_K):
        acc = _add(acc, _multiply_ntts(s_hat[i], _ntt(u[i])))
    w = [(a - b) % Q for a, b in zip(v, _ntt_inverse(acc), strict=True)]
    return _byte_encode(_compress(w, 1), 1)


def mlkem1024_keygen(seed: bytes) -> tuple[bytes, bytes]:
    """ML-KEM.KeyGen_internal(d, z) for the 64-byte seed d || z: (ek, dk)."""
    d, z = seed[:32], seed[32:]
    ek, dk_pke = _pke_keygen(d)
    dk = dk_pke + ek + hashlib.sha3_256(ek).digest() + z
    return ek, dk


def mlkem1024_encaps_key_ok(ek: bytes) -> bool:
    """FIPS 203 section 7.2: length and modulus checks."""
    if len(ek) != 384 * _K + 32:
        return False
    for i in range(_K):
        chunk = ek[384 * i : 384 * (i + 1)]
        if _byte_encode(_byte_decode(chunk, 12), 12) != chunk:
            return False
    return True


def mlkem1024_encaps(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """ML-KEM.Encaps_internal(ek, m): (shared secret K, ciphertext c)."""
    g = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()
    shared, r = g[:32], g[32:]
    return shared, _pke_encrypt(ek, m, r)


def mlkem1024_decaps(dk: bytes, c: bytes) -> bytes:
    """ML-KEM.Decaps_internal(dk, c) with implicit rejection."""
    dk_pke = dk[: 384 * _K]
    ek = dk[384 * _K : 768 * _K + 32]
    h = dk[768 * _K + 32 : 768 * _K + 64]
    z = dk[768 * _K + 64 :]
    m = _pke_decrypt(dk_pke, c)
    g = hashlib.sha3_512(m + h).digest()
    shared, r = g[:32], g[32:]
    rejected = hashlib.shake_256(z + c).digest(32)
    return shared if _pke_encrypt(ek, m, r) == c else rejected
