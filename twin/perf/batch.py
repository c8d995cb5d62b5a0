"""Many parallel layouts as parallel NumPy arrays, so one code path serves a what-if and a sweep.

The kernels in `memory`, `step` and `power` take a `LayoutBatch` and return arrays of the same length;
the scalar API wraps a batch of one. Enumerations are stored as integer codes (index into
`specs.PRECISIONS` / `OFFLOADS` / `RECOMPUTES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from twin.perf.specs import OFFLOADS, PRECISIONS, RECOMPUTES, Offload, ParallelLayout, Precision, Recompute

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

PRECISION_CODE = {p: i for i, p in enumerate(PRECISIONS)}
OFFLOAD_CODE = {o: i for i, o in enumerate(OFFLOADS)}
RECOMPUTE_CODE = {r: i for i, r in enumerate(RECOMPUTES)}


@dataclass(frozen=True, slots=True)
class LayoutBatch:
    """N layouts, one per index; every field is an array of length N."""

    tp: IntArray
    pp: IntArray
    cp: IntArray
    dp: IntArray
    micro_batch: IntArray
    virtual_stages: IntArray
    zero_stage: IntArray
    offload: IntArray
    recompute: IntArray
    sequence_parallel: BoolArray
    precision: IntArray
    fused_attention: BoolArray

    def __len__(self) -> int:
        return int(self.tp.shape[0])

    @classmethod
    def from_layouts(cls, layouts: Sequence[ParallelLayout]) -> LayoutBatch:
        """Pack layouts into arrays (order preserved)."""

        def ints(values: Sequence[int]) -> IntArray:
            return np.asarray(values, dtype=np.int64)

        return cls(
            tp=ints([x.tp for x in layouts]),
            pp=ints([x.pp for x in layouts]),
            cp=ints([x.cp for x in layouts]),
            dp=ints([x.dp for x in layouts]),
            micro_batch=ints([x.micro_batch for x in layouts]),
            virtual_stages=ints([x.virtual_stages for x in layouts]),
            zero_stage=ints([x.zero_stage for x in layouts]),
            offload=ints([OFFLOAD_CODE[x.offload] for x in layouts]),
            recompute=ints([RECOMPUTE_CODE[x.recompute] for x in layouts]),
            sequence_parallel=np.asarray([x.sequence_parallel for x in layouts], dtype=np.bool_),
            precision=ints([PRECISION_CODE[x.precision] for x in layouts]),
            fused_attention=np.asarray([x.fused_attention for x in layouts], dtype=np.bool_),
        )

    def layout(self, i: int) -> ParallelLayout:
        """The i-th layout as a `ParallelLayout`."""
        return ParallelLayout(
            tp=int(self.tp[i]),
            pp=int(self.pp[i]),
            cp=int(self.cp[i]),
            dp=int(self.dp[i]),
            micro_batch=int(self.micro_batch[i]),
            virtual_stages=int(self.virtual_stages[i]),
            zero_stage=int(self.zero_stage[i]),
            offload=OFFLOADS[int(self.offload[i])],
            recompute=RECOMPUTES[int(self.recompute[i])],
            sequence_parallel=bool(self.sequence_parallel[i]),
            precision=PRECISIONS[int(self.precision[i])],
            fused_attention=bool(self.fused_attention[i]),
        )

    def select(self, mask: BoolArray | IntArray) -> LayoutBatch:
        """The sub-batch picked by a boolean mask or an index array."""
        return LayoutBatch(
            tp=self.tp[mask],
            pp=self.pp[mask],
            cp=self.cp[mask],
            dp=self.dp[mask],
            micro_batch=self.micro_batch[mask],
            virtual_stages=self.virtual_stages[mask],
            zero_stage=self.zero_stage[mask],
            offload=self.offload[mask],
            recompute=self.recompute[mask],
            sequence_parallel=self.sequence_parallel[mask],
            precision=self.precision[mask],
            fused_attention=self.fused_attention[mask],
        )

    def is_offload(self, offload: Offload) -> BoolArray:
        return np.asarray(self.offload == OFFLOAD_CODE[offload], dtype=np.bool_)

    def is_recompute(self, recompute: Recompute) -> BoolArray:
        return np.asarray(self.recompute == RECOMPUTE_CODE[recompute], dtype=np.bool_)

    def is_precision(self, precision: Precision) -> BoolArray:
        return np.asarray(self.precision == PRECISION_CODE[precision], dtype=np.bool_)

    def per_precision(self, table: dict[Precision, float]) -> FloatArray:
        """Look a per-precision constant up for every layout."""
        values = np.asarray([table[p] for p in PRECISIONS], dtype=np.float64)
        return values[self.precision]
