"""tegrastats parsing on recorded lines from several Jetson models, sampler, nvpmodel (CPU tier)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trt_edge.bench.tegrastats import (TegrastatsSampler, parse_line, parse_lines, parse_nvpmodel,
                                       summarize)
from trt_edge.errors import InvalidInputError, TrtEdgeError

DATA = Path(__file__).parent / "data" / "tegrastats_lines.txt"


def recorded() -> dict[str, str]:
    out = {}
    for ln in DATA.read_text().splitlines():
        if ln and not ln.startswith("#"):
            key, line = ln.split("\t", 1)
            out[key] = line
    return out


def test_jetson_nano_jetpack4_rails_without_units():
    s = parse_line(recorded()["nano_jp461"])
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (1923, 3964, 191, 1982)
    assert s.cpu_load_pct == [5, 4, 3, 6] and s.cpu_freq_mhz == [1224] * 4
    assert (s.gpu_load_pct, s.gpu_freq_mhz, s.emc_load_pct) == (0, 76, 0)
    assert s.rails_mw == {"POM_5V_IN": 1750, "POM_5V_GPU": 0, "POM_5V_CPU": 366}
    assert s.rails_avg_mw["POM_5V_IN"] == 1628
    assert s.power_source == "POM_5V_IN" and s.power_mw == 1750
    assert s.temperatures_c["GPU"] == 40.0 and s.temperatures_c["thermal"] == 40.0
    assert "IRAM" not in s.rails_mw and "RAM" not in s.rails_mw


def test_agx_orin_jetpack7_timestamp_gpc_array_and_mw_rails():
    s = parse_line(recorded()["agx_orin_jp7"])
    assert s.timestamp is not None and (s.timestamp.year, s.timestamp.hour) == (2026, 9)
    assert len(s.cpu_load_pct) == 12 and s.cpu_load_pct[8] == 33
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (12, 1300)
    assert s.rails_mw == {"VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268, "VIN_SYS_5V0": 5500}
    assert s.power_source == "sum of rails" and s.power_mw == 5139 + 3268 + 5500
    assert s.temperatures_c["gpu"] == pytest.approx(47.625)


def test_agx_xavier_and_thor_and_idle_orin():
    lines = recorded()
    x = parse_line(lines["agx_xavier"])
    assert x.rails_mw == {"GPU": 120, "CPU": 468, "SOC": 937, "CV": 0, "VDDRQ": 312, "SYS5V": 1458}
    assert x.power_mw == 3295 and x.gpu_load_pct == 12 and x.cpu_load_pct == [0, 1]
    t = parse_line(lines["thor"])
    assert t.gpu_load_pct is None and t.gpu_freq_mhz == 1000 and t.power_mw is None
    o = parse_line(lines["orin_idle"])
    assert o.ram_used_mb == 2847 and o.gpu_load_pct == 0 and o.rails_mw == {}
    assert o.cpu_load_pct[-1] == 0 and o.cpu_freq_mhz[-1] == 729


def test_off_cores_and_garbage():
    s = parse_line("RAM 100/200MB CPU [10%@102,off,off,3%@102] VDD_IN 4886mW/4886mW VDD_CPU_GPU_CV 502mW/502mW")
    assert s.cpu_load_pct == [10, None, None, 3] and s.power_source == "VDD_IN" and s.power_mw == 4886
    with pytest.raises(InvalidInputError):
        parse_line("hello world")
    assert len(parse_lines(["", "garbage", recorded()["thor"]])) == 1


def test_summarize_energy_is_the_integral_of_power():
    samples = parse_lines([recorded()["nano_jp461"]] * 3)
    for i, s in enumerate(samples):
        s.received_s = float(i) * 0.5
    r = summarize(samples)
    assert r["power_mean_w"] == pytest.approx(1.75) and r["energy_j"] == pytest.approx(1.75 * 1.0)
    assert r["ram_peak_mb"] == 1923 and r["power_source"] == "POM_5V_IN" and r["samples"] == 3
    assert summarize([]) == {"samples": 0}


def test_sampler_reads_a_live_process(tmp_path):
    # A real subprocess replays the recorded lines like tegrastats does.
    script = tmp_path / "fake_tegrastats.py"
    script.write_text("import sys, time\n"
                      f"lines = open({str(DATA)!r}).read().splitlines()\n"
                      "for ln in lines:\n"
                      "    if ln and not ln.startswith('#'):\n"
                      "        print(ln.split('\\t', 1)[1], flush=True); time.sleep(0.01)\n"
                      "time.sleep(30)\n")
    sampler = TegrastatsSampler(10, command=[sys.executable, str(script)])
    with sampler:
        import time
        deadline = time.monotonic() + 30  # generous: the CI machine may be loaded
        while len(sampler.samples) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(sampler.samples) == 5
    assert sampler.summary()["ram_peak_mb"] == 20642
    sampler.close()  # safe twice
    with pytest.raises(TrtEdgeError, match="only on Jetson"):
        TegrastatsSampler(100, command=["definitely-not-tegrastats"]).start()


def test_nvpmodel_output():
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2") == {"name": "15W", "id": 2}
    with pytest.raises(InvalidInputError):
        parse_nvpmodel("nothing")
