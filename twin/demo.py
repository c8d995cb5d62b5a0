"""`twin demo`: the whole twin on one machine, nothing to configure.

An embedded MQTT broker; a simulated cluster (16 nodes × 8 H100) running three training jobs that report
their steps, with a GPU falling off the bus a few minutes in; the ingest service on SQLite; predictors
trained from generated history with forecasts refreshed every minute; projections of the live jobs; and
the dashboard. Ctrl-C stops everything and flushes what was received.

Everything the demo runs is built here from scenarios, so the simulated jobs, the SimPy twin's plan (a
`twin sim` spec written next to the database) and the dashboard agree on job ids, models and layouts.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from sensors.command_agent import (
    AgentSettings,
    CommandAgent,
    CommandProcessor,
    checkpoint_handler,
    simulated_power_cap_handler,
)
from sensors.commands import Action, CommandSecret, CommandVerifier
from sensors.contract import Topics
from sensors.mqtt_url import BrokerUrl, parse_broker_url
from sensors.publisher import PublisherHub, PublisherSettings
from sensors.runner import RunStats, run_source
from sensors.simulated import JobSpec, SimulatedCluster
from twin.broker import EmbeddedBroker
from twin.decode import DecoderSettings
from twin.service import IngestService, ServiceSettings
from twin.store.repository import Store
from twin.workload_profile import gpu_profile, workload_profile

log = logging.getLogger(__name__)

DEMO_CLUSTER: Final = "demo"
DEMO_GPU: Final = "h100-sxm"
DEMO_NODES: Final = 16
DEMO_GPUS_PER_NODE: Final = 8
DEMO_INTERVAL_S: Final = 1.0
DEMO_SEED: Final = 2026
# The injected failure: GPU 5 of the pretraining job's first node falls off the bus (XID 79) this long
# after the start, so the dashboard shows a failure, a failed job and its restart within minutes.
FAILURE_AFTER_S: Final = 180.0
FAILURE_GPU: Final = 5
# ASSUMPTION (demo pacing): a failed job restarts 2 minutes later on healthy nodes; the twin's default
# restart time is 10 minutes (twin.perf.reliability.DEFAULT_RESTART_S), too slow to watch. The SimPy
# plan written for projections uses the same 2 minutes, so projections and the simulation agree.
DEMO_RESTART_S: Final = 120.0
# Prices for the demo's cost figures: €2.5 per H100-hour and a PUE of 1.2, as in the README's example.
DEMO_PRICE_PER_GPU_HOUR: Final = 2.5
DEMO_PUE: Final = 1.2
DEFAULT_DASHBOARD_PORT: Final = 8501
# A fresh random command secret per demo run (32 bytes of entropy, as `secrets` recommends for tokens).
COMMAND_SECRET_BYTES: Final = 32
# The feedback loop: every minute the twin advises (power caps within MAX_SLOWDOWN, checkpoint-now on
# failure precursors) and publishes signed commands; the simulated nodes verify and apply them.
ADVISE_EVERY_S: Final = 60.0
# The slowdown a power cap may cost: 5 %, `twin advise`'s default (twin.cli_advise).
MAX_SLOWDOWN: Final = 0.05


@dataclass(frozen=True, slots=True)
class DemoJob:
    """One training job of the demo: a scenario (DESIGN §3) on whole nodes, its length and checkpoints."""

    job_id: str
    scenario: dict[str, Any]
    nodes: tuple[str, ...]
    steps: int
    checkpoint_every_steps: int


def _scenario(
    model: str, gpus: int, layout: dict[str, Any], seq_len: int, global_batch: int
) -> dict[str, Any]:
    return {
        "model": {"preset": model},
        "cluster": {
            "gpu": DEMO_GPU,
            "gpus": gpus,
            "gpus_per_node": DEMO_GPUS_PER_NODE,
            "price_per_gpu_hour": DEMO_PRICE_PER_GPU_HOUR,
            "currency": "EUR",
            "pue": DEMO_PUE,
        },
        "layout": {"cp": 1, "dp": None, "micro_batch": 1, "precision": "bf16", **layout},
        "training": {"seq_len": seq_len, "global_batch": global_batch},
    }


def demo_jobs() -> tuple[DemoJob, ...]:
    """Three jobs on 14 of the 16 nodes (2 stay free to take over a failed node)."""
    names = [f"n{k:02d}" for k in range(DEMO_NODES)]
    return (
        DemoJob(
            "pretrain-70b",
            _scenario(
                "llama3-70b",
                64,
                {"tp": 8, "pp": 2, "zero_stage": 1, "recompute": "selective", "sequence_parallel": True},
                8192,
                256,
            ),
            tuple(names[0:8]),
            steps=20_000,
            checkpoint_every_steps=16,  # ~10 min of 37.6 s steps; a checkpoint write takes ~2 min
        ),
        DemoJob(
            "finetune-8b",
            _scenario(
                "llama3-8b", 32, {"tp": 1, "pp": 1, "zero_stage": 3, "recompute": "selective"}, 8192, 128
            ),
            tuple(names[8:12]),
            steps=3_000,
            checkpoint_every_steps=100,
        ),
        DemoJob(
            "sft-8b",
            _scenario("llama3.1-8b", 16, {"tp": 2, "pp": 1, "zero_stage": 1, "recompute": "none"}, 4096, 64),
            tuple(names[12:14]),
            steps=2_000,
            checkpoint_every_steps=100,
        ),
    )


def simulated_demo_cluster(
    jobs: tuple[DemoJob, ...],
    start_s: float,
    seed: int = DEMO_SEED,
    failure_after_s: float = FAILURE_AFTER_S,
) -> SimulatedCluster:
    """The demo's simulated cluster with its jobs, and the scheduled GPU failure."""
    specs = tuple(
        JobSpec(
            job.job_id,
            workload_profile(job.scenario),
            job.nodes,
            steps=job.steps,
            checkpoint_every_steps=job.checkpoint_every_steps,
        )
        for job in jobs
    )
    cluster = SimulatedCluster(
        nodes=DEMO_NODES,
        gpus_per_node=DEMO_GPUS_PER_NODE,
        gpu=gpu_profile(DEMO_GPU),
        jobs=specs,
        seed=seed,
        restart_delay_s=DEMO_RESTART_S,
    )
    cluster.schedule_gpu_failure(jobs[0].nodes[0], FAILURE_GPU, start_s + failure_after_s)
    return cluster


