"""The wire format: strict canonical CBOR and the message and bundle layouts."""
