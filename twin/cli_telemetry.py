"""`twin serve` and `twin sensors …`: the telemetry commands (heavy imports happen inside each handler).

Settings come from flags, with `TWIN_*` environment variables as defaults, read here at the edge:
TWIN_BROKER (broker URL), TWIN_DB (database URL), TWIN_CLUSTER (cluster name), TWIN_COMMAND_SECRET (the
command loop's shared secret, when no --command-secret-file is given).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TextIO

# Where the embedded broker listens when `twin serve` runs without --broker, and so where `twin sensors`
# publishes without --broker (1884: next to Mosquitto's 1883, so both can run on one machine).
EMBEDDED_BROKER_PORT: Final = 1884
EMBEDDED_BROKER_URL: Final = f"mqtt://127.0.0.1:{EMBEDDED_BROKER_PORT}"
DEFAULT_DB_URL: Final = "sqlite:///twin.db"
DEFAULT_CLUSTER: Final = "demo"
# The shared HMAC secret of the command loop, when no --command-secret-file is given (never logged).
COMMAND_SECRET_ENV: Final = "TWIN_COMMAND_SECRET"


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT (the process then flushes and exits cleanly)."""
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("twin").info("signal %d: flushing and stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    from sensors.mqtt_url import parse_broker_url
    from twin.broker import EmbeddedBroker
    from twin.decode import DecoderSettings
    from twin.service import IngestService, ServiceSettings
    from twin.store.repository import Store

    _configure_logging(args.verbose)
    embedded: EmbeddedBroker | None = None
    mqtt_version = 4 if args.mqtt_version == "3.1.1" else 5
    if args.broker:
        broker_url = parse_broker_url(args.broker)
    else:
        embedded = EmbeddedBroker(port=args.embedded_port)
        embedded.start()
        broker_url = parse_broker_url(embedded.url)
        mqtt_version = 4  # amqtt speaks MQTT 3.1.1 only (twin.broker)
        out.write(f"embedded broker listening on {embedded.url} (MQTT 3.1.1, in memory)\n")
    settings = ServiceSettings(
        broker=broker_url,
        cluster=args.cluster,
        topic_root=args.topic_root,
        shared_group=args.shared_group,
        client_id=args.client_id,
        mqtt_version=mqtt_version,
        batch_max_messages=args.batch_messages,
        batch_max_delay_s=args.batch_delay_s,
        telemetry_interval_s=args.interval_s,
        decoder=DecoderSettings(topic_root=args.topic_root),
    )
    predictors = None
    if args.forecast_registry:
        from pathlib import Path

        from twin.forecasting import load_predictors
        from twin.model_registry import RegistryError

        try:
            predictors = load_predictors(Path(args.forecast_registry))
        except RegistryError as exc:
            sys.stderr.write(f"twin serve: --forecast-registry: {exc}\n")
            if embedded is not None:
                embedded.stop()
            return 2
    store = Store.open(args.db)
    service = IngestService(settings, store)
    out.write(
        f"twin serve: {broker_url.redacted()} → {_redact_db(args.db)}; "
        f"subscribed to {', '.join(settings.subscriptions())}\n"
    )
    out.flush()
    try:
        with stop_on_signals() as stop:
            if args.duration_s is not None:
                threading.Timer(args.duration_s, stop.set).start()
            forecaster = None
            if predictors is not None:
                from twin.forecasting import forecast_loop

                forecaster = threading.Thread(
                    target=forecast_loop,
                    args=(args.db, args.cluster, predictors, stop),
                    kwargs={"every_s": args.forecast_every_s},
                    name="twin-forecasts",
                    daemon=True,
                )
                forecaster.start()
                out.write(f"forecasts every {args.forecast_every_s:g} s from {args.forecast_registry}\n")
            service.run(stop)
            if forecaster is not None:
                forecaster.join(timeout=30.0)
    finally:
        store.close()
        if embedded is not None:
            embedded.stop()
    summary = service.stats.to_json()
    if args.stats_json:
        with open(args.stats_json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    out.write(json.dumps(summary) + "\n")
    return 0


def _redact_db(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def _hub(args: argparse.Namespace) -> Any:
    from sensors.contract import Topics
    from sensors.mqtt_url import parse_broker_url
    from sensors.publisher import PublisherHub, PublisherSettings

    settings = PublisherSettings(
        url=parse_broker_url(args.broker),
        topics=Topics(args.cluster, args.topic_root),
        client_id_prefix=args.client_id_prefix,
        buffer_limit=args.buffer_limit,
    )
    return PublisherHub(settings)


def _publish(source: Any, args: argparse.Namespace, out: TextIO, agent: Any = None) -> int:
    from sensors.runner import run_source

    _configure_logging(args.verbose)
    hub = _hub(args)
    out.write(
        f"twin sensors {source.name}: publishing to {hub.settings.url.redacted()} "
        f"cluster {args.cluster!r} every {args.interval_s} s\n"
    )
    out.flush()
    on_tick = None
    if agent is not None:
        agent.start()
        mode = "applying" if agent.processor.apply else "dry-run (verify and report only)"
        out.write(f"command agent: {mode}, listening on {len(agent.subscriptions)} command topic(s)\n")
        out.flush()

        def on_tick(_stats: Any) -> None:
            agent.process_pending()

    try:
        with stop_on_signals() as stop:
            stats = run_source(
                source, hub, args.interval_s, stop=stop, duration_s=args.duration_s, on_tick=on_tick
            )
    finally:
        if agent is not None:
            agent.close()
        source.close()
        hub.close(timeout_s=10.0)
    summary = {
        "source": source.name,
        "ticks": stats.ticks,
        "samples": stats.samples,
        "gpu_samples": stats.gpu_samples,
        "events": stats.events,
        "dropped": stats.dropped + hub.stats.dropped,
        "acked": hub.stats.acked,
        "unacked": hub.stats.unacked,
        "reconnects": hub.stats.reconnects,
    }
    if agent is not None:
        summary["commands"] = agent.stats.to_json()
    out.write(json.dumps(summary) + "\n")
    return 0


def read_command_secret(path: str | None, environ: Mapping[str, str] | None = None) -> Any:
    """The command secret (`sensors.commands.CommandSecret`) from `path`, else $TWIN_COMMAND_SECRET, else
    None. Raises `ContractError` (without the secret in its message) when it is unreadable or too short."""
    from sensors.commands import CommandSecret
    from sensors.errors import ContractError

    env = os.environ if environ is None else environ
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return CommandSecret.from_text(fh.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise ContractError(f"cannot read the command secret file {path}: {type(exc).__name__}") from None
    from_env = env.get(COMMAND_SECRET_ENV)
    return None if not from_env else CommandSecret.from_text(from_env)


def _command_agent(source: Any, args: argparse.Namespace) -> Any:
    """The command agent for a simulated or NVML source, or None when no command secret is configured."""
    from pathlib import Path

    from sensors.command_agent import (
        AgentSettings,
        CommandAgent,
        CommandProcessor,
        checkpoint_handler,
        nvml_power_cap_handler,
        simulated_power_cap_handler,
    )
    from sensors.commands import Action, CommandVerifier
    from sensors.contract import Topics
    from sensors.errors import ContractError
    from sensors.mqtt_url import parse_broker_url

    secret = read_command_secret(args.command_secret_file)
    if secret is None:
        if args.apply_commands:
            raise ContractError(
                f"--apply-commands needs a command secret (--command-secret-file or ${COMMAND_SECRET_ENV})."
            )
        return None
    marker_dir = Path(args.checkpoint_marker_dir) if args.checkpoint_marker_dir else None
    if source.name == "simulated":
        nodes = tuple(source.node_names)
        power = simulated_power_cap_handler(source)
    else:
        from sensors.nvml import NvmlPowerLimits

        nodes = (args.node or _hostname(),)  # the name NvmlSource publishes under (_nvml_source)
        limits = NvmlPowerLimits()
        power = nvml_power_cap_handler(limits)
    topics = Topics(args.cluster, args.topic_root)
    verifier = CommandVerifier(secret, cluster=args.cluster, nodes=nodes)
    handlers = {Action.POWER_CAP: power, Action.CHECKPOINT_NOW: checkpoint_handler(marker_dir)}
    processor = CommandProcessor(verifier, handlers, apply=args.apply_commands)
    agent = CommandAgent(AgentSettings(parse_broker_url(args.broker), topics, nodes), processor)
    if source.name != "simulated":
        agent.on_close.append(limits.close)
    return agent


def _nvml_source(args: argparse.Namespace) -> Any:
    from sensors.nvml import NvmlSource

    return NvmlSource(node=args.node or _hostname())


def _hostname() -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:64] or "node"


def _source_from_args(args: argparse.Namespace, out: TextIO) -> Any:
    kind = args.source_kind
    if kind == "nvml":
        return _nvml_source(args)
    if kind == "dcgm":
        from sensors.dcgm import DcgmExporterSource

        return DcgmExporterSource(url=args.url, node=args.node)
    if kind == "replay":
        from sensors.replay import ReplaySource

        return ReplaySource(args.file, speed=args.speed, keep_timestamps=args.keep_timestamps)
    if kind == "simulate":
        from twin.sim_source import simulated_cluster_from_args

        return simulated_cluster_from_args(args)
    if kind == "auto":
        from sensors.nvml import nvml_available

        ok, why = nvml_available()
        if ok:
            out.write("auto: NVML is available, using the nvml source\n")
            return _nvml_source(args)
        out.write(f"auto: NVML is not usable ({why}); using the simulated source\n")
        from twin.sim_source import simulated_cluster_from_args

        return simulated_cluster_from_args(args)
    raise ValueError(f"source(={kind!r}) is unknown.")


def cmd_sensors(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    from sensors.errors import SensorError

    try:
        source = _source_from_args(args, out)
    except SensorError as exc:
        sys.stderr.write(f"twin sensors {args.source_kind}: {exc}\n")
        return 2
    agent = None
    if getattr(args, "apply_commands", None) is not None and source.name in ("simulated", "nvml"):
        try:
            agent = _command_agent(source, args)
        except SensorError as exc:
            source.close()
            sys.stderr.write(f"twin sensors {args.source_kind}: {exc}\n")
            return 2
    return _publish(source, args, out, agent)


def cmd_record(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    from sensors.errors import SensorError
    from sensors.recording import record

    args.source_kind = args.source
    try:
        source = _source_from_args(args, out)
    except SensorError as exc:
        sys.stderr.write(f"twin sensors record: {exc}\n")
        return 2
    try:
        with stop_on_signals():
            written = record(source, args.out, duration_s=args.duration_s, interval_s=args.interval_s)
    finally:
        source.close()
    out.write(f"recorded {written} GPU samples from {source.name} to {args.out}\n")
    return 0


def _add_publish_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=os.environ.get("TWIN_BROKER", EMBEDDED_BROKER_URL),
        help="mqtt[s]://[user:pass@]host:port (default: $TWIN_BROKER or the embedded broker of `twin serve`)",
    )
    p.add_argument("--cluster", default=os.environ.get("TWIN_CLUSTER", DEFAULT_CLUSTER))
    p.add_argument("--interval-s", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this long (default: run)")
    p.add_argument("--topic-root", default="gpu-twin/v1")
    p.add_argument("--client-id-prefix", default="twin-sensor")
    p.add_argument("--buffer-limit", type=int, default=86_400, help="messages buffered per node offline")
    p.add_argument("--verbose", "-v", action="store_true")


def _add_simulate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--gpu", default="a100-sxm-80gb", help="GPU preset (twin presets)")
    p.add_argument("--scenario", help="scenario file whose model and layout the simulated job runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--failure-rate-scale", type=float, default=1.0, help="multiply failure rates")
    p.add_argument("--node-prefix", default="n")


def _add_command_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("commands from the twin (power cap, checkpoint now; see docs/feedback_loop.md)")
    g.add_argument(
        "--apply-commands",
        action="store_true",
        help="carry out verified commands (default: dry-run — verify, log and report what would be done); "
        "needs a command secret",
    )
    g.add_argument(
        "--command-secret-file",
        default=None,
        help=f"file holding the shared HMAC secret (default: ${COMMAND_SECRET_ENV}); without a secret "
        "commands are not listened to",
    )
    g.add_argument(
        "--checkpoint-marker-dir",
        default=None,
        help="write <job_id>.checkpoint-now.json here for the job to poll (default: only log the advisory)",
    )


def _add_source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=None, help="node name (default: this host's name)")
    p.add_argument("--url", default="http://localhost:9400/metrics", help="dcgm-exporter /metrics URL")


def register(sub: Any) -> None:
    """Add `serve` and `sensors` to the `twin` parser."""
    p = sub.add_parser("serve", help="ingest telemetry from MQTT into the live state and the store")
    p.add_argument("--broker", default=os.environ.get("TWIN_BROKER"), help="default: an embedded broker")
    p.add_argument("--embedded-port", type=int, default=EMBEDDED_BROKER_PORT)
    p.add_argument("--db", default=os.environ.get("TWIN_DB", DEFAULT_DB_URL))
    p.add_argument("--cluster", default=None, help="only this cluster (default: every cluster)")
    p.add_argument("--topic-root", default="gpu-twin/v1")
    p.add_argument("--shared-group", default=None, help="subscribe as $share/<group>/… (split the load)")
    p.add_argument("--client-id", default="twin-serve", help="fixed: the broker keeps this session")
    p.add_argument(
        "--mqtt-version",
        choices=("5", "3.1.1"),
        default="5",
        help="5 (default) sets its own in-flight window (Receive Maximum), so it works with any broker "
        "configuration; 3.1.1 costs ~20%% less CPU per message but relies on the broker's "
        "max_inflight_messages (deploy/mosquitto/mosquitto.conf: 10000; Mosquitto's default of 20 would "
        "let only 20 messages through per batch, since messages are acknowledged only after commit)",
    )
    p.add_argument(
        "--forecast-registry",
        default=None,
        help="model registry (twin models train): write power and GPU-risk forecasts periodically",
    )
    p.add_argument("--forecast-every-s", type=float, default=60.0, help="forecast period, s (default 60)")
    p.add_argument("--batch-messages", type=int, default=2_000)
    p.add_argument("--batch-delay-s", type=float, default=0.25)
    p.add_argument(
        "--interval-s", type=float, default=1.0, help="expected telemetry interval (stale after 3)"
    )
    p.add_argument("--duration-s", type=float, default=None)
    p.add_argument("--stats-json", default=None, help="write the final counters here")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=cmd_serve)

    sensors = sub.add_parser("sensors", help="publish telemetry from a source over MQTT")
    kinds = sensors.add_subparsers(dest="source_kind", required=True)
    for kind, help_text in (
        ("simulate", "a seeded simulated cluster running training jobs"),
        ("nvml", "this host's NVIDIA GPUs through NVML"),
        ("dcgm", "scrape a dcgm-exporter endpoint"),
        ("auto", "NVML if usable, else simulated (says which)"),
    ):
        k = kinds.add_parser(kind, help=help_text)
        _add_publish_flags(k)
        _add_source_flags(k)
        _add_simulate_flags(k)
        if kind in ("simulate", "nvml", "auto"):
            _add_command_flags(k)
        k.set_defaults(func=cmd_sensors)
    k = kinds.add_parser("replay", help="replay a recorded CSV or Parquet trace")
    k.add_argument("file")
    k.add_argument("--speed", type=float, default=1.0, help="1 = recorded pace, 10 = ten times faster")
    k.add_argument("--keep-timestamps", action="store_true", help="publish the recorded timestamps")
    _add_publish_flags(k)
    k.set_defaults(func=cmd_sensors)
    k = kinds.add_parser("record", help="record a source to CSV or Parquet (by suffix)")
    k.add_argument("source", choices=("simulate", "nvml", "dcgm", "auto"))
    k.add_argument("--out", required=True, help="file.csv or file.parquet")
    k.add_argument("--interval-s", type=float, default=1.0)
    k.add_argument("--duration-s", type=float, default=60.0)
    _add_source_flags(k)
    _add_simulate_flags(k)
    k.set_defaults(func=cmd_record)
