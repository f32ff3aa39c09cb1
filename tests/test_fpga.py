"""The serial shell and the FPGA flows (yosys, nextpnr-ice40) on a tiny hand-made network."""

import shutil
import subprocess

import numpy as np
import pytest

from dwn_train import DWNError
from dwn_train.export import fpga, verilog
from dwn_train.export.freeze import FrozenLayer, FrozenNetwork, InputFormat


def _tiny(seed: int = 0) -> FrozenNetwork:
    """3 features x 2 thermometer bits -> 8 LUT-2 -> 6 LUT-3 -> 3 classes of 2 bits."""
    rng = np.random.default_rng(seed)
    first = FrozenLayer(rng.integers(0, 6, (8, 2)), rng.integers(0, 2, (8, 4)).astype(np.uint8))
    second = FrozenLayer(rng.integers(0, 8, (6, 3)), rng.integers(0, 2, (6, 8)).astype(np.uint8))
    thresholds = np.array([[60, 180], [100, 140], [30, 220]])
    return FrozenNetwork(InputFormat(8, 0, False), 3, thresholds, [first, second], 3)


def _shell_testbench(q: np.ndarray, latency: int) -> str:
    feed = []
    for row in q:
        for value in row:
            feed.append(f"    din = 8'd{int(value)}; din_valid = 1; @(posedge clk); #1;")
        feed.append("    din_valid = 0; @(posedge clk); #1;")  # a gap between samples, as a board may leave
    return f"""`timescale 1ns/1ps
module shell_tb;
  reg clk = 0, rst = 1, din_valid = 0;
  reg [7:0] din = 0;
  wire [1:0] class_out;
  wire class_valid;
  always #5 clk = ~clk;
  dwn_shell #(.FEATURES(3), .BITS(8), .CLASS_BITS(2), .LATENCY({latency})) dut (
    .clk(clk), .rst(rst), .din(din), .din_valid(din_valid), .class_out(class_out), .class_valid(class_valid));
  always @(posedge clk) if (class_valid) $display("class %0d", class_out);
  initial begin
    @(posedge clk); #1; rst = 0;
{chr(10).join(feed)}
    repeat ({latency + 4}) @(posedge clk);
    $finish;
  end
endmodule
"""


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", verilog.PIPELINES)
def test_the_serial_shell_feeds_the_core_and_reports_every_class(pipeline, tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed")
    net = _tiny()
    q = np.random.default_rng(1).integers(0, 256, size=(12, 3))
    verilog.write(net, tmp_path, q, pipeline=pipeline)
    fpga.write_shell(tmp_path)
    (tmp_path / "shell_tb.v").write_text(_shell_testbench(q, verilog.design(net, pipeline).latency))
    subprocess.run(["iverilog", "-g2001", "-o", "shell_sim", "shell_tb.v", "dwn_shell.v", "dwn_top.v"], cwd=tmp_path,
                   check=True)
    out = subprocess.run(["vvp", "-n", "shell_sim"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    got = [int(line.split()[1]) for line in out.splitlines() if line.startswith("class ")]
    assert got == net.predict(q).tolist()


@pytest.mark.slow
def test_ice40_and_xilinx_flows_report_cells_and_fmax(tmp_path):
    for tool in ("yosys", "nextpnr-ice40"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    net = _tiny()
    verilog.write(net, tmp_path, np.zeros((1, 3), dtype=np.int64), pipeline="layers")
    numbers = fpga.ice40(tmp_path, net, latency=2, device="hx1k")
    assert numbers["lut4"] >= numbers["lut4_core"] > 0
    assert numbers["ff"] >= 3 * 8 + 2 and numbers["ff_core"] > 0  # the shift register; the core's stages
    assert numbers["fmax_mhz"] > 10 and (tmp_path / "dwn_shell_hx1k.asc").stat().st_size > 1000
    counts = fpga.xilinx(tmp_path)
    assert counts["lut6"] > 0 and counts["ff"] == numbers["ff_core"]


@pytest.mark.slow
def test_a_design_too_large_for_the_device_is_one_sentence(tmp_path, monkeypatch):
    if shutil.which("yosys") is None or shutil.which("nextpnr-ice40") is None:
        pytest.skip("yosys or nextpnr-ice40 is not installed")
    net = _tiny()
    verilog.write(net, tmp_path, np.zeros((1, 3), dtype=np.int64))
    monkeypatch.setitem(fpga.ICE40, "hx1k", ("tq144", 3))
    with pytest.raises(DWNError, match=r"the design needs \d+ LUT4s; the iCE40 hx1k has 3 \(the largest, hx8k, has 7680\)"):
        fpga.ice40(tmp_path, net, latency=0, device="hx1k")


def test_pipeline_full_counts_its_stages():
    net = _tiny()  # 3 classes of 2 bits: one chunk per popcount (1 stage), a tournament of 2 rounds
    assert [verilog.design(net, p).latency for p in verilog.PIPELINES] == [0, 2, 1 + 2 + 1 + 2]
    with pytest.raises(DWNError, match="pipeline must be one of none, layers, full"):
        verilog.design(net, "deep")


def test_a_seed_that_does_not_route_in_time_gives_way_to_the_next(tmp_path, monkeypatch):
    """nextpnr's router can loop on one seed: each seed gets fpga_timeout seconds, the next is tried,
    and when none finishes the export ends with one sentence (no traceback, no hang)."""
    from dwn_train.errors import RunError

    calls = []

    def fake_run(command, what, timeout=None, **kwargs):
        seed = int(command[command.index("--seed") + 1])
        calls.append((seed, timeout))
        if seed in slow:
            raise subprocess.TimeoutExpired(command, timeout)
        log = "Info: Max frequency for clock 'clk$glb': 101.5 MHz (PASS at 12.00 MHz)\n"
        return subprocess.CompletedProcess(command, 0, stdout="", stderr=log)

    monkeypatch.setattr(fpga, "run_tool", fake_run)
    slow = {1}
    route = lambda: fpga._place_and_route("ice40", ["--seedless-args"], "hx8k", tmp_path / "x.asc", 7)  # noqa: E731
    assert route() == (101.5, 2)
    assert calls == [(1, 7), (2, 7)]
    slow = set(fpga.SEEDS)
    with pytest.raises(RunError, match=r"did not finish placing and routing on hx8k within fpga_timeout=7 s with any "
                                       r"of seeds 1, 2, 3: raise fpga_timeout"):
        route()


@pytest.mark.parametrize("pipeline", ["none", "layers"])
def test_the_vivado_script_names_the_files_top_module_and_ports_the_export_has(tmp_path, pipeline):
    """We cannot run Vivado here: the script must at least read files that exist, synthesise the
    module they define, and constrain ports it has."""
    import re

    verilog.write(_tiny(), tmp_path, np.zeros((1, 3), dtype=np.int64), pipeline=pipeline)
    script = fpga.write_vivado(tmp_path).read_text()
    read = re.findall(r"read_verilog \[file join \$here (\S+)\]", script)
    assert read == ["dwn_top.v"] and all((tmp_path / name).is_file() for name in read)
    source = "".join((tmp_path / name).read_text() for name in read)
    top = re.search(r"synth_design -top (\w+) -part \$part -mode out_of_context", script).group(1)
    assert re.search(rf"^module {top}\b", source, re.M)
    ports = set(re.findall(r"^\s*(?:input|output)\s+(?:wire|reg)?\s*(?:\[[^]]*\])?\s*(\w+)", source, re.M))
    assert {"clk", "x", "class_id"} <= ports and "get_ports clk" in script
    for report in ("report_utilization -file", "report_timing_summary -file", "route_design"):
        assert report in script


def test_a_long_tool_run_says_it_is_still_running_and_a_timeout_ends_it(monkeypatch, caplog):
    import logging
    import time

    monkeypatch.setattr(fpga, "HEARTBEAT", 0.2)
    with caplog.at_level(logging.INFO, logger="dwn_train"):
        done = fpga.run_tool(["sh", "-c", "sleep 0.7; echo routed"], "a slow tool")
    assert done.returncode == 0 and done.stdout.strip() == "routed"
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "a slow tool ..." and lines[-1].startswith("a slow tool: done in ")
    assert sum("a slow tool still running: " in line for line in lines) >= 2
    start = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        fpga.run_tool(["sleep", "30"], "a stuck tool", timeout=0.5)
    assert time.perf_counter() - start < 5  # killed at its timeout, not waited for


def test_a_yosys_count_asked_for_without_yosys_is_refused_before_any_work(monkeypatch):
    from omegaconf import OmegaConf

    from dwn_train.config import ExportConfig
    from dwn_train.validate import check_export

    cfg = OmegaConf.merge(OmegaConf.structured(ExportConfig), {"checkpoint": "x.pt", "format": "verilog", "yosys": True})
    monkeypatch.setattr(fpga.shutil, "which", lambda tool: None)
    with pytest.raises(DWNError, match=r"yosys=true needs yosys on the PATH \(apt-get install yosys\)"):
        check_export(cfg)
    check_export(OmegaConf.merge(cfg, {"yosys": False}))  # not asked for: nothing needed


def test_the_three_parts_chained_are_the_network(tmp_path):
    """verilog.parts cuts the design for the cost report's split: encoder -> LUT layers -> head,
    simulated in a chain, classify as the frozen network does."""
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed")
    net = _tiny(3)
    q = np.random.default_rng(2).integers(0, 256, size=(40, 3))
    for part, text in verilog.parts(net).items():
        (tmp_path / f"{part}.v").write_text(text)
    feed = "\n".join(f"    x = {{8'd{int(c)}, 8'd{int(b)}, 8'd{int(a)}}}; #1; $display(\"class %0d\", class_id);"
                     for a, b, c in q)
    (tmp_path / "chain_tb.v").write_text(f"""module chain_tb;
  reg [23:0] x;
  wire [5:0] e;
  wire [5:0] y;
  wire [1:0] class_id;
  wire [5:0] scores;
  dwn_encoder encoder (.x(x), .e(e));
  dwn_luts luts (.e(e), .y(y));
  dwn_head head (.y(y), .class_id(class_id), .scores(scores));
  initial begin
{feed}
  end
endmodule
""")
    subprocess.run(["iverilog", "-g2001", "-o", "chain", "chain_tb.v", "encoder.v", "luts.v", "head.v"], cwd=tmp_path,
                   check=True)
    out = subprocess.run(["vvp", "-n", "chain"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert [int(line.split()[1]) for line in out.splitlines() if line.startswith("class ")] == net.predict(q).tolist()


@pytest.mark.slow
def test_the_cost_split_counts_each_part_by_each_flow():
    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed")
    net = _tiny(3)
    for unit in ("lut6", "lut4"):
        found = fpga.by_part(net, unit)
        assert set(found) == {f"{unit}_encoder", f"{unit}_luts", f"{unit}_head"}
        assert all(count > 0 for count in found.values()), found
    assert "encoder" in fpga.parts_text(fpga.by_part(net, "lut6"), "lut6", "LUT6")


@pytest.mark.slow
def test_ecp5_places_and_routes_with_the_system_or_the_packaged_tools(tmp_path):
    """fpga=ecp5 on a tiny network: yosys synth_ecp5 and nextpnr-ecp5 (the system's, else the
    [fpga] extra's WebAssembly builds) give LUT4 (carry slices counted), FF and Fmax on the 25k."""
    if fpga.tool("yosys") is None or fpga.tool("nextpnr-ecp5") is None:
        pytest.skip("neither the system's nor the packaged yosys and nextpnr-ecp5 are installed")
    net = _tiny()
    verilog.write(net, tmp_path, np.zeros((1, 3), dtype=np.int64), pipeline="layers")
    numbers = fpga.ecp5(tmp_path, net, latency=2, device="25k")
    assert numbers["lut4"] >= numbers["lut4_core"] > 0 and numbers["ff"] >= 3 * 8 + 2
    assert numbers["fmax_mhz"] > 10 and (tmp_path / "dwn_shell_ecp5_25k.config").stat().st_size > 1000
    assert set(numbers) >= {"ecp5_lut4_encoder", "ecp5_lut4_luts", "ecp5_lut4_head", "carry_core", "nextpnr_seed"}


def test_ecp5_without_any_of_its_tools_names_the_extra(monkeypatch):
    monkeypatch.setattr(fpga.shutil, "which", lambda program: None)
    with pytest.raises(DWNError, match=r"fpga=ecp5 needs yosys on the PATH, or the packaged tools: pip install -e "
                                       r"\"\.\[fpga\]\""):
        fpga.check("ecp5", None)
    with pytest.raises(DWNError, match=r"fpga_device must be one of 25k, 45k, 85k for fpga=ecp5; got 'hx8k'"):
        fpga.check("ecp5", "hx8k")
