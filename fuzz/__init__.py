"""Coverage-guided fuzzing of e2ee's decoders (see fuzz/README.md)."""
