"""The `twin` command line (twin.cli): whatif input forms and per-scenario errors, sweep, presets,
seed-report, validate, and a cold start that does not import the dashboard's heavy libraries."""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from twin.cli import main
from twin.scenario import evaluate
from twin.validate import default_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def scenario(
    model: str = "llama3-8b", gpus: int = 8, global_batch: int = 64, **layout: Any
) -> dict[str, Any]:
    return {
        "model": {"preset": model},
        "cluster": {"gpu": "h100-sxm", "gpus": gpus, "price_per_gpu_hour": 2.0},
        "layout": {"tp": 2, **layout},
        "training": {"seq_len": 4096, "global_batch": global_batch, "tokens": 1e11},
    }


# Three distinct, valid scenarios (told apart by model and GPU count) and one invalid one.
THREE = [scenario("llama3-8b", 8), scenario("llama2-7b", 16), scenario("gpt3-1.3b", 32)]
BAD = scenario("llama3-8b", 24, tp=3)  # tp 3 divides 24 GPUs but not 32 heads


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, out=out, stdin=io.StringIO(stdin))
    return code, out.getvalue()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert all(line.strip() for line in lines)
    return [json.loads(line) for line in lines]


def identity(result: dict[str, Any]) -> tuple[str, int]:
    return result["resolved"]["model"]["name"], result["resolved"]["gpus"]


# --- whatif ----------------------------------------------------------------------------------------


def test_whatif_json_single_object_prints_one_result_line() -> None:
    code, out = run_cli(["whatif", "--json", "-"], json.dumps(THREE[0], indent=2))
    assert code == 0
    [result] = json_lines(out)
    assert result == json.loads(json.dumps(evaluate(THREE[0])))
    assert identity(result) == ("llama3-8b", 8)


def test_whatif_json_array_prints_one_line_per_scenario_in_order() -> None:
    code, out = run_cli(["whatif", "--json", "-"], json.dumps(THREE))
    assert code == 0
    results = json_lines(out)
    assert [identity(r) for r in results] == [("llama3-8b", 8), ("llama2-7b", 16), ("gpt3-1.3b", 32)]
    for result, source in zip(results, THREE, strict=True):
        assert result["step_time_s"] == evaluate(source)["step_time_s"]


def test_whatif_json_lines_prints_one_line_per_scenario_in_order() -> None:
    text = "\n".join(json.dumps(s) for s in THREE) + "\n"
    code, out = run_cli(["whatif", "--json", "-"], text)
    assert code == 0
    assert [identity(r) for r in json_lines(out)] == [("llama3-8b", 8), ("llama2-7b", 16), ("gpt3-1.3b", 32)]


@pytest.mark.parametrize("form", ["array", "lines"])
def test_whatif_bad_scenario_in_the_middle_reports_error_on_its_line_only(form: str) -> None:
    items = [THREE[0], BAD, THREE[2]]
    text = json.dumps(items) if form == "array" else "\n".join(json.dumps(s) for s in items)
    code, out = run_cli(["whatif", "--json", "-"], text)
    assert code == 0  # some scenarios succeeded
    first, middle, last = json_lines(out)
    assert middle == {"error": "layout.tp(=3) must divide model.heads(=32)."}
    assert identity(first) == ("llama3-8b", 8) and "fits" in first
    assert identity(last) == ("gpt3-1.3b", 32) and "fits" in last


def test_whatif_invalid_json_line_names_the_line() -> None:
    text = json.dumps(THREE[0]) + "\n{not json\n" + json.dumps(THREE[2]) + "\n"
    code, out = run_cli(["whatif", "--json", "-"], text)
    assert code == 0
    first, middle, last = json_lines(out)
    assert set(middle) == {"error"}
    assert middle["error"].startswith("line 2: invalid JSON")
    assert identity(first) == ("llama3-8b", 8)
    assert identity(last) == ("gpt3-1.3b", 32)


def test_whatif_invalid_json_line_number_counts_leading_blank_lines() -> None:
    text = "\n\n" + json.dumps(THREE[0]) + "\n{not json\n"
    _, out = run_cli(["whatif", "--json", "-"], text)
    assert json_lines(out)[1]["error"].startswith("line 4: invalid JSON")


def test_whatif_shortcut_into_a_non_object_section_is_an_error_line() -> None:
    broken = copy.deepcopy(THREE[0])
    broken["cluster"] = 5
    code, out = run_cli(["whatif", "--json", "-", "--gpus", "8"], json.dumps(broken))
    assert code == 1
    assert "cluster" in json_lines(out)[0]["error"]


