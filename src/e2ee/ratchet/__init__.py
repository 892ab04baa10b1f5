"""The Double Ratchet (Signal specification revision 1), with optional header encryption."""
