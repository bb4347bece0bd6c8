"""``edge-trainer recalibrate``: new scoring for a trained bundle, without training again.

Everything in a manifest's ``scoring`` section (error and level scales, the seasonal part,
smoothing, thresholds) is calibrated on validation data with the agent's detector, after the
network is fixed. Changing it needs no new network: this runs the trainer's calibration step
(:func:`trainer.calibrate.calibrate_split`) on the bundle's int8 model with a trainer config's
``data`` and ``scoring`` sections, and writes the bundle with the new scoring. The model files,
the normalisation and the ``state_key`` stay as they were, so an agent that reloads the bundle
keeps every stream's LSTM state.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edge_agent.bundle import MANIFEST_NAME, Bundle, load_bundle, write_manifest
from edge_agent.errors import DataError
from edge_agent.model import StatefulModel

from .bundle import KERAS_WEIGHTS_FILE
from .calibrate import calibrate_split
from .config import TrainerConfig
from .data import load_split


def recalibrate(bundle_dir: str | Path, config: TrainerConfig, out: str | Path | None = None,
                log: Callable[[str], None] = print) -> Bundle:
    """Calibrate ``config.scoring`` for the bundle on ``config.data``; write the result to
    ``out`` (a copy of the bundle) or, without it, over the bundle's own manifest."""
    source = load_bundle(bundle_dir)
    manifest = source.manifest
    split = load_split(config.data)
    if split.features != manifest.features:
        raise DataError(f"the data's features {split.features} are not the bundle's "
                        f"{manifest.features}", file=split.recordings[0].path)
    target = Path(out) if out is not None else source.path
    if target.resolve() != source.path.resolve():
        target.mkdir(parents=True, exist_ok=True)
        (target / MANIFEST_NAME).unlink(missing_ok=True)
        files = [manifest.model.file, KERAS_WEIGHTS_FILE]
        if manifest.float_model is not None:
            files.append(manifest.float_model.file)
        for name in files:
            if (source.path / name).is_file():
                shutil.copy2(source.path / name, target / name)
    log(f"recalibrating {source.path} ({manifest.name}) on {len(split.recordings)} file(s), "
        f"{sum(len(v) for v in split.validation)} validation readings")
    model = StatefulModel(target / manifest.model.file, manifest.model)
    cal = calibrate_split(source, model, split, config.scoring, log)
    training = dict(manifest.training, recalibrated={
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [Path(r.path).name for r in split.recordings],
        "validation_rows": sum(len(v) for v in split.validation)})
    write_manifest(target, manifest.model_copy(update={"scoring": cal.scoring,
                                                       "training": training}))
    bundle = load_bundle(target)
    log(f"wrote {target / MANIFEST_NAME}")
    return bundle
