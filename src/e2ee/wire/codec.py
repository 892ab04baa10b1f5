"""Strict canonical CBOR (RFC 8949 section 4.2.1, core deterministic encoding).

Map keys are restricted to the unsigned integers 0..23, whose encodings are one byte each, so
the length-first order (RFC 8949 section 4.2.3, what cbor2 calls canonical) and the bytewise
order of section 4.2.1 coincide and there is exactly one valid encoding of every map.

Two decoders share one definition of "acceptable":

* :func:`decode` -- the generic one, for bundles and persisted state: a linear walk over the
  item heads (:func:`_check_profile`) decides whether the input is one canonical item of the
  profile, refusing everything else (tags above all) before ``cbor2`` sees it; then ``cbor2``
  (in C) builds the value, with indefinite lengths and duplicate keys disabled and a depth
  limit as a second fence. The walk is the definition: an input it accepts is canonical, so
  the earlier type walk over the decoded value and its re-encoding (which had to equal the
  input byte for byte) are gone; tests keep that earlier decoder as a reference and check
  that the two accept exactly the same inputs.
* :func:`read_flat_array` -- a hand-written reader for the fixed message layouts (a flat array
  of unsigned integers, byte strings, booleans and null) used on the per-message hot path. It
  accepts exactly the canonical encodings and nothing else; tests fuzz it against
  :func:`decode`.

This is the only module that imports ``cbor2``; its exceptions never escape.
"""

from __future__ import annotations

from typing import Any

import cbor2

from e2ee.errors import DecodeError
from e2ee.limits import MAX_CBOR_DEPTH

CBORValue = Any
"""A decoded value: int, bytes, bool, None, list of values, or dict[int, value]."""


def encode(value: CBORValue) -> bytes:
    """Canonical CBOR encoding of a value built from the admitted types."""
    return bytes(cbor2.dumps(value, canonical=True))


def decode(data: bytes, *, max_size: int) -> CBORValue:
    """Decode one canonical CBOR item that is exactly ``data``; raises :class:`DecodeError`."""
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    if len(data) > max_size:
        raise DecodeError(f"structure is {len(data)} bytes, over the limit of {max_size}")
    if not data:
        raise DecodeError("empty input")
    _check_profile(data)
    try:
        return cbor2.loads(
            data,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            max_depth=MAX_CBOR_DEPTH,
        )
    except (
        cbor2.CBORError,
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,
        MemoryError,
        UnicodeError,
        LookupError,
        AttributeError,
    ):  # pragma: no cover (the walk refused everything cbor2 would refuse)
        raise DecodeError("malformed CBOR") from None


def _check_profile(data: bytes) -> None:
    """Refuse, before ``cbor2`` interprets anything, every input that is not one item of the
    profile (spec/wire.md section 1): tags (major type 6), text strings, floats and simple
    values other than false/true/null, indefinite lengths and reserved heads, non-minimal heads,
    map keys other than 0..23 in ascending order, nesting beyond ``MAX_CBOR_DEPTH``, truncation
    and trailing bytes.

    ``cbor2`` resolves value-sharing tags (28/29) and string references (25/256) while it
    decodes, so a few hundred bytes of shared references expand into a structure whose walk
    and re-encoding take exponential time or gigabytes. This walk reads each head once and
    skips byte strings without copying: time linear in ``len(data)``, and memory bounded by
    the depth limit (at most ``MAX_CBOR_DEPTH + 1`` open levels). A container that announces
    more items than bytes are left is refused at once (every item takes at least one byte).
    """
    size = len(data)
    pos = 0
    # Per open level: items still to read, and for a map the previous key (-1 before the
    # first), for an array (or the top level) None. A map of n entries has 2n items: after
    # taking one, an odd count left means it was a key.
    remaining = [1]
    previous_key: list[int | None] = [None]
    left = 1  # remaining[-1], kept in a local on the hot path
    previous: int | None = None  # previous_key[-1]
    while True:
        if not left:
            remaining.pop()
            previous_key.pop()
            if not remaining:
                break
            left = remaining[-1]
            previous = previous_key[-1]
            continue
        left -= 1
        if pos >= size:
            raise DecodeError("truncated CBOR")
        initial = data[pos]
        pos += 1
        if previous is not None and left & 1:
            if initial > 23:  # the one-byte heads 0x00..0x17 are the unsigned integers 0..23
                raise DecodeError("map keys must be integers from 0 to 23")
            if initial <= previous:
                raise DecodeError("not canonical CBOR (map keys out of order)")
            previous = initial
            continue
        major = initial >> 5
        if major == 7:  # floats and simple values
            if initial == 0xF4 or initial == 0xF5 or initial == 0xF6:
                continue
            raise DecodeError("CBOR floats and simple values other than false, true, null")
        info = initial & 0x1F
        if info < 24:
            value = info
        else:  # _read_head, inline: this walk runs on every decode, a call per item costs
            width = _WIDTH_FOR_INFO.get(info)
            if width is None:
                raise DecodeError("indefinite or reserved CBOR length")
            end = pos + width
            if end > size:
                raise DecodeError("truncated CBOR")
            value = int.from_bytes(data[pos:end], "big")
            if value < _MIN_FOR_INFO[info]:
                raise DecodeError("non-minimal CBOR integer")
            pos = end
        if major <= 1:
            continue
        if major == 2:
            if value > size - pos:
                raise DecodeError("truncated byte string")
            pos += value
        elif major == 4 or major == 5:
            if len(remaining) > MAX_CBOR_DEPTH:
                raise DecodeError("CBOR nesting too deep")
            items = value if major == 4 else 2 * value
            if items > size - pos:
                raise DecodeError("truncated CBOR")
            remaining[-1] = left
            previous_key[-1] = previous
            remaining.append(items)
            left = items
            previous = None if major == 4 else -1
            previous_key.append(previous)
        elif major == 3:
            raise DecodeError("CBOR text strings are not allowed")
        else:
            raise DecodeError("CBOR tags are not allowed")
    if pos != size:
        raise DecodeError("not canonical CBOR (or trailing bytes)")


