"""Replay of Alibaba's GPU cluster trace v2023 through werkhub's booking ledger.

``bench/trace.py`` is the command line; the engine lives here so that tests replay small
synthetic traces through the same code:

* ``trace``: reading the trace's node and task lists (CSV);
* ``assumptions``: every modelling assumption, with its documented default;
* ``workload``: the trace turned into werkhub units and people's booking requests;
* ``idlefeed``: the simulated GPU sampler that feeds werkhub's idle detector;
* ``replay``: the event-driven replay through the real ``BookingManager``;
* ``fcfs``: the first-come first-served baseline (no bookings);
* ``metrics``: the ledger's own records turned into the printed figures.

The trace is research data: cite the paper below with any figure made from it.
"""

from __future__ import annotations

CITATION = (
    "Qizhen Weng, Lingyun Yang, Yinghao Yu, Wei Wang, Xiaochuan Tang, Guodong Yang, "
    'Liping Zhang. "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with '
    "Fragmentation Gradient Descent\". USENIX ATC '23, USENIX Association, 2023. "
    "https://www.usenix.org/conference/atc23/presentation/weng "
    "(trace: https://github.com/alibaba/clusterdata, cluster-trace-gpu-v2023; "
    "research and study use only)"
)

__all__ = ["CITATION"]
