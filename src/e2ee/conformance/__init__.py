"""Conformance runner and reference adapter: drive any implementation through the vectors.

An outer layer (like :mod:`e2ee.vectors` and :mod:`e2ee.cli`): it imports the core and may
start processes; the core never imports it. The protocol is documented in spec/conformance.md.

* :func:`e2ee.conformance.runner.run` -- ``e2ee conformance run -- COMMAND [ARGS...]``: start
  the adapter, exchange ``hello``, replay every vector case as requests on the adapter's stdin,
  compare its responses with the expected values, print per-area results and, last,
  ``N passed, M failed``.
* :func:`e2ee.conformance.serve.serve` -- ``e2ee conformance serve``: e2ee itself as an
  adapter (reads requests on stdin, answers on stdout).
"""

from __future__ import annotations

from e2ee.conformance.protocol import PROTOCOL_NAME, PROTOCOL_VERSION

__all__ = ["PROTOCOL_NAME", "PROTOCOL_VERSION"]
