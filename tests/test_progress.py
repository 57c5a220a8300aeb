"""Progress events, drain(), and cancellation that lets a job return its best result."""

from __future__ import annotations

from dataclasses import replace

import pytest

from napari_emseg.progress import (
    Cancelled,
    CancelToken,
    Progress,
    Stopwatch,
    cancellable,
    drain,
    relay,
    relay_each,
)


def counting_job(n, keep_best=True):
    best = None
    try:
        for i in range(n):
            best = i
            yield Progress(step=i + 1, total=n, stage="count", metrics={"loss": 1.0 / (i + 1)})
    except Cancelled:
        if not keep_best:
            raise
        return ("cancelled", best)
    return ("done", best)


def test_drain_returns_result_and_reports_events():
    seen = []
    assert drain(counting_job(5), show=True, callback=seen.append) == ("done", 4)
    assert [e.step for e in seen] == [1, 2, 3, 4, 5]
    assert seen[-1].fraction == 1.0
    assert "loss=0.2" in seen[-1].describe()


def test_cancel_returns_best_so_far():
    token = CancelToken()
    events = []

    def cb(e):
        events.append(e)
        if e.step == 3:
            token.cancel()

    result = drain(cancellable(counting_job(100), token), show=False, callback=cb)
    assert result == ("cancelled", 2)
    assert len(events) == 3


def test_cancel_propagates_when_job_has_nothing_to_return():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        drain(cancellable(counting_job(10, keep_best=False), token), show=False)


def test_ctrl_c_between_events_becomes_cancelled_in_the_job():
    def cb(e):
        if e.step == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises while drain() updates the bar

    assert drain(counting_job(10), show=False, callback=cb) == ("cancelled", 1)


def test_relay_transforms_events_and_passes_cancel_on_to_the_job():
    seen = []

    def cb(e):
        seen.append((e.step, e.stage))
        if e.step == 2:
            raise KeyboardInterrupt

    job = relay(counting_job(10), lambda e: replace(e, stage="relayed"))
    assert drain(job, show=False, callback=cb) == ("cancelled", 1)
    assert seen == [(1, "relayed"), (2, "relayed")]


def test_relay_each_yields_what_the_handler_yields_and_a_cancel_it_raises_reaches_the_job():
    def handle(e):
        yield e
        yield replace(e, stage="between")
        if e.step == 3:
            raise Cancelled("stopped")

    seen = []
    assert drain(relay_each(counting_job(10), handle), show=False,
                 callback=lambda e: seen.append((e.step, e.stage))) == ("cancelled", 2)
    assert seen == [(1, "count"), (1, "between"), (2, "count"), (2, "between"), (3, "count"), (3, "between")]
    assert drain(relay_each(counting_job(2), handle), show=False) == ("done", 1)


def test_stopwatch_eta():
    sw = Stopwatch()
    assert sw.eta(0, 10) is None
    e = sw.event(5, 10, stage="x")
    assert e.eta_s is not None and e.eta_s >= 0
