"""The relay: prekey directory and per-device mailboxes over HTTP and WebSocket.

* :mod:`e2ee.relay.rules` -- the rules in plain Python (:class:`Relay`), over
* :mod:`e2ee.relay.storage` -- the storage interface (jobs over one transaction, a notifier),
  with :mod:`e2ee.relay.memory` (tests) and :mod:`e2ee.relay.sqlite` (default) behind it;
* :mod:`e2ee.relay.app` -- the Starlette app; :mod:`e2ee.relay.serve` -- the uvicorn entry;
* :mod:`e2ee.relay.api` -- routes and bodies, shared with :mod:`e2ee.relay.client`, the
  httpx/websockets client wired into :class:`e2ee.client.Client`;
* :mod:`e2ee.relay.tickets` -- registration tickets, signed by a platform's authority.

spec/relay.md is the normative description. Import submodules directly; this package imports
nothing so that the client does not pull in Starlette and the server does not pull in httpx.
"""
