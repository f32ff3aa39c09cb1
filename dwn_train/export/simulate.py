"""Simulating the Verilog export against its self-checking testbench: the one place that knows
the simulators. Verilator (`apt-get install verilator`) compiles the design once to C++ and then
checks thousands of vectors per second; Icarus Verilog (`apt-get install iverilog`) needs no
compile step but takes seconds per vector on a network of a thousand LUTs, so it gets a smaller
default vector count. Each build goes into a fresh folder: nothing compiled earlier is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .. import console
from ..errors import DWNError

SIMULATORS = ("auto", "verilator", "iverilog")
# vectors checked when `vectors=` is not given: well under a minute for the MNIST recipe model
DEFAULT_VECTORS = {"verilator": 1000, "iverilog": 8}


def choose(name: str = "auto") -> str:
    """The simulator to use: `name`, or for auto Verilator when installed, else Icarus Verilog."""
    if name not in SIMULATORS:
        raise DWNError(f"simulator must be one of {', '.join(SIMULATORS)}; got {name!r}.")
    found = [s for s in ("verilator", "iverilog") if shutil.which(s)]
    if name == "auto":
        if not found:
            raise DWNError("verify=true for format=verilog needs a Verilog simulator: apt-get install verilator "
                           "(fast) or iverilog.")
        return found[0]
    if name not in found:
        raise DWNError(f"simulator={name} is not installed (apt-get install {name}).")
    return name


def run_testbench(out_dir: Path, simulator: str, count: int) -> str:
    """Build and run dwn_tb.v + dwn_top.v from `out_dir`; the testbench's verdict line (PASS or
    FAIL, with the first mismatch). Each phase is logged as it starts and ends, with the seconds
    since the start: compiling, simulating (a line per tenth of the vectors), comparing."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dwn-sim-") as build:
        console.log.info("verify: compiling dwn_top.v and its testbench with %s (in %s)", simulator, build)
        if simulator == "verilator":
            command = _verilator(out_dir, Path(build))
        else:
            binary = Path(build) / "sim"
            _check(["iverilog", "-g2001", "-o", str(binary), "dwn_tb.v", "dwn_top.v"], out_dir, "iverilog")
            command = ["vvp", "-n", str(binary)]
        console.log.info("verify: compiled (%.1f s); simulating %d vectors", time.perf_counter() - start, count)
        lines = _simulate(command, out_dir, count, start)
    verdict = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    first = next((line for line in lines if line.startswith("MISMATCH")), None)
    if not verdict:
        return "FAIL (no verdict from the testbench)"
    console.log.info("verify: compared %d vectors with vectors.hex: %s (%.1f s)", count, verdict[-1].split()[0],
                     time.perf_counter() - start)
    return verdict[-1] + (f"; the first: {first[len('MISMATCH '):]} (expected: vectors.hex)" if first else "") + \
        f" ({simulator}, {time.perf_counter() - start:.1f} s)"


def _verilator(out_dir: Path, build: Path) -> list[str]:
    _check(["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", "dwn_tb",
            "--Mdir", str(build), "-j", "0", "-MAKEFLAGS", "OPT_FAST=-O0",  # the C++ compile dominates
            "dwn_tb.v", "dwn_top.v"], out_dir, "verilator")
    return [str(build / "Vdwn_tb")]


def _check(command: list[str], cwd: Path, tool: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DWNError(f"{tool} could not build the testbench in {cwd}: {tail[0]}")


def _simulate(command: list[str], cwd: Path, count: int, start: float) -> list[str]:
    """Run the simulation, logging the testbench's progress lines as they come; the other lines."""
    lines = []
    for line in _output_lines(command, cwd):
        if line.startswith("progress "):
            done = int(line.split()[1])
            console.log.info("verify: simulated %d/%d vectors (%.1f s)", done, count, time.perf_counter() - start)
        elif line:
            lines.append(line)
    return lines


def _output_lines(command: list[str], cwd: Path):
    """The command's output (stdout and stderr), stripped line by line as it is written. It writes to
    a pseudo-terminal where the platform has one: a simulator's C library flushes a terminal at each
    line but holds a pipe's output until it exits, which would bring every progress line at the end."""
    try:
        import pty

        parent, child = pty.openpty()
    except (ImportError, OSError):  # no pseudo-terminals here: a pipe, its lines when the simulator flushes
        with subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
            yield from (line.strip() for line in proc.stdout)
        return
    try:
        proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    except BaseException:
        os.close(parent)
        raise
    finally:
        os.close(child)  # the simulator holds its own copy; the parent's would keep the terminal open
    pending = b""
    try:
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO on Linux once the simulator has exited and closed the terminal
                chunk = b""
            if not chunk:
                break
            *complete, pending = (pending + chunk).split(b"\n")
            yield from (line.decode(errors="replace").strip() for line in complete)
        if pending.strip():
            yield pending.decode(errors="replace").strip()
    finally:
        os.close(parent)
        if proc.poll() is None:  # stopped early (Ctrl-C): the simulator goes too
            proc.kill()
        proc.wait()
