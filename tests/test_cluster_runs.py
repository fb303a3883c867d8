"""How a map's tasks are grouped into Dask tasks (issue 8): runs of tasks, heaviest
first, guided self-scheduling (:func:`fibergrade.cluster.chunk_tasks`). No cluster here;
``tests/test_cluster.py`` runs maps of many tasks on a real one."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibergrade.cluster import chunk_tasks


@dataclasses.dataclass(frozen=True)
class Job:
    k: int
    weight: float


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5000), st.integers(1, 64), st.floats(0.01, 1.0))
def test_equal_tasks_go_in_order_in_runs_that_shrink_to_one(n, slots, share):
    runs = chunk_tasks([1.0] * n, slots, share)
    assert [k for r in runs for k in r] == list(range(n))  # every task once, in order
    sizes = [len(r) for r in runs]
    assert all(s >= 1 for s in sizes)
    assert sizes == sorted(sizes, reverse=True)  # large runs first
    assert all(s <= max(1, int(n * share)) for s in sizes)  # progress keeps moving
    if n:
        assert sizes[-1] == 1  # the workers finish on single tasks
        # at least 2 * slots runs when there are that many tasks: every worker gets work
        assert len(runs) >= min(n, 2 * slots)
        # guided self-scheduling: each run takes ceil(remaining / (2 * slots)) tasks
        left = n
        for size in sizes:
            assert size == min(max(1, int(n * share)), -(-left // (2 * slots)))
            left -= size


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), max_size=300),
    st.integers(1, 32),
    st.floats(0.01, 1.0),
)
def test_uneven_tasks_go_heaviest_first_and_runs_keep_to_their_share(weights, slots, share):
    runs = chunk_tasks(weights, slots, share)
    flat = [k for r in runs for k in r]
    assert sorted(flat) == list(range(len(weights)))  # every task exactly once
    assert [weights[k] for k in flat] == sorted(weights, reverse=True)  # heaviest first
    total = sum(weights)
    for r in runs:  # no run above its share of the work, unless it is one task
        assert len(r) == 1 or sum(weights[k] for k in r) <= share * total + 1e-9
    if weights:
        assert len(runs[-1]) == 1 or sum(weights[k] for k in runs[-1]) == 0


def test_each_run_of_tasks_gets_its_own_dask_token():
    from dask.base import tokenize

    from fibergrade.cluster import TaskRun

    same = (1, 2, 3)
    assert tokenize(TaskRun(same)) != tokenize(TaskRun(same))  # named by its key alone


def test_chunks_and_weights_refuse_nonsense():
    from fibergrade.cluster import task_weight

    with pytest.raises(ValueError):
        chunk_tasks([1.0, 2.0], 0)
    with pytest.raises(ValueError):
        chunk_tasks([1.0, -2.0], 2)
    with pytest.raises(ValueError):
        chunk_tasks([float("nan")], 2)
    assert task_weight(3) == 1.0 and task_weight(Job(0, 2.5)) == 2.5
    with pytest.raises(ValueError, match="weight"):
        task_weight(Job(0, "heavy"))  # type: ignore[arg-type]
