"""The sandbox bench's floor for concurrent cold starts, and its /proc/stat reading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.sandbox import busy_jiffies, start_floor_ratio


@pytest.mark.parametrize(
    ("parallel", "cores_busy", "host_cores", "expected"),
    [
        (1, 1.0, 2, 1.0),  # alone is the reference
        (2, 1.0, 2, 1.0),  # one core each: both run at full speed
        (4, 1.0, 2, 1.5),  # waves of two: T, T, 2T, 2T
        (3, 1.0, 2, 1.0),  # T, T, 2T: the median is in the first wave
        (8, 1.0, 2, 2.5),  # four waves: the median sits between the 2nd and 3rd
        (4, 0.5, 2, 1.0),  # all four fit on two cores at once
        (4, 2.0, 2, 2.5),  # each takes the whole host: T, 2T, 3T, 4T
        (4, 1.0, 4, 1.0),  # as many cores as starts need
        (4, 3.0, 2, 2.5),  # a start cannot have kept more cores busy than the host has
        (4, 0.0, 2, 1.0),  # no CPU work, nothing to share
    ],
)
def test_floor_of_whole_waves(
    parallel: int, cores_busy: float, host_cores: int, expected: float
) -> None:
    assert start_floor_ratio(parallel, cores_busy, host_cores) == pytest.approx(expected)


def test_a_start_a_little_over_one_core_spills_into_the_next_wave() -> None:
    # c = 1.05 on 2 cores: the first start ends at T, the second, given only 0.95 cores
    # until then, at T + 0.1/1.05 T; the third starts on what is left and ends near 2T.
    second = 1 + 0.1 / 1.05
    third = second + (1.05 - 0.95 * (second - 1)) / 1.05
    expected = (second + third) / 2
    assert start_floor_ratio(4, 1.05, 2) == pytest.approx(expected)
    assert start_floor_ratio(4, 1.05, 2) > 1.5


@pytest.mark.parametrize(
    ("parallel", "cores_busy", "host_cores"), [(0, 1, 2), (4, -0.1, 2), (4, 1, 0)]
)
def test_nonsense_is_refused(parallel: int, cores_busy: float, host_cores: int) -> None:
    with pytest.raises(ValueError):
        start_floor_ratio(parallel, cores_busy, host_cores)


@given(
    parallel=st.integers(1, 12),
    cores_busy=st.floats(0.05, 4.0),
    host_cores=st.integers(1, 8),
)
def test_floor_is_at_least_one_and_moves_the_right_way(
    parallel: int, cores_busy: float, host_cores: int
) -> None:
    floor = start_floor_ratio(parallel, cores_busy, host_cores)
    assert floor >= 1.0 - 1e-9
    # More starts, or busier ones, never finish sooner; more cores never finish later.
    assert start_floor_ratio(parallel + 1, cores_busy, host_cores) >= floor - 1e-9
    assert start_floor_ratio(parallel, cores_busy * 1.1, host_cores) >= floor - 1e-9
    assert start_floor_ratio(parallel, cores_busy, host_cores + 1) <= floor + 1e-9
    # The start at the head of the queue always gets its c cores, so the k-th ends by kT
    # and the median by (parallel + 1) / 2 T -- reached when one start takes the whole host.
    assert floor <= (parallel + 1) / 2 + 1e-9


def test_busy_jiffies_counts_work_not_idle_or_guest() -> None:
    stat = "cpu  100 2 30 5000 70 4 5 6 40 8\ncpu0 50 1 15 2500 35 2 2 3 20 4\nintr 12345\n"
    # user + nice + system + irq + softirq + steal; idle, iowait, guest, guest_nice left out
    assert busy_jiffies(stat) == 100 + 2 + 30 + 4 + 5 + 6


def test_busy_jiffies_needs_the_aggregate_line() -> None:
    with pytest.raises(ValueError):
        busy_jiffies("cpu0 1 2 3 4 5 6 7 8 9 10\n")
