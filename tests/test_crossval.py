"""Leave-one-file-out choice of a setting (trainer/crossval.py), on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_agent.errors import ConfigError
from trainer import config as trainer_config
from trainer import crossval, nab

ROOT = Path(__file__).resolve().parents[1]


def score(raw: float, windows: int = 1) -> nab.FileScore:
    """A standard-profile file score with ``windows`` windows (null -w, perfect +w)."""
    return nab.FileScore(profile=nab.STANDARD, raw=raw, null=-float(windows),
                         perfect=float(windows), tp=0, fn=windows, fp=0, probation_rows=0,
                         windows=(), false_positives=())


def by_value(raws: dict[str, list[float]], windows: int = 1) -> dict[str, dict[str, list]]:
    return {v: {"standard": [score(r, windows) for r in rs]} for v, rs in raws.items()}


FILES = ["f0", "f1", "f2"]


def test_each_file_gets_the_value_the_other_files_chose() -> None:
    # f0 needs "a"; f1 and f2 do better with "b". Pooled normalised = 100 (raw + W) / 2W.
    scores = by_value({"a": [1.0, -0.5, 0.0], "b": [-1.0, 0.5, 0.4]})
    outcomes = crossval.choose_without_each(FILES, scores)
    # without f0: a 37.5, b 72.5 -> b; without f1: a 75, b 35 -> a; without f2: a 62.5, b 37.5
    assert [o.chosen for o in outcomes] == ["b", "a", "a"]
    assert [o.scores["standard"].raw for o in outcomes] == [-1.0, -0.5, 0.0]
    # In-sample, "a" scores 58.3 over all three; held out, the files score 25.0 together.
    assert crossval.pooled(scores["a"]["standard"]) == pytest.approx(100 * 3.5 / 6)
    assert crossval.pooled([o.scores["standard"] for o in outcomes]) == pytest.approx(25.0)


def test_ties_go_to_the_value_listed_first() -> None:
    outcomes = crossval.choose_without_each(FILES, by_value({"b": [0.2] * 3, "a": [0.2] * 3}))
    assert [o.chosen for o in outcomes] == ["b", "b", "b"]


def test_a_fold_with_nothing_scored_keeps_the_first_value() -> None:
    # Two files: the one left in has no scored window (null = perfect = 0).
    scores = {v: {"standard": [score(r), score(0.0, windows=0)]}
              for v, r in (("a", -1.0), ("b", 1.0))}
    outcomes = crossval.choose_without_each(["w", "empty"], scores)
    assert outcomes[0].chosen == "a"  # nothing to learn from the empty file
    assert outcomes[1].chosen == "b"  # the file with a window prefers b


def test_every_value_needs_a_score_for_every_file() -> None:
    with pytest.raises(ValueError, match="2 file scores for 3 files"):
        crossval.choose_without_each(FILES, by_value({"a": [0.0] * 3, "b": [0.0] * 2}))


@pytest.mark.parametrize("text", ["scoring.level.rebase_after", "=1,2", "k=1", "k=1,1"])
def test_a_malformed_choice_is_refused_with_what_was_expected(text: str) -> None:
    with pytest.raises(ConfigError, match="--choose"):
        crossval.parse_choice(text)


def test_each_variant_config_is_the_source_with_one_key_set(tmp_path: Path) -> None:
    source = ROOT / "configs" / "nab.yaml"
    variant = crossval.config_with(source, "scoring.level.rebase_after", "null",
                                   tmp_path / "sub" / "rebase_after=null.yaml")
    loaded = trainer_config.load(variant)
    original = trainer_config.load(source)
    assert loaded.scoring.level.rebase_after is None
    assert original.scoring.level.rebase_after == 150
    # Everything else, paths included, reads the same from the copy's folder.
    assert loaded.model_copy(update={"scoring": original.scoring}) == original
    bad = crossval.config_with(source, "scoring.level.rebase_aftr", "200",
                               tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="rebase_aftr"):
        trainer_config.load(bad)
    assert yaml.safe_load(source.read_text())["scoring"]["level"]["rebase_after"] == 150


@pytest.mark.parametrize("args, says", [
    (["nab", "--labels", "w.json"], "needs --labels and --bundles"),
    (["skab"], "--choose is for benchmark nab"),
])
def test_choose_without_what_it_needs_stops_with_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    from trainer.__main__ import main

    code = main(["benchmark", *args, "--data-dir", str(tmp_path),
                 "--choose", "scoring.level.rebase_after=null,150"])
    assert code == 2
    assert says in capsys.readouterr().err
