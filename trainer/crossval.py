"""Leave one file out: a held-out NAB figure for a setting that only some files can choose.

A setting that matters on files of one kind only (``level.rebase_after`` acts only where a
stream changes regime for good) cannot be chosen on the other files: they score the same
whatever its value. Choosing it on the files that do react and reporting on those same files
gives an in-sample figure. Here every file is scored with the value that did best on all the
*other* files, so no file's score rests on a choice it took part in, and the pooled result of
those scores is a held-out figure (cross-validation, one fold per file).

The choice is made on the standard profile (the benchmark's headline); the low-FP and low-FN
figures are those of the same choices. Ties go to the value listed first, so list the values
in the order you would pick them with no data (the default first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from edge_agent.errors import ConfigError

from . import nab
from .config import resolve_path

Log = Callable[[str], None]


@dataclass(frozen=True)
class LeftOut:
    """One file's held-out outcome: the value the other files chose, and this file's scores
    (one per profile) under it."""

    file: str
    chosen: str
    scores: Mapping[str, nab.FileScore]


def pooled(scores: Sequence[nab.FileScore]) -> float:
    """NAB's normalised score of files pooled together (see ``nab.score_benchmark``)."""
    return nab.score_benchmark(scores).normalised


def choose_without_each(files: Sequence[str],
                        scores: Mapping[str, Mapping[str, Sequence[nab.FileScore]]]
                        ) -> list[LeftOut]:
    """For each file, the value that scores best (standard profile, pooled) on all other files.

    ``scores[value][profile][i]`` is file ``i``'s score with that value; values are tried in
    the mapping's order and the first of equal scores wins. Files whose windows all fall in
    the probationary rows carry no weight, and a fold left with no scored window at all
    keeps the first value.
    """
    values = list(scores)
    if not values:
        raise ValueError("no values to choose from")
    for value in values:
        for profile, per_file in scores[value].items():
            if len(per_file) != len(files):
                raise ValueError(f"value {value!r}, profile {profile}: {len(per_file)} file "
                                 f"scores for {len(files)} files")
    outcomes = []
    for i, name in enumerate(files):
        best, best_score = values[0], float("-inf")
        for value in values:
            others = [s for j, s in enumerate(scores[value]["standard"]) if j != i]
            if sum(s.perfect - s.null for s in others) == 0:
                break  # nothing to learn from: keep the first value
            score = pooled(others)
            if score > best_score:
                best, best_score = value, score
        outcomes.append(LeftOut(name, best, {profile: per_file[i]
                                             for profile, per_file in scores[best].items()}))
    return outcomes


