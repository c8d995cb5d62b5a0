"""The Prometheus text parser and the dcgm-exporter bridge, against a recorded-style /metrics sample."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sensors.contract import GpuReading
from sensors.dcgm import DcgmExporterSource, is_dcgm_blank, samples_from_exposition
from sensors.errors import SensorError, SensorUnavailable
from sensors.prometheus_text import parse_exposition
from sensors.source import Source

SAMPLE = Path(__file__).parent / "data" / "dcgm_exporter_metrics.txt"
MIB = 2**20
NOW = 1_700_000_000.0


# --- Prometheus text format -------------------------------------------------------------------------


def test_help_type_and_samples_in_order() -> None:
    text = (
        "# HELP http_requests_total The total\\\\number of \\n requests.\n"
        "# TYPE http_requests_total counter\n"
        '# a plain comment\n\nhttp_requests_total{method="post",code="200"} 1027 1395066363000\n'
        "up 1\n"
    )
    parsed = parse_exposition(text)
    assert parsed.help == {"http_requests_total": "The total\\number of \n requests."}
    assert parsed.types == {"http_requests_total": "counter"}
    first, second = parsed.samples
    assert (first.name, dict(first.labels), first.value, first.timestamp_ms, first.line) == (
        "http_requests_total",
        {"method": "post", "code": "200"},
        1027.0,
        1395066363000,
        5,
    )
    assert (second.name, dict(second.labels), second.value, second.timestamp_ms) == ("up", {}, 1.0, None)


def test_label_value_escapes() -> None:
    text = 'm{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} 1\n'
    (sample,) = parse_exposition(text).samples
    assert dict(sample.labels) == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb"}


def test_special_values_blanks_and_trailing_comma() -> None:
    text = 'a NaN\nb +Inf\nc -Inf\nd{x="1", y="2",} 1.5e3\n\te\t-0.25\t-7\n'
    values = {s.name: s for s in parse_exposition(text).samples}
    assert math.isnan(values["a"].value)
    assert values["b"].value == math.inf and values["c"].value == -math.inf
    assert values["d"].value == 1500.0 and dict(values["d"].labels) == {"x": "1", "y": "2"}
    assert (values["e"].value, values["e"].timestamp_ms) == (-0.25, -7)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("metric", "expected 'value"),
        ("metric 1_000", "is not a float"),
        ("metric 1 2 3", "expected 'value"),
        ("metric 1 1.5", "timestamp"),
        ('metric{a="1} 1', "unterminated"),
        ('metric{a="\\t"} 1', "invalid escape"),
        ('metric{a="1",a="2"} 1', "duplicate label"),
        ("metric{a=1} 1", "expected '\"'"),
        ('metric{a="1" b="2"} 1', "expected ','"),
        ('metric{1a="x"} 1', "label name"),
        ("9metric 1", "metric name"),
        ("metric-x 1", "after metric name"),
        ("# TYPE metric gauge\n# TYPE metric gauge", "second TYPE"),
        ("# TYPE metric thing", "metric type"),
    ],
)
def test_malformed_lines_name_their_line_number(line: str, why: str) -> None:
    text = "ok 1\n" + line + "\n"
    bad_line = 2 + line.count("\n")
    with pytest.raises(SensorError, match=f"line {bad_line}: .*{why}"):
        parse_exposition(text)


# --- mapping to the contract ------------------------------------------------------------------------


def test_dcgm_blank_sentinels() -> None:
    assert is_dcgm_blank(9223372036854775794.0)  # DCGM_INT64_NOT_SUPPORTED
    assert is_dcgm_blank(140737488355330.0)  # DCGM_FP64_NOT_SUPPORTED
    assert is_dcgm_blank(math.nan) and is_dcgm_blank(math.inf)
    assert not is_dcgm_blank(48213377415.0) and not is_dcgm_blank(0.0)


def test_recorded_sample_maps_field_by_field() -> None:
    (sample,) = samples_from_exposition(SAMPLE.read_text(), ts=NOW)
    assert (sample.node, sample.ts) == ("node-7", NOW)
    gpu0, gpu1 = sample.gpus
    assert gpu0 == GpuReading(
        index=0,
        uuid="GPU-5fd4f087-86f3-7a43-b711-4771313afc50",
        power_w=612.503,
        energy_j=48_213_377.415,
        gpu_util_pct=100.0,
        mem_util_pct=43.0,
        mem_used_bytes=78_495 * MIB,
        mem_total_bytes=(78_495 + 2_541 + 523) * MIB,  # no FB_TOTAL: used + free + reserved
        temp_c=61.0,
        sm_clock_mhz=1980.0,
        ecc_sbe_total=3,
        ecc_dbe_total=0,
        xid_last=0,
        throttle_reasons=4,  # DCGM_FI_DEV_CLOCKS_EVENT_REASONS, the newer name
    )
    assert gpu1 == GpuReading(
        index=1,
        uuid="GPU-9e2b7c61-0d4a-4c1e-8f3b-2a6d5e7f9c10",
        power_w=71.224,
        energy_j=9_120_554.21,
        gpu_util_pct=0.0,
        mem_util_pct=0.0,
        mem_used_bytes=1 * MIB,
        mem_total_bytes=81_559 * MIB,
        temp_c=29.0,
        sm_clock_mhz=345.0,
        ecc_sbe_total=None,  # DCGM_INT64_NOT_SUPPORTED in the sample
        ecc_dbe_total=None,
        xid_last=79,
        throttle_reasons=1,
    )
    assert all(isinstance(g.mem_used_bytes, int) and isinstance(g.power_w, float) for g in sample.gpus)


def test_given_node_overrides_hostname_label() -> None:
    (sample,) = samples_from_exposition(SAMPLE.read_text(), ts=NOW, node="rack3-n07")
    assert sample.node == "rack3-n07"


def test_fb_total_wins_and_older_throttle_name_is_accepted() -> None:
    text = (
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n1"} 300.5\n'
        'DCGM_FI_DEV_FB_USED{gpu="0",Hostname="n1"} 10\n'
        'DCGM_FI_DEV_FB_FREE{gpu="0",Hostname="n1"} 20\n'
        'DCGM_FI_DEV_FB_TOTAL{gpu="0",Hostname="n1"} 40\n'
        'DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="0",Hostname="n1"} 64\n'
        'DCGM_FI_DEV_POWER_USAGE{gpu="1",Hostname="n1"} 100\n'
        'DCGM_FI_DEV_FB_USED{gpu="1",Hostname="n1"} 10\n'
        'DCGM_FI_DEV_FB_FREE{gpu="1",Hostname="n1"} 20\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="1",Hostname="n1"} NaN\n'
    )
    (sample,) = samples_from_exposition(text, ts=NOW)
    gpu0, gpu1 = sample.gpus
    assert (gpu0.mem_total_bytes, gpu0.throttle_reasons, gpu0.uuid) == (40 * MIB, 64, None)
    assert gpu1.mem_total_bytes == 30 * MIB  # used + free, no reserved series
    assert gpu1.temp_c is None and gpu1.energy_j is None and gpu1.xid_last is None


def test_mig_instances_sum_framebuffer_and_whole_gpu_series_win() -> None:
    mig = 'gpu="0",UUID="GPU-a",Hostname="n1",GPU_I_PROFILE="3g.40gb",GPU_I_ID="{}"'
    text = (
        f"DCGM_FI_DEV_POWER_USAGE{{{mig.format(1)}}} 250\n"
        f"DCGM_FI_DEV_POWER_USAGE{{{mig.format(2)}}} 250\n"
        f"DCGM_FI_DEV_FB_USED{{{mig.format(1)}}} 1000\n"
        f"DCGM_FI_DEV_FB_USED{{{mig.format(2)}}} 500\n"
        f"DCGM_FI_DEV_FB_FREE{{{mig.format(1)}}} 100\n"
        f"DCGM_FI_DEV_FB_FREE{{{mig.format(2)}}} 200\n"
        f"DCGM_FI_DEV_GPU_TEMP{{{mig.format(1)}}} 50\n"
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",Hostname="n1"} 55\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="n1",pod="a"} 70\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="n1",pod="b"} 70\n'
    )
    ((gpu,),) = (s.gpus for s in samples_from_exposition(text, ts=NOW))
    assert gpu.power_w == 250.0
    assert gpu.mem_used_bytes == 1500 * MIB and gpu.mem_total_bytes == 1800 * MIB
    assert gpu.temp_c == 55.0 and gpu.gpu_util_pct == 70.0


def test_series_without_gpu_label_or_outside_the_contract_are_ignored() -> None:
    text = (
        'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n1"} 1\n'
        "DCGM_FI_DEV_COUNT 8\n"
        'DCGM_FI_DEV_PCIE_REPLAY_COUNTER{gpu="0",Hostname="n1"} 5\n'
        'go_goroutines{gpu="0",Hostname="n1"} 12\n'
    )
    ((gpu,),) = (s.gpus for s in samples_from_exposition(text, ts=NOW))
    assert gpu == GpuReading(index=0, power_w=1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="n1"} 50\n', "GPU 0 has no DCGM_FI_DEV_POWER_USAGE"),
        ('DCGM_FI_DEV_POWER_USAGE{gpu="0"} 50\n', "line 1: .*no Hostname label"),
        ('DCGM_FI_DEV_POWER_USAGE{gpu="x",Hostname="n1"} 50\n', "line 1: label gpu\\(='x'\\)"),
        ('DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="bad host"} 50\n', "node .*'bad host'"),
    ],
)
def test_unmappable_expositions_raise_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(SensorError, match=message):
        samples_from_exposition(text, ts=NOW)


# --- over HTTP --------------------------------------------------------------------------------------


@dataclass
class FakeExporter:
    url: str
    body: bytes
    status: int = 200


@pytest.fixture
def exporter() -> Iterator[FakeExporter]:
    state = FakeExporter(url="", body=SAMPLE.read_bytes())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_source_scrapes_the_exporter(exporter: FakeExporter) -> None:
    source = DcgmExporterSource(exporter.url, timeout_s=5.0)
    assert isinstance(source, Source) and source.name == "dcgm"
    source.probe()
    reading = source.read(NOW)
    (sample,) = reading.samples
    assert (sample.node, sample.ts, len(sample.gpus)) == ("node-7", NOW, 2)
    assert sample.gpus[0].power_w == 612.503 and sample.gpus[1].xid_last == 79
    assert reading.events == () and reading.silent_nodes == ()
    source.close()


def test_malformed_body_names_the_line(exporter: FakeExporter) -> None:
    exporter.body = b'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n1"} 1\nDCGM_FI_DEV_GPU_TEMP{gpu="0" 5\n'
    with pytest.raises(SensorError, match="line 2"):
        DcgmExporterSource(exporter.url).read(NOW)


def test_http_error_is_unavailable(exporter: FakeExporter) -> None:
    exporter.status = 503
    with pytest.raises(SensorUnavailable, match="HTTP 503"):
        DcgmExporterSource(exporter.url).read(NOW)


def test_unreachable_endpoint_raises_on_read_not_in_the_constructor() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = DcgmExporterSource(f"http://127.0.0.1:{port}/metrics", timeout_s=2.0)
    with pytest.raises(SensorUnavailable, match=f"127.0.0.1:{port}/metrics is unreachable"):
        source.read(NOW)
    with pytest.raises(SensorUnavailable):
        source.probe()


def test_constructor_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        DcgmExporterSource(timeout_s=0)
    with pytest.raises(ValueError, match="http"):
        DcgmExporterSource(f"file://{SAMPLE}")
    with pytest.raises(SensorError, match="node"):
        DcgmExporterSource(node="a/b")
