# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""twin.model_registry: save and load with metadata; a clear error for an unfitted, modified, foreign,
missing or incompatible model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.duration import JobDurationModel
from models.failure import FailureRiskModel
from twin.model_registry import CARD_FILE, MODEL_FILE, ModelRegistry, RegistryError, library_versions

TRAINED_AT = 1_700_000_000.0


def fitted_model() -> tuple[JobDurationModel, object]:
    rng = np.random.default_rng(0)
    import pandas as pd

    jobs = pd.DataFrame(
        {
            "num_gpu": rng.integers(0, 8, 200),
            "gpu_milli": rng.integers(0, 1000, 200),
            "cpu_milli": rng.integers(1000, 9000, 200),
            "memory_mib": rng.integers(1000, 9000, 200),
            "qos": rng.choice(["LS", "BE"], 200),
        }
    )
    duration = np.exp(4 + jobs["num_gpu"] / 4 + rng.normal(0, 0.2, 200))
    return JobDurationModel(max_iter=20, random_state=0).fit(jobs, duration), jobs


def test_save_then_load_gives_the_same_predictions_and_the_card(tmp_path: Path) -> None:
    model, jobs = fitted_model()
    registry = ModelRegistry(tmp_path)
    card = registry.save(
        "job-duration",
        model,
        trained_at_ts=TRAINED_AT,
        features=list(model.feature_names_in_),
        data_range={"jobs": 200},
        metrics={"mae_log_s": 0.25, "nan": float("nan")},
    )
    assert card.version == "job-duration-0001"
    assert registry.save("job-duration", model, trained_at_ts=TRAINED_AT).version == "job-duration-0002"
    loaded, loaded_card = registry.load("job-duration", "job-duration-0001", expected_type=JobDurationModel)
    np.testing.assert_array_equal(loaded.predict(jobs), model.predict(jobs))  # type: ignore[arg-type]
    assert loaded_card == card
    assert card.trained_at == "2023-11-14T22:13:20+00:00"
    assert card.features == ("num_gpu", "gpu_milli", "cpu_milli", "memory_mib", "qos")
    assert card.library_versions["scikit-learn"] == library_versions()["scikit-learn"]
    assert card.metrics == {"mae_log_s": 0.25, "nan": None}
    assert card.params["random_state"] == 0
    assert registry.load("job-duration")[1].version == "job-duration-0002"  # latest by default


def test_an_unfitted_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not fitted"):
        ModelRegistry(tmp_path).save("job-duration", JobDurationModel(), trained_at_ts=TRAINED_AT)


def test_a_missing_model_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"no saved model 'power'.*twin models train"):
        ModelRegistry(tmp_path).load("power")


def test_a_modified_file_is_refused(tmp_path: Path) -> None:
    model, _ = fitted_model()
    registry = ModelRegistry(tmp_path)
    card = registry.save("job-duration", model, trained_at_ts=TRAINED_AT)
    path = tmp_path / "job-duration" / card.version / MODEL_FILE
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(RegistryError, match="SHA-256"):
        registry.load("job-duration")


def test_another_scikit_learn_version_is_incompatible(tmp_path: Path) -> None:
    model, _ = fitted_model()
    registry = ModelRegistry(tmp_path)
    card = registry.save("job-duration", model, trained_at_ts=TRAINED_AT)
    card_path = tmp_path / "job-duration" / card.version / CARD_FILE
    raw = json.loads(card_path.read_text())
    raw["library_versions"]["scikit-learn"] = "0.24.2"
    card_path.write_text(json.dumps(raw))
    with pytest.raises(RegistryError, match=r"scikit-learn 0\.24\.2.*incompatible.*retrain"):
        registry.load("job-duration")


def test_an_unloadable_or_foreign_or_unfitted_object_is_refused(tmp_path: Path) -> None:
    import hashlib

    import joblib

    model, _ = fitted_model()
    registry = ModelRegistry(tmp_path)
    card = registry.save("job-duration", model, trained_at_ts=TRAINED_AT)
    with pytest.raises(RegistryError, match="is a JobDurationModel, not a FailureRiskModel"):
        registry.load("job-duration", expected_type=FailureRiskModel)
    folder = tmp_path / "job-duration" / card.version

    def replace(payload: bytes) -> None:
        (folder / MODEL_FILE).write_bytes(payload)
        raw = json.loads((folder / CARD_FILE).read_text())
        raw["sha256"] = hashlib.sha256(payload).hexdigest()
        (folder / CARD_FILE).write_text(json.dumps(raw))

    replace(b"not a pickle")
    with pytest.raises(RegistryError, match="cannot be loaded"):
        registry.load("job-duration")
    joblib.dump(JobDurationModel(), folder / "unfitted.joblib")
    replace((folder / "unfitted.joblib").read_bytes())
    with pytest.raises(RegistryError, match="not fitted"):
        registry.load("job-duration")


def test_bad_names_are_refused(tmp_path: Path) -> None:
    model, _ = fitted_model()
    with pytest.raises(RegistryError, match="model name"):
        ModelRegistry(tmp_path).save("../escape", model, trained_at_ts=TRAINED_AT)