def parse_choice(text: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2,...`` (a dotted trainer-config key and its candidate values, as YAML).

    >>> parse_choice("scoring.level.rebase_after=null,150,300")
    ('scoring.level.rebase_after', ['null', '150', '300'])
    """
    key, sep, listed = text.partition("=")
    values = [v.strip() for v in listed.split(",") if v.strip()]
    if not sep or not key.strip() or len(values) < 2:
        raise ConfigError(f"--choose {text!r}: expected KEY=V1,V2,... with at least two "
                          "values (e.g. scoring.level.rebase_after=null,150,300)")
    if len(set(values)) != len(values):
        raise ConfigError(f"--choose {text!r}: a value is listed twice")
    return key.strip(), values


def config_with(source: Path, key: str, value: str, target: Path) -> Path:
    """A copy of the trainer config ``source`` with ``key`` (dotted) set to ``value`` (YAML).

    Its data and output paths are made absolute, so it reads the same from ``target``'s
    folder. An unknown key is caught when the copy is loaded, by its key path."""
    config = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    node = config
    *parents, last = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--choose {key}: {part!r} in {source} is not a section")
        node = child
    node[last] = yaml.safe_load(value)
    base = source.resolve().parent
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("paths"), list):
        data["paths"] = [str(resolve_path(base, p)) for p in data["paths"]]
    output = config.get("output")
    if isinstance(output, dict) and isinstance(output.get("dir"), str):
        output["dir"] = str(resolve_path(base, output["dir"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


def markdown(key: str, files: Sequence[str], values: Sequence[str],
             scores: Mapping[str, Mapping[str, Sequence[nab.FileScore]]],
             outcomes: Sequence[LeftOut]) -> str:
    """The per-file table (raw standard score under each value, the value chosen without the
    file, its raw score then) and the pooled rows: each value in-sample, and held out."""
    head = ("| file | windows | " + " | ".join(f"{key.split('.')[-1]} {v}" for v in values)
            + " | chosen without it | held-out raw |")
    lines = [f"## Leave one file out: `{key}` (int8)", "",
             "Each file is scored with the value that did best (standard profile, pooled) on "
             "all the other files.", "", head, "|" + "---|" * (len(values) + 4)]
    for i, (name, outcome) in enumerate(zip(files, outcomes)):
        cells = " | ".join(f"{scores[v]['standard'][i].raw:+.2f}" for v in values)
        windows = outcome.scores["standard"].tp + outcome.scores["standard"].fn
        lines.append(f"| {name} | {windows} | {cells} | {outcome.chosen} "
                     f"| {outcome.scores['standard'].raw:+.2f} |")
    for profile in nab.PROFILES:
        cells = " | ".join(f"{pooled(scores[v][profile]):.1f}" for v in values)
        held = pooled([o.scores[profile] for o in outcomes])
        lines.append(f"| **pooled, {profile}** (normalised) | | {cells} | held out | "
                     f"**{held:.1f}** |")
    return "\n".join(lines) + "\n"


def as_json(key: str, files: Sequence[str], values: Sequence[str],
            scores: Mapping[str, Mapping[str, Sequence[nab.FileScore]]],
            outcomes: Sequence[LeftOut]) -> dict[str, Any]:
    return {
        "key": key, "values": list(values), "model": "int8",
        "in_sample": {v: {p: round(pooled(scores[v][p]), 2) for p in nab.PROFILES}
                      for v in values},
        "held_out": {p: round(pooled([o.scores[p] for o in outcomes]), 2)
                     for p in nab.PROFILES},
        "files": [{"file": name, "chosen": o.chosen,
                   "raw": {v: round(scores[v]["standard"][i].raw, 4) for v in values}}
                  for i, (name, o) in enumerate(zip(files, outcomes))],
    }


def run_nab_choice(data_dir: str | Path, labels: str | Path, *, out: str | Path,
                   config: str | Path, bundles: str | Path, choose: str,
                   agent_config: str | Path | None = None, half: str | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Recalibrate ``bundles`` and score NAB once per value of ``choose`` (``KEY=V1,V2,...``),
    then choose the value without each file in turn (``choose_without_each``).

    Each value's run goes to ``out/<key>=<value>`` (its own ``benchmark.json``); the table
    goes to ``out/choice.md`` and ``out/choice.json`` and is printed."""
    from . import benchmarks
    from . import config as trainer_config

    key, values = parse_choice(choose)
    out = Path(out)
    scores: dict[str, Mapping[str, Sequence[nab.FileScore]]] = {}
    files: list[str] = []
    for n, value in enumerate(values, 1):
        name = f"{key.split('.')[-1]}={value}"
        variant = config_with(Path(config), key, value, out / "configs" / f"{name}.yaml")
        trainer_config.load(variant)  # a wrong key stops here, named by its path
        log(f"({n}/{len(values)}) {key} = {value}")
        result = benchmarks.run_nab(data_dir, labels, out=out / name, config=variant,
                                    agent_config=agent_config, reuse=bundles, recalibrate=True,
                                    half=half, plots=False, log=benchmarks.indented(log))
        scores[value] = result["file_scores"]
        files = [row["file"] for row in result["files_detail"]]
    outcomes = choose_without_each(files, scores)
    table = markdown(key, files, values, scores, outcomes)
    summary = as_json(key, files, values, scores, outcomes)
    summary.update(half=half, config=str(config), bundles=str(bundles))
    (out / "choice.md").write_text(table, encoding="utf-8")
    (out / "choice.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    log("")
    log(table)
    return summary
