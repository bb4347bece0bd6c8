"""``report.png``: what a person looks at to judge a training run.

Three rows: the loss curves (did it learn, did it overfit?); a validation stretch of each
feature against the int8 model's one-step forecast (does it track the signals?); and the
score over the validation data against the enter and exit thresholds (how much headroom does
normal operation leave?).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .calibrate import Trace


def draw(path: Path, *, title: str, history: dict[str, list[float]], features: Sequence[str],
         trace: Trace, enter: float, exit: float, span: int = 600) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(features)
    fig = plt.figure(figsize=(12, 3 + 1.6 * n + 2.5), constrained_layout=True)
    grid = fig.add_gridspec(n + 2, 1, height_ratios=[2.2] + [1.2] * n + [2.0])
    ax = fig.add_subplot(grid[0])
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax.plot(epochs, history.get("loss", []), label="training loss")
    ax.plot(epochs, history.get("val_loss", []), label="validation loss")
    losses = np.concatenate([history.get("loss", []), history.get("val_loss", [])])
    if np.all(losses > 0):  # a flat history can be learnt to a loss of exactly zero
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend(loc="upper right")

    stop = min(len(trace.values), span)
    steps = np.arange(stop)
    for i, name in enumerate(features):
        ax = fig.add_subplot(grid[1 + i])
        ax.plot(steps, trace.values[:stop, i], lw=1.0, label="reading")
        ax.plot(steps, trace.expected[:stop, i], lw=1.0, ls="--", label="int8 forecast")
        ax.set_ylabel(name, fontsize=8)
        if i == 0:
            ax.set_title(f"validation: {Path(trace.path).name} (first {stop} readings)")
            ax.legend(loc="upper right", fontsize=8)

    ax = fig.add_subplot(grid[n + 1])
    ax.plot(np.arange(len(trace.scores)), trace.scores, lw=0.8, label="score")
    ax.axhline(enter, color="tab:red", lw=1, label=f"enter {enter:.2f}")
    ax.axhline(exit, color="tab:orange", lw=1, ls="--", label=f"exit {exit:.2f}")
    ax.set_xlabel("validation reading")
    ax.set_title("score on normal validation data")
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=64)
    plt.close(fig)
    _shrink(path)
    return path


def _shrink(path: Path) -> None:
    """Re-save as a 64-colour palette PNG: a line chart loses nothing and gets 3-4x smaller."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)
