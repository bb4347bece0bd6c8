"""The episode state machine: start after enter_readings, updates on new peaks at a bounded
rate, end after exit_readings below the exit threshold, cooldown against flapping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.alerts import AlertSettings, EpisodeState, advance


def run(scores: list[float], settings: AlertSettings, enter: float = 3.0, exit: float = 2.0,
        dt: float = 1.0) -> list[tuple[int, str]]:
    ep = EpisodeState()
    events = []
    for i, score in enumerate(scores):
        kind = advance(ep, settings, score, i * dt, enter=enter, exit=exit, stream_id="s")
        if kind:
            events.append((i, kind))
    return events


def test_start_needs_consecutive_readings_above_enter() -> None:
    s = AlertSettings(enter_readings=3, exit_readings=2, update_interval_s=100,
                      cooldown_readings=0)
    assert run([4, 4, 1, 4, 4, 1], s) == []
    assert run([4, 4, 4, 1, 1], s) == [(2, "start"), (4, "end")]


def test_hysteresis_keeps_an_episode_open_between_exit_and_enter() -> None:
    s = AlertSettings(enter_readings=1, exit_readings=2, update_interval_s=100,
                      cooldown_readings=0)
    # 2.5 is below enter (3) but not below exit (2): the episode stays open
    assert run([4, 2.5, 2.5, 2.5, 1, 2.5, 1, 1], s) == [(0, "start"), (7, "end")]


def test_updates_only_for_new_peaks_and_at_a_bounded_rate() -> None:
    s = AlertSettings(enter_readings=1, exit_readings=3, update_interval_s=5,
                      cooldown_readings=0)
    scores = [4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 10, 3, 3, 3, 1, 1, 1]
    assert run(scores, s) == [(0, "start"), (5, "update"), (11, "update"), (17, "end")]


def test_cooldown_prevents_flapping() -> None:
    s = AlertSettings(enter_readings=1, exit_readings=1, update_interval_s=100,
                      cooldown_readings=3)
    assert run([4, 1, 4, 4, 4, 4, 1], s) == [(0, "start"), (1, "end"), (5, "start"),
                                              (6, "end")]


@given(st.lists(st.floats(min_value=0, max_value=10), max_size=200),
       st.integers(1, 5), st.integers(1, 5), st.integers(0, 5))
def test_events_always_form_well_nested_episodes(scores: list[float], enter_n: int,
                                                 exit_n: int, cooldown: int) -> None:
    s = AlertSettings(enter_readings=enter_n, exit_readings=exit_n, update_interval_s=2,
                      cooldown_readings=cooldown)
    ep = EpisodeState()
    open_id = None
    for i, score in enumerate(scores):
        kind = advance(ep, s, score, float(i), enter=3, exit=2, stream_id="s")
        if kind == "start":
            assert open_id is None
            open_id = ep.alert_id
        elif kind in ("update", "end"):
            assert open_id == ep.alert_id and open_id is not None
            if kind == "end":
                open_id = None
        assert ep.active == (open_id is not None)
