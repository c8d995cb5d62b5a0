# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""The model registry: fitted predictors persisted with joblib, each beside a metadata card (JSON).

Layout: `<root>/<name>/<version>/model.joblib` and `card.json`; versions are `<name>-0001`, `-0002`, …,
the highest is the latest. The card records the class, the features, the library versions it was
fitted with, when (`trained_at_ts`, passed in: the registry never reads the clock), the data range, the
held-out metrics and the model file's SHA-256.

Loading refuses, with `RegistryError` saying why and what to do: a missing model; a card or file that
does not match (SHA-256); a model saved with another scikit-learn minor version or NumPy major version
(scikit-learn does not support unpickling across versions — its "Model persistence" guide); a file
that does not unpickle; an object of another class than asked for; an unfitted estimator.

Security: joblib files are pickles, which run code when loaded. Load only registries you wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from twin.errors import TwinError

REGISTRY_ENV: Final = "TWIN_REGISTRY"
DEFAULT_REGISTRY_DIR: Final = "twin-models"
MODEL_FILE: Final = "model.joblib"
CARD_FILE: Final = "card.json"
CARD_SCHEMA: Final = 1
# Distributions whose versions a card records; scikit-learn (minor) and NumPy (major) must match to load.
RECORDED_DISTRIBUTIONS: Final = ("scikit-learn", "numpy", "pandas", "joblib", "scipy", "gpu-twin")
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,47}")
_VERSION_DIGITS: Final = 4


class RegistryError(TwinError, ValueError):
    """A model cannot be saved or loaded; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the registry knows about one saved model (the content of `card.json`)."""

    name: str
    version: str
    class_name: str
    features: tuple[str, ...]
    library_versions: dict[str, str]
    trained_at_ts: float
    trained_at: str
    data_range: dict[str, Any]
    metrics: dict[str, Any]
    sha256: str
    params: dict[str, Any] = field(default_factory=dict)
    schema: int = CARD_SCHEMA

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        return out


def library_versions() -> dict[str, str]:
    """Python and the recorded distributions' versions ("absent" when not installed)."""
    versions = {"python": platform.python_version()}
    for dist in RECORDED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    item = getattr(value, "item", None)  # NumPy scalars
    if callable(item):
        return _json_safe(item())
    return repr(value)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


class ModelRegistry:
    """Saved models under `root` (constructing one does no I/O)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- writing ----------------------------------------------------------------------------------

    def save(
        self,
        name: str,
        model: Any,
        *,
        trained_at_ts: float,
        features: Sequence[str] = (),
        data_range: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> ModelCard:
        """Persist a fitted `model` as the next version of `name`; returns its card."""
        import joblib
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RegistryError(f"model name(={name!r}) must match {_NAME.pattern}.")
        if not isinstance(trained_at_ts, int | float) or not math.isfinite(trained_at_ts):
            raise RegistryError(f"trained_at_ts(={trained_at_ts!r}) must be a finite number of unix seconds.")
        try:
            check_is_fitted(model)
        except NotFittedError:
            raise RegistryError(
                f"model {name!r} ({type(model).__name__}) is not fitted; fit it before saving."
            ) from None
        except TypeError as exc:
            raise RegistryError(f"model {name!r} is not a scikit-learn estimator ({exc}).") from None
        version = self._next_version(name)
        folder = self.root / name / version
        folder.mkdir(parents=True, exist_ok=False)
        model_path = folder / MODEL_FILE
        tmp = folder / (MODEL_FILE + ".tmp")
        joblib.dump(model, tmp)
        os.replace(tmp, model_path)
        params = model.get_params(deep=False) if hasattr(model, "get_params") else {}
        card = ModelCard(
            name=name,
            version=version,
            class_name=f"{type(model).__module__}.{type(model).__qualname__}",
            features=tuple(str(f) for f in features),
            library_versions=library_versions(),
            trained_at_ts=float(trained_at_ts),
            trained_at=datetime.fromtimestamp(trained_at_ts, UTC).isoformat(timespec="seconds"),
            data_range=_json_safe(dict(data_range or {})),
            metrics=_json_safe(dict(metrics or {})),
            sha256=_digest(model_path),
            params=_json_safe(params),
        )
        tmp_card = folder / (CARD_FILE + ".tmp")
        tmp_card.write_text(json.dumps(card.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp_card, folder / CARD_FILE)
        return card

    def _next_version(self, name: str) -> str:
        numbers = [int(v.rsplit("-", 1)[1]) for v in self.versions(name)]
        return f"{name}-{(max(numbers) + 1 if numbers else 1):0{_VERSION_DIGITS}d}"

    # --- reading ----------------------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """The saved versions of `name`, oldest first (empty when there are none)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        pattern = re.compile(re.escape(name) + r"-(\d+)")
        found = [p.name for p in folder.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]
        return sorted(found, key=lambda v: int(v.rsplit("-", 1)[1]))

    def card(self, name: str, version: str | None = None) -> ModelCard:
        """The card of `name` (its latest version unless `version` is given)."""
        version = version or self._latest(name)
        path = self.root / name / version / CARD_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(
                f"model {name!r} version {version!r} has no {CARD_FILE} in {path.parent}."
            ) from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: unreadable model card ({exc}).") from None
        try:
            raw["features"] = tuple(raw["features"])
            return ModelCard(**raw)
        except (TypeError, KeyError) as exc:
            raise RegistryError(f"{path}: not a model card of this registry ({exc}).") from None

    def _latest(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise RegistryError(
                f"no saved model {name!r} in {self.root} (train one with `twin models train`, or give "
                f"--registry DIR / set {REGISTRY_ENV})."
            )
        return versions[-1]

    def load(
        self, name: str, version: str | None = None, *, expected_type: type | None = None
    ) -> tuple[Any, ModelCard]:
        """The fitted model `name` (latest version unless `version`) and its card; see the module docstring
        for what is refused."""
        import joblib
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        card = self.card(name, version)
        path = self.root / name / card.version / MODEL_FILE
        if not path.is_file():
            raise RegistryError(f"model {name!r} version {card.version!r}: {path} is missing.")
        now = library_versions()
        saved = card.library_versions
        if _major_minor(saved.get("scikit-learn", "?")) != _major_minor(now["scikit-learn"]):
            raise RegistryError(
                f"model {card.version} was saved with scikit-learn {saved.get('scikit-learn')}, this is "
                f"{now['scikit-learn']}: incompatible (scikit-learn models load only in the same minor "
                "version); retrain with `twin models train`."
            )
        if saved.get("numpy", "?").split(".")[0] != now["numpy"].split(".")[0]:
            raise RegistryError(
                f"model {card.version} was saved with NumPy {saved.get('numpy')}, this is {now['numpy']}: "
                "incompatible; retrain with `twin models train`."
            )
        if _digest(path) != card.sha256:
            raise RegistryError(f"{path} does not match its card's SHA-256 (modified or corrupt); retrain.")
        try:
            model = joblib.load(path)
        except Exception as exc:  # unpickling raises anything a class's __setstate__ may raise
            raise RegistryError(
                f"{path} cannot be loaded ({type(exc).__name__}: {exc}); it was saved by an incompatible "
                "version of the code; retrain with `twin models train`."
            ) from None
        if expected_type is not None and not isinstance(model, expected_type):
            raise RegistryError(
                f"model {card.version} is a {type(model).__name__}, not a {expected_type.__name__}."
            )
        try:
            check_is_fitted(model)
        except (NotFittedError, TypeError):
            raise RegistryError(
                f"model {card.version} ({type(model).__name__}) is not fitted; retrain."
            ) from None
        return model, card