def test_whatif_non_object_item_is_an_error_line() -> None:
    code, out = run_cli(["whatif", "--json", "-"], json.dumps([THREE[0], 5]))
    assert code == 0
    assert json_lines(out)[1] == {"error": "a scenario must be an object, got int"}


def test_whatif_exits_1_when_every_scenario_fails() -> None:
    code, out = run_cli(["whatif", "--json", "-"], json.dumps([BAD, BAD]))
    assert code == 1
    assert [set(r) for r in json_lines(out)] == [{"error"}, {"error"}]


def test_whatif_empty_input_is_an_error() -> None:
    code, out = run_cli(["whatif", "--json", "-"], "  \n")
    assert code == 1
    assert json_lines(out) == [{"error": "no scenario given (empty input)"}]


def test_whatif_without_file_or_shortcuts_is_a_usage_error() -> None:
    assert run_cli(["whatif", "--json"]) == (2, "")


SHORTCUT_ARGS = ["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "4096"]


def test_whatif_shortcuts_build_a_scenario_without_a_file() -> None:
    code, out = run_cli(["whatif", "--json", *SHORTCUT_ARGS, "--global-batch", "64"])
    assert code == 0
    [result] = json_lines(out)
    expected = {
        "model": {"preset": "llama3-8b"},
        "cluster": {"gpu": "h100-sxm", "gpus": 8},
        "training": {"seq_len": 4096, "global_batch": 64},
    }
    assert result == json.loads(json.dumps(evaluate(expected)))
    assert result["resolved"]["layout"]["dp"] == 8


def test_whatif_shortcuts_override_the_file() -> None:
    base = copy.deepcopy(THREE[0])
    code, out = run_cli(
        ["whatif", "--json", "-", "--gpus", "16", "--tp", "4", "--model", "llama2-7b"], json.dumps(base)
    )
    assert code == 0
    [result] = json_lines(out)
    assert identity(result) == ("llama2-7b", 16)
    assert result["resolved"]["layout"]["tp"] == 4
    assert result["resolved"]["layout"]["dp"] == 4


def test_whatif_readable_output_says_whether_it_fits() -> None:
    code, out = run_cli(["whatif", *SHORTCUT_ARGS, "--global-batch", "64", "--tp", "2"])
    assert code == 0
    assert "llama3-8b" in out
    assert "fits: yes" in out
    assert "GiB" in out


def test_whatif_readable_output_gives_the_reason_when_it_does_not_fit() -> None:
    code, out = run_cli(
        [
            *("whatif", "--model", "llama3-70b", "--gpu", "a100-sxm-40gb", "--gpus", "8"),
            *("--seq-len", "4096", "--global-batch", "64", "--zero-stage", "0"),
        ]
    )
    assert code == 0
    assert "fits: NO — HBM needs" in out


def test_whatif_readable_output_prints_errors() -> None:
    code, out = run_cli(["whatif", "-"], json.dumps(BAD))
    assert code == 1
    assert out == "error: layout.tp(=3) must divide model.heads(=32).\n"


def test_whatif_reads_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(
        '[model]\npreset = "llama3-8b"\n\n[cluster]\ngpu = "h100-sxm"\ngpus = 8\nprice_per_gpu_hour = 2.0\n\n'
        "[layout]\ntp = 2\n\n[training]\nseq_len = 4096\nglobal_batch = 64\ntokens = 1e11\n",
        encoding="utf-8",
    )
    code, out = run_cli(["whatif", "--json", str(path)])
    assert code == 0
    assert json_lines(out) == [json.loads(json.dumps(evaluate(THREE[0])))]


def test_whatif_missing_file_is_an_error_line(tmp_path: Path) -> None:
    code, out = run_cli(["whatif", "--json", str(tmp_path / "nope.json")])
    assert code == 1
    [line] = json_lines(out)
    assert line["error"].startswith(f"cannot read {tmp_path / 'nope.json'}")


# --- presets, seed-report --------------------------------------------------------------------------


def test_presets_lists_gpus_and_models() -> None:
    code, out = run_cli(["presets"])
    assert code == 0
    assert "h100-sxm" in out
    assert "llama3.1-405b" in out


def test_presets_json_parses_with_datasheet_numbers() -> None:
    code, out = run_cli(["presets", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["gpus"]["h100-sxm"]["bf16_tflops"] == 989.4
    assert data["gpus"]["a100-sxm-40gb"]["fp8_tflops"] is None
    assert data["models"]["llama3.1-405b"]["layers"] == 126
    assert data["models"]["llama3.1-405b"]["params"] == pytest.approx(405e9, rel=0.01)


def test_seed_report_json_has_published_and_twin_figures() -> None:
    code, out = run_cli(["seed-report", "--json"])
    assert code == 0
    data = json.loads(out)
    assert "published" in data
    assert "twin" in data


# --- sweep -----------------------------------------------------------------------------------------


def test_sweep_json_top_5_returns_ranked_layouts_and_a_summary() -> None:
    code, out = run_cli(["sweep", "-", "--json", "--top", "5"], json.dumps(scenario("llama2-7b", 16, 256)))
    assert code == 0
    data = json.loads(out)
    rows = data["layouts"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    summary = data["summary"]
    assert summary["rank_by"] == "time"
    assert summary["enumerated"] >= summary["valid"] >= summary["fitting"] >= 5
    assert all(r["fits"] for r in rows)
    times = [r["time_to_train_s"] for r in rows]
    assert times == sorted(times)
    for row in rows:
        lay = row["layout"]
        assert lay["tp"] * lay["pp"] * lay["cp"] * lay["dp"] == 16
        assert row["cost"] == pytest.approx(2.0 * 16 * row["time_to_train_s"] / 3600)


def test_sweep_rank_by_cost_and_fits_only_flags() -> None:
    code, out = run_cli(
        ["sweep", "-", "--json", "--top", "4", "--rank-by", "cost", "--fits-only"],
        json.dumps(scenario("llama2-7b", 16, 256)),
    )
    assert code == 0
    data = json.loads(out)
    assert data["summary"]["rank_by"] == "cost"
    costs = [r["cost"] for r in data["layouts"]]
    assert len(costs) == 4 and costs == sorted(costs)


def test_sweep_readable_output_is_a_table() -> None:
    code, out = run_cli(["sweep", "-", "--top", "3"], json.dumps(scenario("llama2-7b", 16, 256)))
    assert code == 0
    lines = out.splitlines()
    assert "layouts enumerated" in lines[0] and "ranked by time" in lines[0]
    assert lines[1].split()[:5] == ["#", "TP", "PP", "CP", "DP"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"]


def test_sweep_takes_exactly_one_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(["sweep", "-", "--json"], json.dumps(THREE))
    assert (code, out) == (2, "")
    assert "exactly one scenario" in capsys.readouterr().err


def test_sweep_invalid_scenario_reports_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    bad = scenario()
    bad["cluster"]["gpus"] = 0
    code, out = run_cli(["sweep", "-", "--json"], json.dumps(bad))
    assert (code, out) == (2, "")
    assert "cluster.gpus(=0)" in capsys.readouterr().err


# --- validate --------------------------------------------------------------------------------------

# Rows copied verbatim from ../shared/calibration (BOM and CRLF line endings kept):
# vtrain_a100_single_node.csv rows 1-3 and vtrain_a100_multi_node.csv rows 1-2 (VIA-Research/vTrain
# data/ground_truth_*.csv), and two rows of simumax_b200_summary.json (MooreThreads/SimuMax) reduced to
# the fields `twin.validate.load_simumax` reads.
VTRAIN_SINGLE = (
    b"\xef\xbb\xbf# GPUs,global batch,micro batch,hidden size,attention heads,# layers,sequence length,"
    b"tensor parallelism,data parallelism,pipeline parallelism,iteration time (ms)\r\n"
    b"2,16,8,1024,16,24,1024,1,1,2,372.160408\r\n"
    b"8,32,4,1024,16,24,1024,2,2,2,219.732754\r\n"
    b"4,16,4,2048,16,24,1024,1,2,2,410.490577\r\n"
)
VTRAIN_MULTI = (
    b"\xef\xbb\xbfParameters (billion),# GPUs,global batch,micro batch,hidden size,attention heads,"
    b"# layers,sequence length,tensor parallelism,data parallelism,pipeline parallelism,"
    b"iteration time (ms)\r\n"
    b"3.6,64,512,8,3072,32,30,2048,1,64,1,3566.5\r\n"
    b"3.6,64,512,4,3072,32,30,2048,1,64,1,3638.3\r\n"
)
SIMUMAX_ROWS = [
    {
        "case": "llama3_70b_l12_tp4_pp1_dp2_mbc4_cef",
        "model": "llama3-70b",
        "layer_num": 12,
        "mbc": 4,
        "real_ms": 409.8,
        "real_alloc_gib": 39.07,
        "status": "ok",
    },
    {
        "case": "llama3_70b_l12_tp4_pp1_dp2_mbc8_cef",
        "model": "llama3-70b",
        "layer_num": 12,
        "mbc": 8,
        "real_ms": 765.6,
        "real_alloc_gib": 39.07,
        "status": "ok",
    },
]


@pytest.fixture
def tiny_calibration(tmp_path: Path) -> Path:
    (tmp_path / "vtrain_a100_single_node.csv").write_bytes(VTRAIN_SINGLE)
    (tmp_path / "vtrain_a100_multi_node.csv").write_bytes(VTRAIN_MULTI)
    (tmp_path / "simumax_b200_summary.json").write_text(json.dumps({"rows": SIMUMAX_ROWS}), encoding="utf-8")
    return tmp_path


def summary_by_key(data: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(s["dataset"], s["split"], s["metric"]): s for s in data["summary"]}


def test_validate_json_on_a_tiny_extract(tiny_calibration: Path) -> None:
    code, out = run_cli(["validate", "--json", "--data", str(tiny_calibration)])
    assert code == 0
    data = json.loads(out)
    rows = data["rows"]
    assert [(r["dataset"], r["case"], r["split"]) for r in rows] == [
        ("vtrain-a100", "vtrain_a100_single_node#1", "fit"),
        ("vtrain-a100", "vtrain_a100_single_node#2", "fit"),
        ("vtrain-a100", "vtrain_a100_single_node#3", "fit"),
        ("vtrain-a100", "vtrain_a100_multi_node#1", "report"),
        ("vtrain-a100", "vtrain_a100_multi_node#2", "report"),
        ("simumax-b200", "llama3_70b_l12_tp4_pp1_dp2_mbc4_cef", "fit"),
        ("simumax-b200", "llama3_70b_l12_tp4_pp1_dp2_mbc8_cef", "report"),
    ]
    measured = [r["measured_step_s"] for r in rows]
    assert measured == pytest.approx([0.372160408, 0.219732754, 0.410490577, 3.5665, 3.6383, 0.4098, 0.7656])
    for r in rows:
        assert r["step_error_pct"] == pytest.approx(
            100 * (r["predicted_step_s"] - r["measured_step_s"]) / r["measured_step_s"]
        )
        assert abs(r["step_error_pct"]) < 30  # every extract row is predicted within 30 %
        if r["dataset"] == "vtrain-a100":
            assert r["measured_memory_bytes"] is None and r["memory_error_pct"] is None
        else:
            assert r["measured_memory_bytes"] == pytest.approx(39.07 * GIB)
            assert abs(r["memory_error_pct"]) < 10

    summary = summary_by_key(data)
    assert set(summary) == {
        ("vtrain-a100", "fit", "step_time"),
        ("vtrain-a100", "report", "step_time"),
        ("simumax-b200", "fit", "step_time"),
        ("simumax-b200", "fit", "peak_memory"),
        ("simumax-b200", "report", "step_time"),
        ("simumax-b200", "report", "peak_memory"),
    }
    assert summary["vtrain-a100", "fit", "step_time"]["n"] == 3
    assert summary["vtrain-a100", "report", "step_time"]["n"] == 2
    report_errors = [r["step_error_pct"] for r in rows[3:5]]
    report = summary["vtrain-a100", "report", "step_time"]
    assert report["mape_pct"] == pytest.approx(sum(abs(e) for e in report_errors) / 2)
    assert report["mean_error_pct"] == pytest.approx(sum(report_errors) / 2)
    assert report["max_abs_error_pct"] == pytest.approx(max(abs(e) for e in report_errors))


def test_validate_readable_output_on_a_tiny_extract(tiny_calibration: Path) -> None:
    code, out = run_cli(["validate", "--rows", "--data", str(tiny_calibration)])
    assert code == 0
    assert "vtrain_a100_multi_node#2" in out
    assert "MAPE %" in out


def test_validate_missing_data_dir_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["validate", "--json", "--data", str(tmp_path / "absent")])
    assert (code, out) == (2, "")
    assert "calibration data not found" in capsys.readouterr().err


@pytest.mark.skipif(not default_data_dir().is_dir(), reason="../shared/calibration not present")
def test_validate_on_the_shared_calibration_data_meets_accuracy_targets() -> None:
    code, out = run_cli(["validate", "--json"])
    assert code == 0
    summary = summary_by_key(json.loads(out))
    assert summary["vtrain-a100", "report", "step_time"]["mape_pct"] <= 10
    for split in ("fit", "report"):
        assert summary["simumax-b200", split, "step_time"]["mape_pct"] <= 10
        assert summary["simumax-b200", split, "peak_memory"]["mape_pct"] <= 5
    assert all(math.isfinite(s["mape_pct"]) for s in summary.values())


# --- cold start ------------------------------------------------------------------------------------


def test_python_m_twin_cli_whatif_works_without_importing_dashboard_libraries() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "twin.cli", "whatif", "--json", "-"],
        input=json.dumps(THREE[0]),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    [result] = json_lines(proc.stdout)
    assert identity(result) == ("llama3-8b", 8)
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert {"twin", "numpy"} <= imported  # the import log was read
    assert not imported & {"pandas", "sklearn", "streamlit"}
