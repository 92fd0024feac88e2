"""The loop lingers after a busy tick only when the loop hardly idles or messages arrive fast."""

from __future__ import annotations

from janus.service.linger import Linger


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_small_tick_never_lingers() -> None:
    clock = Clock()
    linger = Linger(clock)
    clock.now = 0.2
    linger.took(3)  # a window of no idling: busy, but the tick is small
    assert not linger.wanted(3)


def test_no_linger_before_a_window_is_measured() -> None:
    linger = Linger(Clock())
    assert not linger.wanted(10)


def test_a_busy_loop_lingers() -> None:
    clock = Clock()
    linger = Linger(clock)
    for _ in range(11):  # 0.11 s of ticks, 5.5 ms idle in all: 5% of the window
        linger.idled(0.0005)
        clock.now += 0.01
        linger.took(4)  # 400 msgs/s: too slow on its own to pay
    assert linger.wanted(4)


def test_a_loop_that_idles_at_a_moderate_rate_does_not_linger() -> None:
    clock = Clock()
    linger = Linger(clock)
    for _ in range(20):  # 200 msgs/s (x 5 ms = 1 message), idle 60% of the time
        clock.now += 0.003
        linger.idled(0.003)
        clock.now += 0.002
        linger.took(1)
    assert not linger.wanted(4)


def test_a_fast_arrival_rate_lingers_even_when_idle() -> None:
    clock = Clock()
    linger = Linger(clock)
    for _ in range(11):  # 1000 msgs/s: a 5 ms linger gathers 5 >= 4, though idle 50%
        clock.now += 0.005
        linger.idled(0.005)
        clock.now += 0.005
        linger.took(10)
    assert linger.wanted(4)


def test_the_last_window_decides_not_the_whole_past() -> None:
    clock = Clock()
    linger = Linger(clock)
    for _ in range(11):  # a busy window...
        clock.now += 0.01
        linger.took(20)
    assert linger.wanted(4)
    clock.now += 1.0  # ...then a second of waiting for deliveries
    linger.idled(1.0)
    assert not linger.wanted(4)
