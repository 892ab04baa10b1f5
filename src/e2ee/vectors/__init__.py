"""Language-neutral test vectors for e2ee: generation and verification.

An outer layer: it imports the core (and its own independent reference implementations in
:mod:`e2ee.vectors.reference`); the core never imports it.

* :func:`e2ee.vectors.generate.generate` -- ``e2ee vectors generate --out DIR``
* :func:`e2ee.vectors.verify.verify_dir` -- ``e2ee vectors verify [DIR]``

The files, their format and how randomness is replayed are described in
test_vectors/README.md.
"""

from __future__ import annotations

from e2ee.vectors.common import default_dir

__all__ = ["default_dir"]
