"""Simulated robot joints: correlated sensor readings, with faults injected at known times.

A joint repeats a pick-and-place motion. From the commanded motion follow four sensors that
depend on each other the way real ones do, which is what a multivariate forecaster can learn:

* ``motor_current`` (A): inertia × acceleration + viscous and Coulomb friction + gravity load;
* ``temperature`` (°C): a first-order thermal model heated by current² (slow);
* ``vibration`` (g RMS): a floor plus a speed-dependent part;
* ``position_error`` (mrad): the controller's tracking lag, proportional to speed.

Faults (the demo's and the tests' ground truth):

* ``bearing``: a worn bearing — vibration grows with impulses at the rotation rate, friction
  and so current rise;
* ``overheat``: a failed fan — temperature climbs away from what the current explains;
* ``stuck_sensor``: a stuck position encoder — the controller keeps comparing the commanded
  position with a frozen measurement, so the reported position error follows the motion
  instead of staying small, and the drive pushes extra current against the phantom error.

Everything is generated from a seed, so a recording can be recreated exactly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

FEATURES = ["motor_current", "temperature", "vibration", "position_error"]
FaultKind = Literal["bearing", "overheat", "stuck_sensor"]
FAULT_KINDS: tuple[FaultKind, ...] = ("bearing", "overheat", "stuck_sensor")


@dataclass(frozen=True)
class Fault:
    """A fault active from ``start_s`` for ``duration_s`` seconds (to the end when None)."""

    kind: FaultKind
    start_s: float
    duration_s: float | None = None

    def active(self, t: np.ndarray) -> np.ndarray:
        end = np.inf if self.duration_s is None else self.start_s + self.duration_s
        return (t >= self.start_s) & (t < end)


@dataclass(frozen=True)
class JointParams:
    """Physical constants of one joint; :func:`joint_params` draws plausible ones."""

    cycle_s: float = 6.0
    amplitude: float = 1.2
    inertia: float = 0.8
    viscous: float = 0.6
    coulomb: float = 0.35
    gravity: float = 1.5
    ambient_c: float = 28.0
    heat_gain: float = 2.5
    thermal_tau_s: float = 240.0
    vib_floor: float = 0.05
    vib_gain: float = 0.06
    lag: float = 4.0


def joint_params(rng: np.random.Generator) -> JointParams:
    """A joint drawn around the defaults (different robots, loads and programs)."""
    base = JointParams()
    jitter = lambda v, rel: float(v * (1.0 + rel * rng.uniform(-1.0, 1.0)))  # noqa: E731
    return JointParams(
        cycle_s=jitter(base.cycle_s, 0.3), amplitude=jitter(base.amplitude, 0.3),
        inertia=jitter(base.inertia, 0.2), viscous=jitter(base.viscous, 0.2),
        coulomb=jitter(base.coulomb, 0.2), gravity=jitter(base.gravity, 0.3),
        ambient_c=jitter(base.ambient_c, 0.1), heat_gain=jitter(base.heat_gain, 0.2),
        thermal_tau_s=jitter(base.thermal_tau_s, 0.2), vib_floor=jitter(base.vib_floor, 0.2),
        vib_gain=jitter(base.vib_gain, 0.2), lag=jitter(base.lag, 0.2))


@dataclass
class Simulation:
    """A generated recording: times (s from 0), values (n, 4) and the fault label per row."""

    t: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    faults: list[Fault] = field(default_factory=list)
    features: list[str] = field(default_factory=lambda: list(FEATURES))


def simulate(n: int, period_s: float = 0.1, *, seed: int = 0, params: JointParams | None = None,
             faults: Sequence[Fault] = ()) -> Simulation:
    """Simulate ``n`` readings of one joint, one every ``period_s`` seconds."""
    rng = np.random.default_rng(seed)
    p = params or joint_params(rng)
    t = np.arange(n) * period_s
    # Commanded motion: a two-harmonic cycle whose amplitude wanders slowly (AR(1)).
    phase = 2 * np.pi * t / p.cycle_s + rng.uniform(0, 2 * np.pi)
    wander = np.empty(n)
    level, rho = 0.0, np.exp(-period_s / 30.0)
    for i in range(n):
        level = rho * level + np.sqrt(1 - rho * rho) * rng.standard_normal()
        wander[i] = level
    amp = p.amplitude * (1.0 + 0.1 * wander)
    q = amp * (np.sin(phase) + 0.3 * np.sin(2 * phase + 0.7))
    v = np.gradient(q, period_s)
    a = np.gradient(v, period_s)

    friction = np.full(n, 1.0)
    vib_extra = np.zeros(n)
    heat_extra = np.zeros(n)
    stuck = np.zeros(n, dtype=bool)
    labels = np.zeros(n, dtype=np.int8)
    for fault in faults:
        on = fault.active(t)
        labels[on] = 1
        since = np.clip(t - fault.start_s, 0.0, None)
        if fault.kind == "bearing":
            grow = np.minimum(since / 10.0, 1.0) * on
            impulses = 0.5 + 0.5 * np.abs(np.sin(3 * phase))
            vib_extra += grow * (0.25 + 0.2 * np.abs(v)) * impulses
            friction += 0.5 * grow
        elif fault.kind == "overheat":
            heat_extra += on * 2.0
        elif fault.kind == "stuck_sensor":
            stuck |= on

    phantom = np.zeros(n)  # commanded minus the stuck encoder's frozen position (rad)
    if stuck.any():
        starts = np.flatnonzero(stuck & ~np.r_[False, stuck[:-1]])
        for start in starts:
            run = start + np.flatnonzero(~stuck[start:])[0] if (~stuck[start:]).any() else n
            phantom[start:run] = q[start:run] - q[start]
    current = (p.inertia * a + friction * (p.viscous * v + p.coulomb * np.tanh(5 * v))
               + p.gravity * np.cos(q) + 1.5 * phantom) + 0.05 * rng.standard_normal(n)
    # Thermal model, starting at the equilibrium of the average heating.
    heating = p.heat_gain * current ** 2
    temp = np.empty(n)
    level_c = p.ambient_c + float(np.mean(heating[: max(1, int(p.cycle_s / period_s))]))
    decay = period_s / p.thermal_tau_s
    for i in range(n):
        level_c += decay * (p.ambient_c + heating[i] - level_c) + period_s * heat_extra[i] * 0.15
        temp[i] = level_c
    temp += 0.05 * rng.standard_normal(n)
    vibration = (p.vib_floor + p.vib_gain * np.abs(v) + vib_extra
                 + 0.01 * np.abs(rng.standard_normal(n)))
    pos_err = p.lag * v + 0.4 * a * 0.1 + 8.0 * phantom + 0.15 * rng.standard_normal(n)

    values = np.stack([current, temp, vibration, pos_err], axis=1)
    return Simulation(t=t, values=values, labels=labels, faults=list(faults))


def write_csv(path: str | Path, sim: Simulation, *, start_epoch: float = 1_767_225_600.0,
              label_column: str | None = "anomaly") -> Path:
    """Write a simulation as CSV (ISO 8601 UTC timestamps, features, optional label)."""
    from datetime import datetime, timezone

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", *sim.features] + ([label_column] if label_column else []))
        for i in range(len(sim.t)):
            stamp = datetime.fromtimestamp(start_epoch + float(sim.t[i]), tz=timezone.utc)
            row = [stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")]
            row += [f"{v:.5f}" for v in sim.values[i]]
            if label_column:
                row.append(int(sim.labels[i]))
            writer.writerow(row)
    return path


def training_joint(seed: int, index: int) -> JointParams:
    """The parameters of joint ``index`` of the training set written with ``seed``."""
    return joint_params(np.random.default_rng(seed * 1000 + index))


def write_training_set(folder: str | Path, *, files: int = 12, minutes: float = 10.0,
                       period_s: float = 0.1, seed: int = 7) -> list[Path]:
    """Normal-operation recordings of ``files`` different joints (the demo's training data)."""
    n = int(minutes * 60 / period_s)
    return [write_csv(Path(folder) / f"joint{i:02d}.csv",
                      simulate(n, period_s, seed=seed * 1000 + i,
                               params=training_joint(seed, i)), label_column=None)
            for i in range(files)]
