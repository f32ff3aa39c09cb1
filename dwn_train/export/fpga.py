"""FPGA numbers from an open toolchain: the one place that knows yosys and nextpnr.

    ice40:  yosys synth_ice40 of the core (dwn_top) alone and inside the serial shell (dwn_shell,
            templates/dwn_shell.v: the board-level wrapper whose few pins fit a package), then
            nextpnr-ice40 place and route of the shell for a device (hx8k by default, the largest
            iCE40 HX) with --timing-allow-fail, so a slow design reports its Fmax instead of failing.
            nextpnr's router can loop on one placement seed (seen here: the breast-cancer shell with
            pipeline=full ran 13 minutes on seed 1; seeds 2 and 3 routed it in under two), so each
            seed in SEEDS gets `timeout` seconds before the next is tried; cost.json names the seed.
    xilinx: yosys synth_xilinx of the core: LUT1..LUT6 and flip-flop counts, the unit of the paper's
            tables (no timing: that needs the vendor's tools), and vivado.tcl (templates/) for those
            who have Vivado: out-of-context synthesis, place and route, utilisation and timing.
Debian packages: yosys, nextpnr-ice40, fpga-icestorm.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .. import console
from ..errors import DWNError, RunError
from . import template
from .freeze import FrozenNetwork
from . import verilog
from .verilog import class_width

FPGAS = ("none", "ice40", "ecp5", "xilinx")
# iCE40 devices nextpnr knows, with a package that has the I/O, and their logic cells (LUT4 + FF)
ICE40 = {"hx1k": ("tq144", 1280), "up5k": ("sg48", 5280), "hx8k": ("ct256", 7680)}
# ECP5 devices (nextpnr-ecp5 --25k/--45k/--85k) with a package that has the I/O, and their LUT4s
ECP5 = {"25k": ("CABGA381", 24288), "45k": ("CABGA381", 43848), "85k": ("CABGA381", 83640)}
DEVICES = {"ice40": ICE40, "ecp5": ECP5}
DEFAULT_DEVICE = {"ice40": "hx8k", "ecp5": "85k"}  # the largest of each family


def device_of(kind: str, device: str | None) -> str | None:
    """fpga_device, or the family's default (the largest) when it is not set."""
    return device if device else DEFAULT_DEVICE.get(kind)


def tool(name: str) -> str | None:
    """The program for `name` (yosys, nextpnr-ecp5, ...): the system's when it is on the PATH, else
    the packaged WebAssembly build of the [fpga] extra (yowasp-<name>), else None."""
    for program in (name, f"yowasp-{name}"):
        if shutil.which(program):
            return program
    return None
SEEDS = (1, 2, 3)  # nextpnr placement seeds, tried in turn


def write_shell(out_dir: Path) -> Path:
    """templates/dwn_shell.v into out_dir (its parameters are set where it is instantiated)."""
    path = out_dir / "dwn_shell.v"
    path.write_text(template.read("dwn_shell.v"))
    return path


def shell_parameters(net: FrozenNetwork, latency: int) -> dict:
    return {"FEATURES": net.num_features, "BITS": net.input.bits, "CLASS_BITS": class_width(net), "LATENCY": latency}


def need(tool: str, package: str, setting: str = "fpga=") -> None:
    if shutil.which(tool) is None:
        raise DWNError(f"{setting} needs {tool} on the PATH (apt-get install {package}).")


HEARTBEAT = 30  # seconds between the lines a long tool run logs