def is_int(value: CBORValue, expected: int) -> bool:
    """True when a decoded ``value`` is the integer ``expected``. Compare version and type
    fields with this, never with ``==`` alone: Python's ``True == 1`` and ``False == 0``, so
    ``==`` would also admit the CBOR ``true`` (``false``), a second encoding of the field."""
    return type(value) is int and value == expected


# --- fast path for the fixed message layouts ---------------------------------------------


def encode_uint(value: int) -> bytes:
    """Canonical head of major type 0 (unsigned integer)."""
    return _head(0, value)


def encode_bytes(value: bytes) -> bytes:
    """Canonical encoding of a byte string (major type 2)."""
    return _head(2, len(value)) + value


def encode_array_head(length: int) -> bytes:
    return _head(4, length)


ENCODED_NULL = b"\xf6"
ENCODED_TRUE = b"\xf5"
ENCODED_FALSE = b"\xf4"


def _head(major: int, value: int) -> bytes:
    top = major << 5
    if value < 24:
        return bytes((top | value,))
    if value < 0x100:
        return bytes((top | 24, value))
    if value < 0x10000:
        return bytes((top | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((top | 26,)) + value.to_bytes(4, "big")
    return bytes((top | 27,)) + value.to_bytes(8, "big")


_MIN_FOR_INFO = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
_WIDTH_FOR_INFO = {24: 1, 25: 2, 26: 4, 27: 8}


def read_flat_array(
    data: bytes, max_size: int
) -> tuple[list[int | bytes | bool | None], list[int]]:
    """Parse a canonical flat CBOR array of uint / bstr / bool / null.

    Returns the items and the byte offset at which each item starts (so callers can
    authenticate exact wire prefixes). Raises :class:`DecodeError` for anything else: other
    major types, non-minimal heads, indefinite lengths, truncation, trailing bytes.
    """
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    size = len(data)
    if size > max_size:
        raise DecodeError(f"message is {size} bytes, over the limit of {max_size}")
    major, count, pos = _read_head(data, 0, size)
    if major != 4:
        raise DecodeError("expected a CBOR array")
    if count > 32:
        raise DecodeError("array too long")
    items: list[int | bytes | bool | None] = []
    offsets: list[int] = []
    for _ in range(count):
        offsets.append(pos)
        if pos >= size:
            raise DecodeError("truncated message")
        initial = data[pos]
        if initial == 0xF6:
            items.append(None)
            pos += 1
            continue
        if initial == 0xF5 or initial == 0xF4:
            items.append(initial == 0xF5)
            pos += 1
            continue
        major, value, pos = _read_head(data, pos, size)
        if major == 0:
            items.append(value)
        elif major == 2:
            end = pos + value
            if end > size:
                raise DecodeError("truncated byte string")
            items.append(data[pos:end])
            pos = end
        else:
            raise DecodeError("unexpected CBOR type in message")
    if pos != size:
        raise DecodeError("trailing bytes after message")
    return items, offsets


def _read_head(data: bytes, pos: int, size: int) -> tuple[int, int, int]:
    if pos >= size:
        raise DecodeError("truncated CBOR")
    initial = data[pos]
    major = initial >> 5
    info = initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    width = _WIDTH_FOR_INFO.get(info)
    if width is None:
        raise DecodeError("indefinite or reserved CBOR length")
    end = pos + width
    if end > size:
        raise DecodeError("truncated CBOR")
    value = int.from_bytes(data[pos:end], "big")
    if value < _MIN_FOR_INFO[info]:
        raise DecodeError("non-minimal CBOR integer")
    return major, value, end
