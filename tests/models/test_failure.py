"""models.failure: landmark labels that respect censoring (Titan), the telemetry dataset's labels and
precursor features, the Titan evaluation against the base rate, and the input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.errors import InsufficientHistoryError, MissingColumnsError
from models.failure import (
    TITAN_FEATURES,
    FailureRiskModel,
    evaluate_titan,
    telemetry_risk_dataset,
    telemetry_risk_features,
    titan_landmarks,
)

T0 = 1_700_000_000.0
# A Titan subsample for the evaluation test: 6,000 of 30,207 GPUs (seeded), to keep the test fast.
TITAN_SAMPLE_GPUS = 6_000


def titan_rows(*gpus: tuple[str, float, bool, str]) -> pd.DataFrame:
    """(SN, years, dead, batch) GPUs at one position."""
    frame = pd.DataFrame(gpus, columns=["SN", "years", "dead", "batch"])
    for name in ("col", "row", "cage", "slot", "node"):
        frame[name] = 1
    return frame


def test_titan_landmarks_respect_censoring() -> None:
    rows = titan_landmarks(
        titan_rows(
            ("dies", 1.7, True, "old"),  # ages 0, 0.5: survives the next year; 1.0, 1.5: dies within it
            ("censored", 1.2, False, "new"),  # age 0: seen alive for the whole year; ages 0.5 and 1.0:
        ),  # observation ends inside the year without a failure → outcome unknown → no row
        horizon_years=1.0,
        every_years=0.5,
    )
    got = {(r.SN, r.age_years): r.label for r in rows.itertuples()}
    assert got == {
        ("dies", 0.0): 0,
        ("dies", 0.5): 0,
        ("dies", 1.0): 1,
        ("dies", 1.5): 1,
        ("censored", 0.0): 0,
    }
    assert list(rows.columns) == ["SN", *TITAN_FEATURES, "label"]
    assert rows.loc[rows["SN"] == "dies", "batch_old"].eq(1.0).all()


def test_titan_failure_risk_beats_the_base_rate(titan_gpus: pd.DataFrame) -> None:
    sample = titan_gpus.sample(TITAN_SAMPLE_GPUS, random_state=0)
    score = evaluate_titan(sample, random_state=0)
    assert score.baseline_roc_auc == 0.5
    assert score.baseline_pr_auc == pytest.approx(score.positives_test / score.n_test)
    assert score.roc_auc > 0.8
    assert score.pr_auc > 3 * score.baseline_pr_auc
    assert score.brier < score.baseline_brier


def gpu_telemetry(minutes: int) -> pd.DataFrame:
    """Two nodes × 2 GPUs, one sample a minute. n1/GPU 0: correctable errors from minute 60, a double-bit
    error at minute 100. n2 goes silent after minute 120."""
    rows = []
    for m in range(minutes):
        for node in ("n1", "n2"):
            if node == "n2" and m > 120:
                continue
            for gpu in (0, 1):
                failing = node == "n1" and gpu == 0
                sbe = max(0, m - 60) * 3 if failing else 0
                dbe = 1 if failing and m >= 100 else 0
                xid = 48 if failing and m >= 100 else (63 if failing and m >= 61 else 0)
                rows.append(("c", node, gpu, T0 + 60 * m, 300.0, 50.0, 100.0, sbe, dbe, xid))
    columns = ["cluster", "node", "gpu_index", "ts", "power_w", "temp_c", "gpu_util_pct"]
    return pd.DataFrame(rows, columns=[*columns, "ecc_sbe_total", "ecc_dbe_total", "xid_last"])


def test_telemetry_labels_precursors_and_censoring() -> None:
    rows = telemetry_risk_dataset(
        gpu_telemetry(240),
        horizon_s=1800.0,
        window_s=600.0,
        every_s=600.0,
        bucket_s=60.0,
        silent_after_s=300.0,
    )
    failing = rows[(rows["node"] == "n1") & (rows["gpu_index"] == 0)]
    minute = ((failing["ts"] - T0) / 60).round().astype(int) - 1
    assert set(minute[failing["label"] == 1]) == {79, 89, 99}  # landmarks within 30 min of minute 100
    assert failing["ts"].max() < T0 + 100 * 60  # no row once it has failed
    assert (failing.loc[failing["label"] == 1, "sbe_rate_per_h"] > 0).all()  # the precursor is visible
    healthy = rows[(rows["node"] == "n1") & (rows["gpu_index"] == 1)]
    assert healthy["label"].eq(0).all() and (healthy["sbe_total"] == 0).all()
    silent = rows[rows["node"] == "n2"]
    assert silent["label"].eq(0).all()  # silence censors; it is not a GPU failure
    assert silent["ts"].max() <= T0 + (121 - 30) * 60  # no landmark whose horizon runs into the silence


def test_live_features_score_every_reporting_gpu_that_has_not_failed() -> None:
    live = telemetry_risk_features(gpu_telemetry(90), window_s=600.0, bucket_s=60.0)
    assert sorted(zip(live["node"], live["gpu_index"], strict=True)) == [
        ("n1", 0), ("n1", 1), ("n2", 0), ("n2", 1)
    ]  # fmt: skip
    failing = live[(live["node"] == "n1") & (live["gpu_index"] == 0)].iloc[0]
    assert failing["sbe_rate_per_h"] == pytest.approx(3 * 9 / (9 / 60))
    assert failing["xid_last"] == 63
    later = telemetry_risk_features(gpu_telemetry(110), window_s=600.0, bucket_s=60.0)
    assert not ((later["node"] == "n1") & (later["gpu_index"] == 0)).any()


def test_too_little_telemetry_and_missing_columns() -> None:
    with pytest.raises(InsufficientHistoryError, match="needs more than"):
        telemetry_risk_dataset(gpu_telemetry(30), horizon_s=1800.0, window_s=600.0, bucket_s=60.0)
    with pytest.raises(MissingColumnsError, match="'power_w'"):
        telemetry_risk_dataset(gpu_telemetry(30).drop(columns="power_w"))
    with pytest.raises(MissingColumnsError, match="'years'"):
        titan_landmarks(titan_rows(("a", 1.0, True, "old")).drop(columns="years"))
    model = FailureRiskModel(("temp_c",))
    with pytest.raises(MissingColumnsError, match="'temp_c'"):
        model.fit(pd.DataFrame({"temp": [1.0, 2.0]}), np.array([0, 1]))
