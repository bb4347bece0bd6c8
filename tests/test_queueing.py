"""The bounded queue under batches: never above its size, nothing lost without being reported,
order kept, and the policy decides which readings go."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.queueing import BoundedQueue

steps = st.lists(st.one_of(st.integers(0, 12).map(lambda n: ("put", n)),
                           st.integers(1, 12).map(lambda n: ("get", n))), max_size=40)


@given(size=st.integers(1, 8), policy=st.sampled_from(["drop_oldest", "drop_newest"]),
       script=steps)
def test_every_item_is_taken_or_reported_dropped_in_order(size: int, policy: str,
                                                          script: list[tuple[str, int]]) -> None:
    q: BoundedQueue[int] = BoundedQueue(size, policy)  # type: ignore[arg-type]
    model: list[int] = []  # what a one-at-a-time queue would hold
    taken: list[int] = []
    dropped: list[int] = []
    next_item = 0
    for action, n in script:
        if action == "put":
            batch = list(range(next_item, next_item + n))
            next_item += n
            expected_drops = []
            for item in batch:  # the policy, one item at a time
                if len(model) < size:
                    model.append(item)
                elif policy == "drop_oldest":
                    expected_drops.append(model.pop(0))
                    model.append(item)
                else:
                    expected_drops.append(item)
            got = q.put_many(batch)
            assert got == expected_drops
            dropped += got
        else:
            got = q.get_batch(n, timeout=0)
            assert got == model[:n]
            del model[:n]
            taken += got
        assert len(q) == len(model) <= size
    rest = q.get_batch(size, timeout=0)
    assert sorted(taken + rest + dropped) == list(range(next_item))
    assert taken + rest == sorted(taken + rest)  # delivered in the order they came