def demo_sim_spec(jobs: tuple[DemoJob, ...]) -> dict[str, Any]:
    """The `twin sim` spec of the demo cluster: the plan that live projections fork from."""
    spec_jobs = []
    for job in jobs:
        workload = workload_profile(job.scenario)
        layout = {k: v for k, v in job.scenario["layout"].items() if k != "dp"}
        spec_jobs.append(
            {
                "id": job.job_id,
                "model": job.scenario["model"],
                "gpus": job.scenario["cluster"]["gpus"],
                "layout": layout,
                "training": {**job.scenario["training"], "tokens": job.steps * workload.tokens_per_step},
                "checkpoint_interval_s": job.checkpoint_every_steps * workload.step_time_s,
            }
        )
    return {
        "description": "gpu-twin demo: 16 × 8 H100, three jobs (written by `twin demo`).",
        "cluster": {
            "gpu": DEMO_GPU,
            "nodes": DEMO_NODES,
            "gpus_per_node": DEMO_GPUS_PER_NODE,
            "price_per_gpu_hour": DEMO_PRICE_PER_GPU_HOUR,
            "currency": "EUR",
            "pue": DEMO_PUE,
            "restart_s": DEMO_RESTART_S,
        },
        "jobs": spec_jobs,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class DemoSettings:
    workdir: Path
    dashboard: bool = True
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    dashboard_host: str = "127.0.0.1"
    duration_s: float | None = None
    seed: int = DEMO_SEED
    forecasts: bool = True
    forecast_every_s: float = 60.0
    failure_after_s: float = FAILURE_AFTER_S
    advise: bool = True
    advise_every_s: float = ADVISE_EVERY_S


@dataclass(slots=True)
class DemoRun:
    """What a running demo holds; `stop()` ends it (idempotent)."""

    settings: DemoSettings
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    dashboard: subprocess.Popen[bytes] | None = None
    service: IngestService | None = None
    store: Store | None = None
    errors: list[str] = field(default_factory=list)
    _secret: CommandSecret | None = None  # generated per run; never printed

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.settings.workdir / 'demo.db'}"

    @property
    def spec_path(self) -> Path:
        return self.settings.workdir / "demo-cluster.json"

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:  # a part that dies says so; the others go on until Ctrl-C
                log.exception("demo part %s stopped", name)
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=guarded, name=f"demo-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self, out: TextIO) -> None:
        s = self.settings
        s.workdir.mkdir(parents=True, exist_ok=True)
        jobs = demo_jobs()
        self.spec_path.write_text(json.dumps(demo_sim_spec(jobs), indent=2), encoding="utf-8")
        self.broker = EmbeddedBroker(port=0)
        self.broker.start()
        url = parse_broker_url(self.broker.url)
        self.store = Store.open(self.db_url)
        settings = ServiceSettings(
            broker=url,
            cluster=DEMO_CLUSTER,
            client_id="twin-demo-serve",
            mqtt_version=4,  # the embedded broker speaks MQTT 3.1.1 (twin.broker)
            telemetry_interval_s=DEMO_INTERVAL_S,
            decoder=DecoderSettings(),
        )
        self.service = IngestService(settings, self.store)
        service = self.service
        self._thread("serve", lambda: service.run(self.stop_event))
        start_s = time.time()
        cluster = simulated_demo_cluster(jobs, start_s, s.seed, s.failure_after_s)
        hub = PublisherHub(PublisherSettings(url=url, topics=Topics(DEMO_CLUSTER), client_id_prefix="demo"))

        agent = self._command_agent(url, cluster) if s.advise else None

        def process_commands(_stats: RunStats) -> None:
            if agent is not None:
                agent.process_pending()  # on the publishing thread: the simulated cluster needs no lock

        def publish() -> None:
            try:
                run_source(cluster, hub, DEMO_INTERVAL_S, stop=self.stop_event, on_tick=process_commands)
            finally:
                if agent is not None:
                    agent.close()
                cluster.close()
                hub.close(timeout_s=5.0)

        self._thread("sensors", publish)
        if agent is not None:
            self._thread("advisor", lambda: self._advise_loop(url))
        if s.forecasts:
            from twin.demo_forecasts import forecast_loop

            self._thread(
                "forecasts",
                lambda: forecast_loop(
                    self.db_url,
                    DEMO_CLUSTER,
                    self.stop_event,
                    every_s=s.forecast_every_s,
                    registry_dir=s.workdir / "models",
                    live_start_ts=start_s,
                    seed=s.seed,
                    gpu=DEMO_GPU,
                ),
            )
        out.write(
            f"gpu-twin demo: {DEMO_NODES} nodes × {DEMO_GPUS_PER_NODE} {DEMO_GPU}, {len(jobs)} training "
            f"jobs; GPU {FAILURE_GPU} of {jobs[0].nodes[0]} fails in {s.failure_after_s:.0f} s\n"
            f"  broker    {self.broker.url} (embedded, MQTT 3.1.1)\n"
            f"  store     {self.db_url}\n"
            f"  plan      {self.spec_path}\n"
            f"            (twin project {self.spec_path} --db {self.db_url} --cluster demo)\n"
        )
        if s.dashboard:
            self.dashboard = subprocess.Popen(
                [
                    sys.executable, "-m", "twin.cli", "dashboard", "--db", self.db_url,
                    "--sim-spec", str(self.spec_path), "--cluster", DEMO_CLUSTER,
                    "--host", s.dashboard_host, "--port", str(s.dashboard_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(s.workdir / "dashboard.log", "ab"),  # noqa: SIM115 (the child keeps it)
            )  # fmt: skip
            out.write(
                f"  dashboard http://{s.dashboard_host}:{s.dashboard_port}  (Ctrl-C stops everything)\n"
            )
        else:
            out.write("  dashboard off (--no-dashboard); Ctrl-C stops everything\n")
        out.flush()

    def _command_agent(self, url: BrokerUrl, cluster: SimulatedCluster) -> CommandAgent:
        """The simulated nodes' command agent: verifies signed commands and applies them (a simulation)."""
        self._secret = CommandSecret.from_text(secrets.token_urlsafe(COMMAND_SECRET_BYTES))
        verifier = CommandVerifier(self._secret, cluster=DEMO_CLUSTER, nodes=tuple(cluster.node_names))
        handlers = {
            Action.POWER_CAP: simulated_power_cap_handler(cluster),
            Action.CHECKPOINT_NOW: checkpoint_handler(self.settings.workdir / "checkpoint-advice"),
        }
        processor = CommandProcessor(verifier, handlers, apply=True)
        agent = CommandAgent(AgentSettings(url, Topics(DEMO_CLUSTER), tuple(cluster.node_names)), processor)
        agent.start()
        return agent

    def _advise_loop(self, url: BrokerUrl) -> None:
        """Every `advise_every_s`: decide advice from the store and publish it, signed; outcomes recorded."""
        from twin.cli_advise import plan_advice
        from twin.command_publisher import CommandPublisher, CommandPublisherSettings

        assert self._secret is not None
        store = Store.open(self.db_url)
        publisher = CommandPublisher(CommandPublisherSettings(url, Topics(DEMO_CLUSTER), self._secret), store)
        section = {"gpu": DEMO_GPU, "gpus_per_node": DEMO_GPUS_PER_NODE, "pue": DEMO_PUE}
        try:
            publisher.start(timeout_s=10.0)
            while not self.stop_event.wait(self.settings.advise_every_s):
                plan = plan_advice(
                    store, DEMO_CLUSTER, time.time(), max_slowdown=MAX_SLOWDOWN, cluster_section=section
                )
                for cap in plan.power_caps:
                    publisher.issue_power_cap(cap)
                for checkpoint in plan.checkpoints:
                    publisher.issue_checkpoint(checkpoint)
        finally:
            publisher.close()
            store.close()

    def wait(self) -> None:
        deadline = None if self.settings.duration_s is None else time.monotonic() + self.settings.duration_s
        while not self.stop_event.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.dashboard is not None and self.dashboard.poll() is not None:
                self.errors.append(f"dashboard exited with {self.dashboard.returncode}; see dashboard.log")
                self.dashboard = None
            self.stop_event.wait(0.2)

    def stop(self) -> None:
        self.stop_event.set()
        if self.dashboard is not None and self.dashboard.poll() is None:
            self.dashboard.terminate()
            try:
                self.dashboard.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.dashboard.kill()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.store is not None:
            self.store.close()
        if self.broker is not None:
            self.broker.stop()


def summary(run: DemoRun) -> dict[str, Any]:
    stats = run.service.stats.to_json() if run.service is not None else {}
    return {
        "received": stats.get("received"),
        "telemetry_rows": stats.get("telemetry_rows"),
        "job_events": stats.get("job_events"),
        "rejects": stats.get("rejects"),
        "errors": run.errors,
        "db": run.db_url,
    }
