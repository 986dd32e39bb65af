"""Devices as resources: parsing a device list, and placing memory demands on it."""
from __future__ import annotations

import pytest

from jobs.devices import (
    CPU,
    GIB,
    GPU,
    Budget,
    Demand,
    Device,
    cuda_visible_devices,
    detect_devices,
    parse_devices,
)


def test_device_lists_parse_and_bad_ones_say_what_is_expected():
    assert parse_devices("gpu0:16GiB, gpu1:24") == [Device(GPU, 0, 16 * GIB), Device(GPU, 1, 24 * GIB)]
    assert parse_devices("cpu:512MiB") == [Device(CPU, 0, 512 * 2 ** 20)]
    with pytest.raises(ValueError, match="expected e.g. gpu0:16GiB"):
        parse_devices("tpu:8GiB")
    with pytest.raises(ValueError, match="GPUs only or the CPU only"):
        parse_devices("gpu0:8GiB,cpu:8GiB")


def test_this_machine_is_detected_with_its_memory():
    devices = detect_devices()
    assert devices and all(d.total_bytes > GIB for d in devices)


def test_demands_fit_with_a_margin_and_a_multi_device_demand_takes_both():
    devices = parse_devices("gpu0:10GiB,gpu1:10GiB")
    budget = Budget(devices, margin=0.1)  # 9 GiB usable on each
    both = budget.place(Demand(4 * GIB, count=2, label="run 1"))
    assert both == [0, 1]
    budget.add(both, 4 * GIB, "run 1")
    assert budget.place(Demand(5 * GIB)) in ([0], [1])  # 5 GiB still free on each
    budget.add([0], 5 * GIB, "run 2")
    assert budget.place(Demand(5 * GIB)) == [1]
    assert budget.place(Demand(5 * GIB, count=2)) is None
    budget.add([1], 5 * GIB, "run 3")
    waiting = Demand(int(1.5 * GIB), label="run 4")
    assert budget.place(waiting) is None
    assert budget.why_not(waiting) == "waiting for GPU 0: needs 1.5 GiB, 0.0 free (in use: run 1 4.0 GiB, run 2 5.0 GiB)"
    assert "can never fit there (10.0 GiB in all)" in budget.why_not(Demand(12 * GIB))
    assert "needs 3 devices, this worker has 2" in budget.why_not(Demand(GIB, count=3))


def test_pinned_demands_and_child_environments():
    devices = parse_devices("gpu0:10GiB,gpu1:10GiB")
    budget = Budget(devices, margin=0.0)
    budget.add([0], 9 * GIB, "run 1")
    assert budget.place(Demand(2 * GIB, pin=0)) is None  # the chat engine lives on GPU 0
    assert budget.place(Demand(2 * GIB)) == [1]
    assert cuda_visible_devices(devices, [1]) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert cuda_visible_devices(parse_devices("cpu:8GiB"), [0]) == {}
