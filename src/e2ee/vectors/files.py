"""Reading a vector directory that someone else made: which names are read, how, how much.

A vector directory is untrusted input (it comes from other implementers), and so is every name
its ``MANIFEST.json`` lists. :func:`read_file` reads only

* names of the form the manifest uses: a plain file name (``x25519.json``) or one in the
  schema directory (``schemas/e2ee_x25519_schema_v1.json``), so neither an absolute path nor
  ``..`` can name a file elsewhere;
* regular files that are, once every symbolic link is followed, inside the directory: not a
  device such as ``/dev/zero``, not a FIFO (opening one blocks until a writer comes), not a
  directory;
* at most :data:`MAX_FILE_SIZE` bytes.

Anything else raises :class:`VectorFileError`, whose message is one short line.
:func:`parse_json` then reads the bytes as strict JSON, refusing what parsers read differently.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from e2ee.vectors.common import SCHEMA_DIR

MAX_FILE_SIZE = 4 * 1024 * 1024
"""The largest file of a vector directory that is read (vector file, manifest or schema): ten
times the largest file ``e2ee vectors generate`` writes (about 400 KB)."""

_NAME = re.compile(rf"(?:{SCHEMA_DIR}/)?[A-Za-z0-9_-][A-Za-z0-9_.-]*\.json")

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)  # resolved below; a link put there meanwhile is refused
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once (and is then refused)
    | getattr(os, "O_BINARY", 0)
)


class VectorFileError(ValueError):
    """A file of a vector directory that is not read: see :mod:`e2ee.vectors.files`."""


def is_file_name(name: str) -> bool:
    """True for the names a manifest may list: ``NAME.json`` or ``schemas/NAME.json``, where
    NAME is ASCII letters, digits, ``_``, ``-`` and ``.``, and does not start with a dot."""
    return _NAME.fullmatch(name) is not None


def read_file(directory: Path, name: str, limit: int = MAX_FILE_SIZE) -> bytes:
    """The bytes of ``directory / name``, read under the rules of :mod:`e2ee.vectors.files`."""
    if not is_file_name(name):
        raise VectorFileError("not a file name of the form NAME.json or schemas/NAME.json")
    try:
        root = directory.resolve(strict=True)
        path = (directory / name).resolve(strict=True)
    except FileNotFoundError:
        raise VectorFileError("no such file") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (3.11, 3.12)
        raise VectorFileError(f"cannot be opened ({_reason(exc)})") from None
    if not path.is_relative_to(root):
        raise VectorFileError("a symbolic link to a file outside the directory")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise VectorFileError(f"cannot be opened ({_reason(exc)})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VectorFileError("not a regular file")
        with open(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise VectorFileError(f"cannot be read ({_reason(exc)})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise VectorFileError(f"larger than {limit} bytes")
    return data


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``, read strictly, so that every implementation reading the file
    sees the same value. Raises :class:`ValueError` (a one-line message) for bytes that are
    not UTF-8 (RFC 8259, section 8.1), a member name given twice in one object (RFC 8259
    leaves the outcome to each parser: some keep the first, some the last, some refuse),
    ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON at all), a number too large for a
    double (it would be read as infinity), and nesting too deep for Python's parser."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_finite,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for name, item in pairs:
        if name in value:
            raise ValueError(f"member name {name[:40]!r} appears twice in one object")
        value[name] = item
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is too large")
    return value
