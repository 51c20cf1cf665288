"""The timing helper's logic, with a fake clock (no timing assertions on the real machine)."""
import pytest

from clipdiff_mini.captioners.benchmark import captions_per_second, machine, time_runs


class FakeClock:
    """Each run of the timed function advances the clock by the next duration of `durations`."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self):
        return self.now

    def run(self):
        self.now += self.durations[self.calls]
        self.calls += 1


def test_warmup_runs_are_not_timed_and_the_median_is_of_the_timed_runs():
    clock = FakeClock([100.0, 50.0, 3.0, 1.0, 2.0, 9.0, 4.0])  # two warm-up runs, then five timed
    t = time_runs(clock.run, warmup=2, repeats=5, clock=clock)
    assert clock.calls == 7
    assert t["times_s"] == [3.0, 1.0, 2.0, 9.0, 4.0]
    assert t["median_s"] == 3.0  # sorted 1 2 3 4 9
    assert t["min_s"] == 1.0


def test_even_number_of_runs_takes_the_mean_of_the_middle_two():
    clock = FakeClock([7.0, 1.0, 4.0, 2.0, 10.0])
    t = time_runs(clock.run, warmup=1, repeats=4, clock=clock)
    assert t["median_s"] == pytest.approx(3.0)  # (2 + 4) / 2


def test_captions_per_second_from_the_median():
    clock = FakeClock([5.0, 0.5, 0.25, 2.0])
    t = captions_per_second(clock.run, n_captions=64, warmup=1, repeats=3, clock=clock)
    assert t["captions_per_s"] == pytest.approx(64 / 0.5)
    assert t["ms_per_caption"] == pytest.approx(1000 * 0.5 / 64)


def test_bad_arguments_and_machine_line():
    with pytest.raises(ValueError):
        time_runs(lambda: None, repeats=0)
    line = machine("cpu")
    assert line.startswith("cpu,") and "torch threads" in line


def test_side_by_side_warms_every_variant_up_then_times_them_in_rounds():
    from clipdiff_mini.captioners.benchmark import side_by_side

    now, calls = [0.0], []
    cost = {"a": [9.0, 1.0, 3.0, 2.0], "b": [9.0, 10.0, 30.0, 20.0]}  # per variant: warm-up, then three timed

    def variant(name):
        def run():
            now[0] += cost[name][sum(c == name for c in calls)]
            calls.append(name)
        return run

    t = side_by_side({"a": variant("a"), "b": variant("b")}, 8, warmup=1, repeats=3, clock=lambda: now[0])
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]  # warm-ups first, then alternating rounds
    assert t["a"]["times_s"] == [1.0, 3.0, 2.0] and t["b"]["times_s"] == [10.0, 30.0, 20.0]
    assert t["a"]["captions_per_s"] == pytest.approx(8 / 2.0) and t["b"]["ms_per_caption"] == pytest.approx(2500.0)
    with pytest.raises(ValueError):
        side_by_side({"a": variant("a")}, 1, repeats=0)
