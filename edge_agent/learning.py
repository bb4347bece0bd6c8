"""The demo bundle with every scoring part that learns on the device switched on.

The demo bundle is trained for robot joints and uses only the forecast and level parts. The
parts that keep learning per stream (a level that rebases, a seasonal profile, the adaptive
forecaster, the relative threshold's score histories) are plain float arithmetic on the
device; ``scripts/pi_parity.py`` runs them on x86 and arm64 to show they compute the same
bits, and the tests run them through snapshots, reloads and the live agent. Both take them
from here, so they exercise the same thing.
"""

from __future__ import annotations

from .bundle import AdaptiveScoring, Bundle, RelativeThreshold, SeasonalScoring


def with_relative(bundle: Bundle, relative: RelativeThreshold | None) -> Bundle:
    """``bundle`` with another relative threshold (``None``: without one), the rest of its
    scoring as it is: the same model judged with and without a history, side by side."""
    scoring = bundle.manifest.scoring
    return bundle.with_scoring(scoring.model_copy(update={
        "threshold": scoring.threshold.model_copy(update={"relative": relative})}))


def with_learning_parts(bundle: Bundle) -> Bundle:
    """``bundle`` with a level rebase (that widens the scale of a noisier new level), a
    seasonal part of a 10 s period in 100 slots (simulated readings come every 0.1 s, not
    exactly on the slot edges: the readings after the baseline fill some slots, twice over,
    and leave others unseen), an adaptive part (its scale four times its normal size on the
    simulated joints, so it counts without drowning the others) and a relative threshold (a
    score history in every stream, and one per part of the score). ``bundle`` must have a
    level part (the demo's has)."""
    n = len(bundle.manifest.features)
    scoring = bundle.manifest.scoring
    level = scoring.level
    if level is None:
        raise ValueError(f"{bundle.path}: the bundle has no level part to rebase")
    scoring = scoring.model_copy(update={
        "seasonal": SeasonalScoring(period_s=10.0, slots=100, alpha=0.1, profile_alpha=0.3,
                                    track_below=4.0, scale=[0.5] * n),
        "adaptive": AdaptiveScoring(order=4, forgetting=0.98, alpha=0.1, scale=[0.25] * n),
        "level": level.model_copy(update={"rebase_after": 50, "noise": [0.05] * n}),
        "threshold": scoring.threshold.model_copy(update={
            "relative": RelativeThreshold(window=5, z=2.5, min_history=50, part_z=5.0)})})
    return bundle.with_scoring(scoring)
