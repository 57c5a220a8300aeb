"""Interrupted, failing and killed runs: a re-run completes with identical labels, skipping
the blocks already finished."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import zarr

from napari_emseg.blockwise import BlockwiseConfig, dask_client, instances_blockwise_job
from napari_emseg.blockwise import instances as instances_module
from napari_emseg.postprocess import MitoConfig, NeuronConfig
from napari_emseg.progress import Cancelled, drain

NEURONS = NeuronConfig()
SMALL = BlockwiseConfig(blocks=(8, 80, 80), halo=(4, 16, 16))  # 2 x 2 x 2 blocks


def labels_of(path):
    return zarr.open_array(str(path), mode="r")[:]


@pytest.fixture(scope="module")
def reference(maps, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "seg.zarr/labels"
    drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL, scheduler=client), show=False)
    return labels_of(out)


def test_interrupted_run_resumes_without_redoing_blocks(maps, client, reference, tmp_path):
    out = tmp_path / "seg.zarr/labels"

    def stop_after_three(event):
        if event.stage == "extract" and event.step >= 3:
            raise KeyboardInterrupt  # Ctrl-C while the job waits at a yield

    with pytest.raises(Cancelled):
        drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL, scheduler=client),
              show=False, callback=stop_after_three)
    # blocks already running when the cancel came may still finish (and are kept): a block
    # recorded as done before the re-run starts is never redone
    records = tmp_path / "seg.zarr" / ".labels.blockwise" / "extract"
    done_before = {p: p.stat().st_mtime_ns for p in records.glob("*.npz")}
    assert 3 <= len(done_before) <= 8
    events, after_extract = [], {}

    def watch(event):
        events.append(event)
        if event.stage == "extract" and event.step == 8:  # the scratch folder goes when the run ends
            after_extract.update({p: p.stat().st_mtime_ns for p in done_before})

    drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL, scheduler=client),
          show=False, callback=watch)
    extract = [e for e in events if e.stage == "extract"]
    assert extract[-1].step == 8 and len(extract) <= max(1, 8 - len(done_before))
    assert extract[0].step >= len(done_before)
    assert after_extract == done_before  # not rewritten
    np.testing.assert_array_equal(labels_of(out), reference)
    # a finished run is not redone at all
    events = []
    drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL, scheduler=client),
          show=False, callback=events.append)
    assert len(events) == 1 and "nothing to do" in events[0].message


def test_a_block_that_fails_once_is_retried(maps, client, reference, tmp_path, monkeypatch):
    marker = tmp_path / "failed-once"
    real = instances_module.fragment_block

    def flaky(spec, box):
        if box.index == 5 and not marker.exists():
            marker.touch()
            raise RuntimeError("worker hiccup")
        return real(spec, box)

    monkeypatch.setattr(instances_module, "fragment_block", flaky)
    out = tmp_path / "seg.zarr/labels"
    drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL.replace(retries=1), scheduler=client),
          show=False)
    assert marker.exists()
    np.testing.assert_array_equal(labels_of(out), reference)


def test_a_failure_without_retries_stops_and_a_rerun_finishes(maps, client, reference, tmp_path, monkeypatch):
    real = instances_module.fragment_block

    def broken(spec, box):
        if box.index == 6:
            raise RuntimeError("disk full")
        return real(spec, box)

    monkeypatch.setattr(instances_module, "fragment_block", broken)
    out = tmp_path / "seg.zarr/labels"
    with pytest.raises(RuntimeError, match="disk full"):
        drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL.replace(retries=0),
                                      scheduler=client), show=False)
    monkeypatch.setattr(instances_module, "fragment_block", real)
    drain(instances_blockwise_job(maps["affinities"], out, NEURONS, SMALL, scheduler=client), show=False)
    np.testing.assert_array_equal(labels_of(out), reference)


def test_killed_worker_process_is_replaced_and_labels_are_identical(maps, client, tmp_path):
    """Two worker processes; one is SIGKILLed mid-run: its blocks are rescheduled."""
    cfg, blocks = MitoConfig(), BlockwiseConfig(blocks=(8, 80, 40), halo=(4, 16, 16))  # 16 blocks
    drain(instances_blockwise_job(maps["bcd"], tmp_path / "ref.zarr/labels", cfg, blocks, scheduler=client),
          show=False)
    with dask_client(None, 2, processes=True) as procs:
        before = procs.run(os.getpid)
        job = instances_blockwise_job(maps["bcd"], tmp_path / "k.zarr/labels", cfg, blocks, scheduler=procs)
        killed = False
        for event in job:
            if event.stage == "extract" and not killed:
                os.kill(next(iter(before.values())), signal.SIGKILL)
                killed = True
        after = procs.run(os.getpid)
    assert killed and set(after.values()) != set(before.values())
    np.testing.assert_array_equal(labels_of(tmp_path / "k.zarr/labels"), labels_of(tmp_path / "ref.zarr/labels"))
