"""Collective-communication times (α–β model, ring algorithms, hierarchical across nodes).

A ring all-reduce of B bytes over n ranks moves 2·(n−1)/n·B bytes through each rank's link
(Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms"); reduce-scatter and all-gather
move half of that. When a group spans nodes, NCCL's hierarchical schedule reduces inside each node over
NVLink first and crosses the network with 1/n_local of the data per GPU (each GPU drives its own NIC),
so the two phases are summed (Jeaugey, "Massively Scale Your Deep Learning Training with NCCL 2.4", 2019).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from twin.perf.batch import FloatArray

Numbers = NDArray[Any] | float

# Achieved bus bandwidth over link bandwidth for large NCCL collectives inside a node.
# A100: vTrain's measured 8-GPU all-reduce table (trace/a100/AR_GPU8_1M_1024M_LUT) reaches
# 200–222 GB/s bus bandwidth on 300 GB/s-per-direction NVLink (0.67–0.74); B200: SimuMax's fitted
# all_reduce efficiency 0.742 (configs/system/b200_bf16_ceperm.json).
INTRA_NODE_COLLECTIVE_EFFICIENCY = 0.72
# Achieved fraction of NIC line rate for inter-node NCCL collectives over InfiniBand/RoCE
# (nccl-tests on DGX SuperPOD reach ~ 0.8 of 400 Gb/s NDR per GPU; NVIDIA DGX SuperPOD reference
# architecture, "Network performance" section).
INTER_NODE_COLLECTIVE_EFFICIENCY = 0.8
# Fixed cost of one collective call: SimuMax fitted 22–26 µs on B200 NVLink (configs/system/
# b200_bf16_ceperm.json); inter-node collectives add network round trips (~ 2x, NCCL 2.4 blog).
INTRA_NODE_LATENCY_S = 25e-6
INTER_NODE_LATENCY_S = 50e-6
# Point-to-point sends between pipeline stages inside a node: no reduction step, so they run faster
# than collectives (SimuMax's fitted B200 p2p efficiency is 1.45 of its nominal figure, counting both
# directions' NVLink lanes). We take 0.8 of the per-direction link rate, between the collective
# efficiency (0.72) and line rate; pipeline p2p is a small part of every validated step.
P2P_EFFICIENCY = 0.8


def _bandwidths(intra_bw: float, inter_bw: float) -> tuple[float, float]:
    return intra_bw * INTRA_NODE_COLLECTIVE_EFFICIENCY, inter_bw * INTER_NODE_COLLECTIVE_EFFICIENCY


def allreduce_s(
    bytes_: Numbers,
    group: Numbers,
    local: Numbers,
    intra_bw: float,
    inter_bw: float,
) -> FloatArray:
    """Ring all-reduce of `bytes_` over `group` ranks, `local` of them per node (hierarchical)."""
    return _reduce_like(bytes_, group, local, intra_bw, inter_bw, factor=2.0)


def reduce_scatter_s(
    bytes_: Numbers,
    group: Numbers,
    local: Numbers,
    intra_bw: float,
    inter_bw: float,
) -> FloatArray:
    """Reduce-scatter (or all-gather: same traffic) of a `bytes_` buffer over `group` ranks."""
    return _reduce_like(bytes_, group, local, intra_bw, inter_bw, factor=1.0)


allgather_s = reduce_scatter_s


def _reduce_like(
    bytes_: Numbers,
    group: Numbers,
    local: Numbers,
    intra_bw: float,
    inter_bw: float,
    factor: float,
) -> FloatArray:
    b = np.asarray(bytes_, dtype=np.float64)
    n = np.asarray(group, dtype=np.float64)
    n_local = np.minimum(np.asarray(local, dtype=np.float64), n)
    n_nodes = n / n_local
    bw_intra, bw_inter = _bandwidths(intra_bw, inter_bw)
    intra = factor * (n_local - 1.0) / n_local * b / bw_intra
    inter = factor * (n_nodes - 1.0) / n_nodes * (b / n_local) / bw_inter
    latency = np.where(n_local > 1, INTRA_NODE_LATENCY_S, 0.0) + np.where(
        n_nodes > 1, INTER_NODE_LATENCY_S, 0.0
    )
    return np.asarray(np.where(n > 1, intra + inter + latency, 0.0), dtype=np.float64)


def alltoall_s(
    bytes_: Numbers,
    group: Numbers,
    local: Numbers,
    intra_bw: float,
    inter_bw: float,
) -> FloatArray:
    """All-to-all where each rank holds `bytes_` and keeps 1/n of it: the rest crosses NVLink or the NIC."""
    b = np.asarray(bytes_, dtype=np.float64)
    n = np.asarray(group, dtype=np.float64)
    n_local = np.minimum(np.asarray(local, dtype=np.float64), n)
    bw_intra, bw_inter = _bandwidths(intra_bw, inter_bw)
    intra = (n_local - 1.0) / n * b / bw_intra
    inter = (n - n_local) / n * b / bw_inter
    latency = np.where(n > n_local, INTER_NODE_LATENCY_S, INTRA_NODE_LATENCY_S)
    return np.asarray(np.where(n > 1, np.maximum(intra, inter) + latency, 0.0), dtype=np.float64)


def p2p_s(bytes_: Numbers, same_node: Numbers | bool, intra_bw: float, inter_bw: float) -> FloatArray:
    """One point-to-point send of `bytes_` between neighbouring pipeline stages."""
    b = np.asarray(bytes_, dtype=np.float64)
    bw = np.where(same_node, intra_bw * P2P_EFFICIENCY, inter_bw * INTER_NODE_COLLECTIVE_EFFICIENCY)
    latency = np.where(same_node, INTRA_NODE_LATENCY_S, INTER_NODE_LATENCY_S)
    return np.asarray(b / bw + latency, dtype=np.float64)
