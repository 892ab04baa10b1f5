"""Golden persisted-state files (see make_golden.py and manifest.json)."""