def run_tool(command: list[str], what: str, cwd: Path | None = None,
             timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run an FPGA tool to its end (or `timeout`: subprocess.TimeoutExpired, the tool killed),
    logging its start, a line every HEARTBEAT seconds while it runs, and its time."""
    with console.phase(what):
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        start = time.perf_counter()
        while True:
            left = None if timeout is None else timeout - (time.perf_counter() - start)
            try:
                out, err = proc.communicate(timeout=HEARTBEAT if left is None else max(0.0, min(HEARTBEAT, left)))
                return subprocess.CompletedProcess(command, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                if left is not None and left <= HEARTBEAT:
                    proc.kill()
                    proc.communicate()
                    raise
                console.log.info("%s still running: %.0f s", what, time.perf_counter() - start)


def _yosys(script: str, cwd: Path, what: str) -> str:
    result = run_tool([tool("yosys") or "yosys", "-p", script], what, cwd=cwd)
    if result.returncode:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DWNError(f"yosys could not synthesise the design in {cwd}: {last[0]}")
    return result.stdout


def _cells(stat: str, pattern: str) -> int:
    """The sum of the cell counts whose names match `pattern` in yosys's last `stat` report."""
    report = stat[stat.rfind("Number of cells"):]
    return sum(int(count) for name, count in re.findall(r"^\s+(\S+)\s+(\d+)\s*$", report, re.M)
               if re.fullmatch(pattern, name))


def check(kind: str, device: str) -> None:
    """What fpga=`kind` needs, checked before an export does any work."""
    if kind == "none":
        return
    device = device_of(kind, device)
    if kind in DEVICES and device not in DEVICES[kind]:  # the setting first: wrong with or without the tools
        raise DWNError(f"fpga_device must be one of {', '.join(DEVICES[kind])} for fpga={kind}; got {device!r}.")
    if kind == "ecp5":  # the system's tools, or the packaged ones
        for name in ("yosys", "nextpnr-ecp5"):
            if tool(name) is None:
                raise DWNError(f"fpga=ecp5 needs {name} on the PATH, or the packaged tools: pip install -e \".[fpga]\" "
                               "(or pip install 'dwn-train[fpga]').")
        return
    need("yosys", "yosys")
    if kind == "ice40":
        need("nextpnr-ice40", "nextpnr-ice40")


def lut6(verilog: Path) -> int | None:
    """The LUT-6 count of the whole design (encoder, popcounts and argmax included) after yosys's
    generic `synth -lut 6` (dwn-export's yosys=true, which validate.check_export makes sure yosys is
    there for), or None when yosys reports no LUTs."""
    out = _yosys(f"read_verilog {verilog.name}; synth -top dwn_top -lut 6; stat", verilog.parent,
                 "yosys synth -lut 6 (the whole design)")
    counts = re.findall(r"\$lut\s+(\d+)", out)
    return int(counts[-1]) if counts else None


def write_vivado(out_dir: Path) -> Path:
    """templates/vivado.tcl into out_dir: out-of-context synthesis and implementation of dwn_top.v
    for those who have Vivado (part and clock period as -tclargs)."""
    path = out_dir / "vivado.tcl"
    path.write_text(template.read("vivado.tcl"))
    return path


_PART_NAMES = {"encoder": "the encoder", "luts": "the LUT layers", "head": "the popcount/argmax"}
# what each flow synthesises with, and how it counts LUTs in yosys's stat
_FLOWS = {"lut6": ("synth_xilinx", lambda stat: _cells(stat, r"LUT[1-6]")),
          "lut4": ("synth_ice40", lambda stat: _cells(stat, r"SB_LUT4")),
          "ecp5_lut4": ("synth_ecp5", lambda stat: _ecp5_lut4(stat))}


def by_part(net: FrozenNetwork, unit: str) -> dict:
    """The LUTs of the encoder, the LUT layers and the popcount/argmax head, each synthesised on its
    own (verilog.parts) by the flow of `unit` (lut6: synth_xilinx; lut4: synth_ice40; ecp5_lut4: synth_ecp5):
    {"<unit>_encoder": n, "<unit>_luts": n, "<unit>_head": n}."""
    synth, count = _FLOWS[unit]
    found = {}
    with tempfile.TemporaryDirectory(prefix="dwn-parts-") as build:
        for part, text in verilog.parts(net).items():
            (Path(build) / f"{part}.v").write_text(text)
            stat = _yosys(f"read_verilog {part}.v; {synth} -top {verilog.PARTS[part]}; stat", Path(build),
                          f"yosys {synth} ({_PART_NAMES[part]} alone)")
            found[f"{unit}_{part}"] = count(stat)
    return found


def parts_text(numbers: dict, unit: str, name: str) -> str:
    """'encoder 120, LUT layers 64, popcount/argmax 40 LUT6 (each synthesised alone)'."""
    return (f"encoder {numbers[f'{unit}_encoder']}, LUT layers {numbers[f'{unit}_luts']}, popcount/argmax "
            f"{numbers[f'{unit}_head']} {name} (each synthesised alone)")


def xilinx(out_dir: Path, net: FrozenNetwork | None = None) -> dict:
    """yosys synth_xilinx of dwn_top: LUT1..LUT6 and FF counts, and with `net` the LUTs of its
    three parts synthesised alone (fpga.check("xilinx") first)."""
    stat = _yosys("read_verilog dwn_top.v; synth_xilinx -top dwn_top; stat", out_dir, "yosys synth_xilinx (dwn_top)")
    numbers = {"lut6": _cells(stat, r"LUT[1-6]"), "ff": _cells(stat, r"FD[A-Z]*")}
    return {**numbers, **(by_part(net, "lut6") if net is not None else {})}


def _ecp5_lut4(stat: str) -> int:
    """LUT4s of a synth_ecp5 stat: the LUT4 cells and the two of each CCU2C (a carry slice)."""
    return _cells(stat, r"LUT4") + 2 * _cells(stat, r"CCU2C")


# the place-and-route families: synthesis, how yosys's stat counts LUT4s, flip-flops and carry
# slices, the file nextpnr writes (its flag, its name), the family's name, the by-part unit
_FAMILIES = {
    "ice40": ("synth_ice40", lambda stat: _cells(stat, r"SB_LUT4"), r"SB_DFF\w*", None,
              ("--asc", "dwn_shell_{device}.asc"), "iCE40", "lut4", "{device}"),
    "ecp5": ("synth_ecp5", _ecp5_lut4, r"TRELLIS_FF", r"CCU2C",
             ("--textcfg", "dwn_shell_ecp5_{device}.config"), "ECP5", "ecp5_lut4", "ecp5-{device}"),
}


def ice40(out_dir: Path, net: FrozenNetwork, latency: int, device: str = "hx8k", timeout: float = 300) -> dict:
    """Core and shell cell counts, then place and route of the shell on `device`: LUT4, FF, Fmax
    (`timeout`: seconds per nextpnr seed; fpga.check("ice40", device) first)."""
    return _placed("ice40", out_dir, net, latency, device, timeout)


def ecp5(out_dir: Path, net: FrozenNetwork, latency: int, device: str = "85k", timeout: float = 300) -> dict:
    """As ice40 on a Lattice ECP5 (yosys synth_ecp5, nextpnr-ecp5; the system's tools or the
    [fpga] extra's): LUT4 (carry slices counted as their two LUT4s, and on their own), FF, Fmax
    (fpga.check("ecp5", device) first)."""
    return _placed("ecp5", out_dir, net, latency, device, timeout)


def _placed(kind: str, out_dir: Path, net: FrozenNetwork, latency: int, device: str, timeout: float) -> dict:
    """The flow of a place-and-route family (_FAMILIES): dwn_top and the serial shell synthesised,
    the design's size checked against the device, the shell placed and routed; the LUTs by part.
    The tools run in a build folder holding copies of the Verilog (a WebAssembly build sees only
    its working folder)."""
    synth, lut4, ff, carry, (flag, result), family, unit, label = _FAMILIES[kind]
    write_shell(out_dir)
    params = " ".join(f"-set {k} {v}" for k, v in shell_parameters(net, latency).items())
    with tempfile.TemporaryDirectory(prefix=f"dwn-{kind}-") as folder:
        build = Path(folder)
        for name in ("dwn_top.v", "dwn_shell.v"):
            shutil.copy(out_dir / name, build / name)
        core = _yosys(f"read_verilog dwn_top.v; {synth} -top dwn_top; stat", build, f"yosys {synth} (dwn_top)")
        shell = _yosys(f"read_verilog dwn_top.v dwn_shell.v; chparam {params} dwn_shell; "
                       f"{synth} -top dwn_shell -json shell.json; stat", build,
                       f"yosys {synth} (dwn_top in the serial shell)")
        numbers = {"lut4_core": lut4(core), "ff_core": _cells(core, ff), "lut4": lut4(shell), "ff": _cells(shell, ff),
                   **({"carry_core": _cells(core, carry), "carry": _cells(shell, carry)} if carry else {}),
                   "device": label.format(device=device)}
        package, cells = DEVICES[kind][device]
        if numbers["lut4"] > cells:
            largest = DEFAULT_DEVICE[kind]
            raise DWNError(f"the design needs {numbers['lut4']} LUT4s; the {family} {device} has {cells} (the largest, "
                           f"{largest}, has {DEVICES[kind][largest][1]}): choose a smaller model or fpga=xilinx for "
                           "counts only.")
        path = out_dir / result.format(device=device)
        numbers["fmax_mhz"], numbers["nextpnr_seed"] = _place_and_route(
            kind, [f"--{device}", "--package", package, "--json", "shell.json", flag, path.name], device, path,
            timeout, build)
    return {**numbers, **by_part(net, unit)}


def _place_and_route(kind: str, arguments: list[str], device: str, result_file: Path, timeout: float,
                     build: Path | None = None):
    """(Fmax in MHz or None, the seed that routed) of nextpnr-<kind> with `arguments` (the device,
    package, and the netlist and result named relative to `build`, where it runs: a WebAssembly
    build sees only its working folder), trying SEEDS with `timeout` seconds each; the result is
    then moved to `result_file`."""
    name = f"nextpnr-{kind}"
    result_file.unlink(missing_ok=True)  # no bitstream from an earlier export survives a failure
    for seed in SEEDS:
        command = [tool(name) or name, *arguments, "--timing-allow-fail", "--freq", "12", "--seed", str(seed)]
        try:
            result = run_tool(command, f"{name} place and route on {device} (seed {seed})", cwd=build, timeout=timeout)
        except subprocess.TimeoutExpired:
            console.log.warning("%s did not finish in %s s with seed %d%s", name, timeout, seed,
                                "; trying the next seed" if seed != SEEDS[-1] else "")
            continue
        output = result.stderr + result.stdout
        if result.returncode:
            last = [line for line in output.splitlines() if "ERROR" in line][-1:] or output.strip().splitlines()[-1:]
            raise DWNError(f"{name} could not place and route the design on {device}: {last[0] if last else '?'}")
        found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", output)
        if build is not None:
            shutil.move(str(build / result_file.name), result_file)
        return (float(found[-1]) if found else None), seed
    raise RunError(f"{name} did not finish placing and routing on {device} within fpga_timeout={timeout} s with "
                   f"any of seeds {', '.join(map(str, SEEDS))}: raise fpga_timeout or choose a larger device.")
