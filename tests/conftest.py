"""Shared fixtures and the hypothesis profiles.

Profiles: "ci" (hypothesis' built-in, loaded automatically when CI is set), "dev" (default
locally) and "deep" (long local runs: HYPOTHESIS_PROFILE=deep).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "deep", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# Hypothesis' built-in "ci" profile (derandomized, no database, no deadline), with fewer
# examples so that CI stays within minutes on two cores.
settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=25)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
elif os.environ.get("CI"):
    settings.load_profile("ci")
else:
    settings.load_profile("dev")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WYCHEPROOF_DIR = PROJECT_ROOT.parent / "shared" / "vectors" / "wycheproof"
