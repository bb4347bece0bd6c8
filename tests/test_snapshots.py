"""State snapshots with real files: written stream by stream, committed atomically, exact on
restore; a failed or unfinished write never replaces the snapshot there was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from edge_agent import snapshots
from edge_agent.bundle import Bundle, load_bundle
from edge_agent.detector import Detector, DetectorSettings
from edge_agent.model import StatefulModel
from edge_agent.payloads import Topics
from edge_agent.simulator import simulate
from edge_agent.stats import Stats
from edge_agent.worker import Item, Worker
from tests.conftest import DEMO_BUNDLE, Discard, with_optional_parts

BUNDLE = load_bundle(DEMO_BUNDLE)


def fed_worker(snapshot_dir: Path | None, streams: int = 3, readings: int = 400,
               bundle: Bundle = BUNDLE) -> Worker:
    detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model),
                        DetectorSettings(warmup_readings=5))
    worker = Worker(detector, lambda n, t: [], Discard(), Topics("edge", "a"), Stats(),
                    agent_id="a", max_streams=100, publish_scores=False,
                    snapshot_dir=snapshot_dir)
    for s in range(streams):
        sim = simulate(readings, seed=20 + s)
        for row, ts in zip(sim.values, sim.t + 1.7e9):
            worker.handle(Item(f"r{s}/j", f"robots/r{s}/joints/j/telemetry", {"robot": f"r{s}"},
                               row, float(ts), 0.0, 0, 0))
    return worker


@pytest.mark.parametrize("bundle", [BUNDLE, with_optional_parts(BUNDLE)],
                         ids=["plain", "learning-parts"])
def test_a_snapshot_restores_every_stream_exactly(tmp_path: Path, bundle: Bundle) -> None:
    worker = fed_worker(tmp_path, bundle=bundle)
    path = snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    assert path == tmp_path / snapshots.FILE_NAME and not list(tmp_path.glob("*.tmp"))
    restored, note = snapshots.read(tmp_path, BUNDLE.sha256, worker.detector)
    assert set(restored) == set(worker.streams) and "restored 3 stream(s)" in note
    for stream_id, entry in restored.items():
        live = worker.streams[stream_id]
        assert all(np.array_equal(a, b) for a, b in zip(entry.state.lstm, live.lstm))
        assert entry.state.prediction == live.prediction  # lists of floats, bit for bit
        assert entry.state.score.smoothed == live.score.smoothed
        assert entry.state.score.level == live.score.level
        assert entry.state.score.baseline == live.score.baseline
        assert np.array_equal(entry.state.score.profile, live.score.profile, equal_nan=True) \
            if live.score.profile is not None else entry.state.score.profile is None
        assert entry.state.score.seasonal == live.score.seasonal
        assert entry.state.score.away == live.score.away
        for key in ("previous", "away_noise", "widened", "adaptive", "adaptive_error"):
            assert getattr(entry.state.score, key) == getattr(live.score, key)
        assert entry.state.history == live.history
        assert entry.state.part_histories == live.part_histories
        if bundle is not BUNDLE:
            assert live.history.count > 300 and len(live.history.recent) == 5
            assert live.history.seen == live.history.count + 5
            # every part learnt (the level part once the baseline is complete)
            assert all(h.count > 50 and len(h.recent) == 5 for h in live.part_histories)
        if bundle is not BUNDLE:  # slots seen after the baseline; unseen ones round-trip too
            assert live.score.profile is not None and live.score.seasonal is not None
            assert live.score.away is not None and live.score.widened is not None
            assert 40 < np.sum(~np.isnan(live.score.profile[:, 0])) < 100
            assert live.score.adaptive is not None and len(live.score.adaptive.past) == 4
            assert live.score.adaptive_error is not None
        assert entry.state.anchor == live.anchor
        assert entry.state.warmup_left == live.warmup_left == 0
        assert entry.state.last_ts == live.last_ts and entry.topic == worker.routes[stream_id][0]


def test_the_worker_writes_a_temporary_file_that_only_commit_makes_current(tmp_path: Path
                                                                           ) -> None:
    worker = fed_worker(tmp_path)
    old = snapshots.write(tmp_path, BUNDLE.sha256, iter([]))
    worker.request_snapshot()
    worker._write_snapshot()
    temp = worker.snapshots.get_nowait()
    assert temp.parent == tmp_path and temp.name.endswith(".tmp")
    assert json.loads(old.read_text())["streams"] == {}  # not current yet
    assert set(json.loads(temp.read_text())["streams"]) == set(worker.streams)
    snapshots.commit(temp)
    assert not temp.exists()
    assert set(json.loads(old.read_text())["streams"]) == set(worker.streams)


def test_the_worker_skips_a_snapshot_while_the_previous_is_not_committed(tmp_path: Path
                                                                         ) -> None:
    worker = fed_worker(tmp_path, streams=1)
    worker._write_snapshot()
    worker._write_snapshot()  # the first is still waiting: nothing new is written
    assert worker.snapshots.qsize() == 1 and len(list(tmp_path.glob("*.tmp"))) == 1
    assert fed_worker(None, streams=1)._write_snapshot() is None  # no state folder: no file


def test_a_failed_write_leaves_the_old_snapshot_and_no_temporary_file(tmp_path: Path) -> None:
    worker = fed_worker(tmp_path)
    current = snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams())
    before = current.read_bytes()

    def broken() -> Iterator[tuple[str, str]]:
        yield from list(worker.encoded_streams())[:1]
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        snapshots.write_temp(tmp_path, BUNDLE.sha256, broken())
    assert current.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_temporary_files_left_by_a_crash_are_discarded(tmp_path: Path) -> None:
    worker = fed_worker(tmp_path, streams=1)
    temps = [snapshots.write_temp(tmp_path, BUNDLE.sha256, worker.encoded_streams())
             for _ in range(2)]
    assert len(set(temps)) == 2 and all(t.exists() for t in temps)  # one name per snapshot
    assert snapshots.discard_temps(tmp_path) == 2 and not list(tmp_path.glob("*.tmp"))
    assert snapshots.discard_temps(tmp_path / "missing") == 0


def test_a_snapshot_is_written_without_holding_every_stream_in_memory(tmp_path: Path) -> None:
    """The streams are taken from the iterator one at a time: when the first is on disk,
    the second has not been encoded yet."""
    worker = fed_worker(tmp_path)
    seen: list[str] = []
    temp_files: list[Path] = []

    def watched() -> Iterator[tuple[str, str]]:
        for stream_id, text in worker.encoded_streams():
            if seen:
                temp_files.extend(tmp_path.glob("*.tmp"))
            seen.append(stream_id)
            yield stream_id, text

    snapshots.write_temp(tmp_path, BUNDLE.sha256, watched())
    assert len(seen) == 3 and temp_files


def test_a_profile_for_other_slots_starts_over_and_the_rest_is_restored(tmp_path: Path) -> None:
    """A bundle recalibrated with another seasonal period, other slots or another clock keeps
    its model (and so its snapshot): the streams come back, their seasonal profiles start
    over."""
    from tests.test_seasonal import with_season

    worker = fed_worker(tmp_path, bundle=with_optional_parts(BUNDLE))
    snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    for change in ({"period_s": 20.0}, {"slots": 50}, {"timezone": "Europe/Berlin"}):
        other = with_season(with_optional_parts(BUNDLE), **change)
        detector = Detector(other, StatefulModel(other.model_path, other.manifest.model))
        restored, _ = snapshots.read(tmp_path, BUNDLE.sha256, detector)
        for stream_id, entry in restored.items():
            assert entry.state.score.profile is None and entry.state.score.seasonal is None
            assert entry.state.score.baseline == worker.streams[stream_id].score.baseline


def test_a_profile_on_a_local_clock_comes_back_on_that_clock(tmp_path: Path) -> None:
    from tests.test_seasonal import with_season

    berlin = with_season(with_optional_parts(BUNDLE), timezone="Europe/Berlin")
    worker = fed_worker(tmp_path, bundle=berlin)
    snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    for bundle, kept in ((berlin, True), (with_optional_parts(BUNDLE), False)):
        detector = Detector(bundle, StatefulModel(bundle.model_path, bundle.manifest.model))
        restored, _ = snapshots.read(tmp_path, BUNDLE.sha256, detector)
        for stream_id, entry in restored.items():
            live = worker.streams[stream_id].score.profile
            assert live is not None
            if kept:
                assert np.array_equal(entry.state.score.profile, live, equal_nan=True)
            else:  # the same slots on the UTC clock: another profile
                assert entry.state.score.profile is None


def test_an_adaptive_forecaster_of_another_order_starts_over_and_a_broken_one_is_refused(
        tmp_path: Path) -> None:
    """A recalibration with another order keeps the model (and the snapshot): the streams come
    back without their forecaster. One whose weights were damaged into NaN is refused (it
    would score NaN for ever); the other streams come back."""
    from tests.test_adaptive import _with_adaptive

    bundle = with_optional_parts(BUNDLE)
    worker = fed_worker(tmp_path, bundle=bundle)
    path = snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    other = _with_adaptive(bundle, order=2)
    detector = Detector(other, StatefulModel(other.model_path, other.manifest.model))
    restored, _ = snapshots.read(tmp_path, BUNDLE.sha256, detector)
    assert len(restored) == 3
    for stream_id, entry in restored.items():
        assert entry.state.score.adaptive is None and entry.state.score.adaptive_error is None
        assert entry.state.score.baseline == worker.streams[stream_id].score.baseline
    document = json.loads(path.read_text())
    weights = document["streams"]["r1/j"]["score"]["adaptive"]["weights"]
    broken = snapshots._unarray(weights)
    assert broken is not None
    broken[0, 0] = np.nan
    weights["b64"] = snapshots._array(broken)["b64"]
    path.write_text(json.dumps(document))
    restored, note = snapshots.read(tmp_path, BUNDLE.sha256, worker.detector)
    assert set(restored) == {"r0/j", "r2/j"} and "1 unreadable stream(s)" in note


def test_a_stream_whose_vectors_do_not_fit_the_features_starts_fresh(tmp_path: Path) -> None:
    """A snapshot entry edited or damaged into a per-feature vector of the wrong length (same
    bundle, so nothing else tells) is refused at the restore, not met mid-stream later; the
    other streams come back."""
    worker = fed_worker(tmp_path)
    path = snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    document = json.loads(path.read_text())
    damaged = document["streams"]["r1/j"]["score"]["level"]
    damaged["b64"] = snapshots._array(np.zeros(len(BUNDLE.manifest.features) - 1))["b64"]
    damaged["shape"] = [len(BUNDLE.manifest.features) - 1]
    path.write_text(json.dumps(document))
    restored, note = snapshots.read(tmp_path, BUNDLE.sha256, worker.detector)
    assert set(restored) == {"r0/j", "r2/j"}
    assert "1 unreadable stream(s) start fresh" in note


def test_a_snapshot_from_before_the_count_of_scores_seen_restores_one(tmp_path: Path) -> None:
    """Snapshots written before ``history.seen`` existed restore it as the scores they hold
    (no horizon here, so exactly what the live stream counted); a bad count is refused."""
    worker = fed_worker(tmp_path, bundle=with_optional_parts(BUNDLE))
    path = snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    document = json.loads(path.read_text())
    for entry in document["streams"].values():
        del entry["history"]["seen"]
    document["streams"]["r1/j"]["history"]["seen"] = -1
    path.write_text(json.dumps(document))
    restored, note = snapshots.read(tmp_path, BUNDLE.sha256, worker.detector)
    assert set(restored) == {"r0/j", "r2/j"} and "1 unreadable stream(s) start fresh" in note
    for stream_id, entry in restored.items():
        assert entry.state.history.seen == worker.streams[stream_id].history.seen > 300


def test_part_histories_restore_fresh_from_an_older_snapshot_and_bad_ones_are_refused(
        tmp_path: Path) -> None:
    """Snapshots written before the parts had histories restore fresh ones (the parts learn
    again; the score's own history is kept); a list that is not one per part is refused."""
    worker = fed_worker(tmp_path, bundle=with_optional_parts(BUNDLE))
    path = snapshots.write(tmp_path, BUNDLE.sha256, worker.encoded_streams(), clean=True)
    document = json.loads(path.read_text())
    for entry in document["streams"].values():
        del entry["part_histories"]
    document["streams"]["r1/j"]["part_histories"] = [{"count": 1}]
    path.write_text(json.dumps(document))
    restored, note = snapshots.read(tmp_path, BUNDLE.sha256, worker.detector)
    assert set(restored) == {"r0/j", "r2/j"} and "1 unreadable stream(s) start fresh" in note
    for stream_id, entry in restored.items():
        assert entry.state.history == worker.streams[stream_id].history
        assert entry.state.part_histories == []  # made again on the next reading
