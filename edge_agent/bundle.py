"""The model bundle: the contract between the trainer and the agent.

A bundle is a folder with ``model.tflite`` (full-integer int8), optionally ``model_float.tflite``
(the float32 export, for comparison) and ``manifest.json`` holding everything the agent needs
and nothing it must guess: feature order, normalisation, sample period, state tensors with their
zero state, scoring parameters and thresholds, the model's sha256, a training summary.

The schema lives here, in the agent, and the trainer writes it with these same classes, so the
two sides cannot drift apart. :func:`load_bundle` refuses a missing, truncated, tampered or
incompatible bundle with a message naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

TensorDtype = Literal["float32", "int8", "int16", "int32", "uint8"]


def _known_zone(name: str) -> str:
    """An IANA time zone the machine's tz database (or the ``tzdata`` package) knows."""
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError) as exc:  # not found is a KeyError; a path, ValueError
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         "'Europe/Berlin' or 'America/New_York')") from exc
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


class Strict(BaseModel):
    """Base of every manifest section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(Strict):
    """A tensor of the TFLite model, as the interpreter reports it."""

    name: str
    index: int = Field(ge=0)
    shape: list[int]
    dtype: TensorDtype
    scale: float = 0.0
    zero_point: int = 0


class StateTensor(TensorSpec):
    """A recurrent state tensor (an LSTM's h or c) and its zero state.

    The zero state of a quantised model is not all zeros (it is the zero point), so it is read
    from a freshly reset interpreter at export time and stored here.
    """

    role: Literal["h", "c"]
    layer: int = Field(ge=0)
    zero: list[float]


class ModelFile(Strict):
    """One ``.tflite`` file of the bundle and the tensors the agent drives."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0)
    kind: Literal["int8", "float32"]
    input: TensorSpec
    output: TensorSpec
    state: list[StateTensor]

    def state_signature(self) -> list[tuple[Any, ...]]:
        """What must match for per-stream state to carry over to another model file."""
        return [(s.role, s.layer, tuple(s.shape), s.dtype, s.scale, s.zero_point)
                for s in self.state]


class Normalisation(Strict):
    """How raw readings become model inputs: ``(x - mean) / std`` per feature, clipped.

    Every stream learns a *baseline* (mean and spread) from its first ``baseline_readings``
    readings: its own normal operating point, which may differ from the training machines'.
    With ``per_stream`` the baseline also standardises the stream's inputs (``min_std`` floors
    its spread so a flat baseline cannot blow inputs up); otherwise the training set's
    ``mean``/``std`` serve every stream and the baseline only anchors the level score.
    """

    mean: list[float]
    std: list[float]
    min_std: list[float]
    per_stream: bool = False
    baseline_readings: int = Field(default=0, ge=0)
    clip: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _baseline_for_per_stream(self) -> "Normalisation":
        if self.per_stream and self.baseline_readings < 2:
            raise ValueError("per_stream normalisation needs baseline_readings >= 2")
        return self


class Smoothing(Strict):
    """Exponentially weighted moving average of the raw score (``alpha`` 1 = none)."""

    alpha: float = Field(gt=0, le=1)


class RelativeThreshold(Strict):
    """A second way over the threshold that keeps learning: the stream's own score history.

    A threshold calibrated on a stream's first readings has seen a few days at best. With this
    section, a stream also crosses it when the mean of its last ``window`` scores stands ``z``
    standard deviations above the mean of all its earlier scores (at least ``min_history`` of
    them): the score is lifted to ``enter * that distance / z``. The calibrated ``enter``
    itself is then set ``absolute_margin`` times higher (see the trainer's
    ``threshold.relative``), for what is far beyond normal from the first reading on; with
    ``absolute_for``, only until the stream has had that many scores, after which its own
    history alone decides; with ``part_z``, each part of the score is also judged against
    its own history. See :mod:`edge_agent.history`."""

    window: int = Field(5, ge=1, description="Readings in the recent mean.")
    z: float = Field(2.5, gt=0, description=(
        "Standard deviations of the stream's earlier scores that the recent mean must rise "
        "above their mean to reach the enter threshold."))
    min_history: int = Field(50, ge=2, description=(
        "Earlier scores needed before the history speaks."))
    horizon: int | None = Field(None, ge=2, description=(
        "After this many scores the history forgets: an exponentially weighted mean and "
        "variance with weight 1/horizon. None: every score since the start counts alike."))
    absolute_margin: float = Field(1.0, ge=1.0, description=(
        "How much the trainer raised the calibrated enter and exit thresholds (for the "
        "record: they already include it)."))
    absolute_for: int | None = Field(None, ge=2, description=(
        "Scores of a stream after which the calibrated threshold steps aside and the "
        "history alone decides (the score becomes enter * distance / z). None: both decide "
        "for as long as the stream runs."))
    part_z: float | None = Field(None, gt=0, description=(
        "Each part of the score (forecast, level, season, adaptive) also keeps its own "
        "history and lifts the score to enter * its distance / part_z: a part that moved far "
        "for itself counts even when another, noisier part sets the score's spread. None: "
        "the score's history alone."))


class Threshold(Strict):
    """Alert thresholds on the smoothed score, and how the trainer chose them."""

    enter: float = Field(gt=0)
    exit: float = Field(gt=0)
    method: str
    details: dict[str, Any] = Field(default_factory=dict)
    relative: RelativeThreshold | None = None

    @model_validator(mode="after")
    def _exit_not_above_enter(self) -> "Threshold":
        if self.exit > self.enter:
            raise ValueError(f"exit threshold {self.exit} is above enter threshold {self.enter}")
        return self


class LevelScoring(Strict):
    """The level part of the score: how far a stream's recent mean has moved from its baseline.

    ``alpha`` is the EWMA weight of the recent mean; ``scale`` the spread of that deviation per
    feature on normal data (so about 1 is normal). ``track_alpha`` > 0 lets each feature's
    baseline follow slow drift (an EWMA with that weight) while that feature stays within
    ``track_below`` of it; a feature that moved further is measured against where it was
    before, so a fault does not become the new normal, and it scores low again as soon as the
    feature returns — while its neighbours that only drift keep being followed. With
    ``rebase_after``, a feature that stays away that long is taken at its word: its recent mean
    becomes its baseline. With ``noise`` as well, a rebase also widens that feature's scale by
    how much noisier its readings were while away than they were in training (never narrows):
    a new operating point that is also a noisier one (a server's load jumping between idle and
    full after a reconfiguration) gets a level scale that fits it.
    """

    alpha: float = Field(gt=0, le=1)
    scale: list[float]
    track_alpha: float = Field(0.0, ge=0, le=1)
    track_below: float = Field(3.0, gt=0)
    rebase_after: int | None = Field(None, ge=1, description=(
        "A feature that stays further than track_below from its baseline for this many "
        "readings in a row takes its recent mean as its new baseline: a lasting change of "
        "operating point becomes normal, and its episode can end. None: never."))
    noise: list[float] | None = Field(None, description=(
        "Per feature, the normal change from one reading to the next (root mean square of "
        "successive differences of the normalised training readings). With rebase_after, a "
        "rebase widens the feature's scale by the ratio of the same measure over the readings "
        "it stayed away to this (never narrows). None: a rebase keeps the scale."))


class SeasonalScoring(Strict):
    """The seasonal part of the score: how far a stream's recent readings are from what it
    usually reads at this time of day (or week).

    A period of ``period_s`` seconds is divided into ``slots``; a reading belongs to slot
    ``floor((t mod period_s) / period_s * slots)``, ``t`` its own timestamp on the UTC clock or,
    with ``timezone``, on that zone's local clock (so a pattern people set, opening hours or
    traffic, keeps its slots across daylight-saving changes instead of moving an hour). Each
    slot keeps the stream's usual normalised reading there (its *profile*, first the first
    reading seen in it, then an EWMA with weight ``profile_alpha``); the residual ``x -
    profile`` is smoothed with ``alpha`` and divided by ``scale`` (its spread on normal data).
    Like the level baseline, a slot's profile only follows a feature while that feature is
    within ``track_below``, so a missing daily peak does not teach the profile to expect none
    tomorrow.
    """

    period_s: float = Field(gt=0)
    slots: int = Field(ge=2)
    alpha: float = Field(gt=0, le=1)
    profile_alpha: float = Field(gt=0, le=1)
    track_below: float = Field(gt=0)
    scale: list[float]
    autocorrelation: float | None = Field(None, description=(
        "How strongly the training data repeated at this period (for the record)."))
    timezone: TimeZoneName | None = Field(None, description=(
        "IANA time zone whose local clock the slots follow; null: UTC."))


class AdaptiveScoring(Strict):
    """The adaptive part of the score: how far each reading is from the forecast of a small
    linear forecaster that keeps learning on the device (:mod:`edge_agent.adaptive`).

    Per feature, an AR(``order``) forecast refitted after every reading by recursive least
    squares with forgetting factor ``forgetting``; its absolute error is smoothed with
    ``alpha`` and divided by ``scale``. The scale is its normal size on validation data, widened
    so that its tail over the training readings stays under the threshold the detector uses
    (it is fitted after the threshold, so adding this part leaves what the others alert on
    unchanged).
    """

    order: int = Field(ge=1, le=32)
    forgetting: float = Field(gt=0.5, le=1)
    alpha: float = Field(gt=0, le=1)
    scale: list[float]


class Scoring(Strict):
    """Parameters of :mod:`edge_agent.scoring`; see there for the formula."""

    error_scale: list[float]
    smoothing: Smoothing
    level: LevelScoring | None = None
    seasonal: SeasonalScoring | None = None
    adaptive: AdaptiveScoring | None = None
    threshold: Threshold
    top_features: int = Field(default=3, ge=1)


class Architecture(Strict):
    """The network: LSTM layer sizes, training window, and what the exported model outputs.

    ``output: change``: the model outputs the forecast *change* of each normalised feature and
    the agent adds the reading to it in float. A level that drifts out of the range the int8
    input was calibrated on then only blurs the predicted change, not the forecast level, and
    the int8 output spends its resolution on changes (small) rather than levels.
    """

    layers: list[int]
    sequence_length: int
    horizon: int = 1
    output: Literal["forecast", "change"] = "forecast"


class Manifest(Strict):
    schema_version: int
    name: str
    created: str
    trainer_version: str
    features: list[str] = Field(min_length=1)
    sample_period_s: float | None
    normalisation: Normalisation
    architecture: Architecture
    model: ModelFile
    float_model: ModelFile | None = None
    scoring: Scoring
    training: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    state_key: str | None = Field(None, description=(
        "Streams keep their LSTM state across a model reload only when the old and the new "
        "bundle have the same state_key (the trainer derives it from the model file and the "
        "normalisation, so a recalibrated threshold keeps state and a retrained model does "
        "not)."))

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        n = len(self.features)
        scoring, level = self.scoring, self.scoring.level
        per_feature = [("normalisation.mean", self.normalisation.mean),
                       ("normalisation.std", self.normalisation.std),
                       ("normalisation.min_std", self.normalisation.min_std),
                       ("scoring.error_scale", scoring.error_scale)]
        if level is not None:
            per_feature += [("scoring.level.scale", level.scale),
                            ("scoring.level.noise", level.noise or [1.0] * n)]
            if self.normalisation.baseline_readings < 1:
                raise ValueError("scoring.level needs normalisation.baseline_readings >= 1")
        for name in ("seasonal", "adaptive"):
            part = getattr(scoring, name)
            if part is not None:
                per_feature.append((f"scoring.{name}.scale", part.scale))
        for key, values in per_feature:
            if len(values) != n:
                raise ValueError(f"{key} has {len(values)} values for {n} features")
        for key, values in per_feature[1:]:  # spreads and scales (not the mean)
            if any(not v > 0 for v in values):
                raise ValueError(f"{key} must be positive")
        for name, spec in (("model", self.model), ("float_model", self.float_model)):
            if spec is None:
                continue
            for role, tensor in (("input", spec.input), ("output", spec.output)):
                if tensor.shape[-1] != n:
                    raise ValueError(f"{name}.{role} shape {tensor.shape} does not end in the "
                                     f"{n} features")
            for st in spec.state:
                size = 1
                for d in st.shape:
                    size *= d
                if len(st.zero) != size:
                    raise ValueError(f"{name}.state {st.name!r}: zero state has {len(st.zero)} "
                                     f"values for shape {st.shape}")
        return self


def state_carries_over(old: Manifest, new: Manifest) -> bool:
    """May streams keep their state when ``new`` replaces ``old``? Only when the manifest says
    so (equal ``state_key``) and the state tensors have the same shape, type and scale."""
    return (old.state_key is not None and old.state_key == new.state_key
            and old.model.state_signature() == new.model.state_signature())


def derive_state_key(model: ModelFile, normalisation: Normalisation) -> str:
    """The trainer's ``state_key``: same model file and same normalisation → same meaning of
    every stream's state."""
    digest = hashlib.sha256(model.sha256.encode())
    digest.update(json.dumps(normalisation.model_dump(mode="json"), sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model.file

    @property
    def float_model_path(self) -> Path | None:
        fm = self.manifest.float_model
        return None if fm is None else self.path / fm.file

    @property
    def sha256(self) -> str:
        return self.manifest.model.sha256

    def with_scoring(self, scoring: Scoring) -> "Bundle":
        """The same bundle with another ``scoring`` section (a recalibration, or a part
        switched on or off for a test or a benchmark); nothing is written."""
        return Bundle(path=self.path, manifest=self.manifest.model_copy(
            update={"scoring": scoring}))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _format_validation(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def _verify_file(root: Path, spec: ModelFile, key: str) -> None:
    path = root / spec.file
    if not path.is_file():
        raise BundleError(f"{path}: missing (named by manifest key {key}.file)")
    size = path.stat().st_size
    if size != spec.size_bytes:
        raise BundleError(f"{path}: {size} bytes, the manifest says {spec.size_bytes} "
                          "(truncated or replaced)")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise BundleError(f"{path}: sha256 {actual} does not match the manifest's "
                          f"{spec.sha256} (the file was modified after export)")


def parse_manifest(text: str, where: str) -> Manifest:
    """Parse and validate manifest JSON; ``where`` names it in errors."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                          f"{exc.colno}); the file is truncated or corrupt") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: expected a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{where}: schema_version {version!r} is not supported by this agent "
                          f"(it reads version {SCHEMA_VERSION}); re-export the bundle with a "
                          "matching trainer")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{where}: invalid manifest:\n{_format_validation(exc)}") from None


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle folder (manifest schema, file sizes and sha256)."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; is {root} a bundle written by "
                          "edge-trainer?")
    manifest = parse_manifest(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    _verify_file(root, manifest.model, "model")
    if manifest.float_model is not None:
        _verify_file(root, manifest.float_model, "float_model")
    return Bundle(path=root, manifest=manifest)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (the trainer's side of the contract)."""
    target = root / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n",
                   encoding="utf-8")
    tmp.replace(target)
    return target
