"""dwn-export's work (deployment): checkpoint -> frozen network -> JSON, C or Verilog files, verified on
demand, with the cost report and the FPGA flows. The writers and tools it drives live in dwn_train/export/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from . import console
from .checkpoint import data_overrides, restore
from .data import load_dataset
from .errors import DWNError, RunError
from .export import c as c_export
from .export import fpga, simulate
from .export import verilog as verilog_export
from .export.cost import cost_numbers, cost_report
from .export.freeze import FrozenNetwork, accuracy_gap, float_predictions, freeze, input_format
from .export.simplify import reduce
from .validate import check_export

def _verify_c(net, out_dir: Path, q: np.ndarray) -> str:
    if shutil.which("gcc") is None:
        raise DWNError("verify=true for format=c needs gcc on the PATH.")
    binary = out_dir / "dwn_main"
    _run_tool(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(binary),
               str(out_dir / "dwn_model.c"), str(out_dir / "dwn_main.c")], "gcc could not compile the C export")
    text = "\n".join(" ".join(map(str, row)) for row in q)
    out = _run_tool([str(binary)], "the C verification driver failed", text)
    got = np.array([[int(v) for v in line.split()] for line in out.splitlines()]).reshape(-1, 2 + net.num_classes)
    if len(got) != len(q):
        return f"FAIL the C driver answered {len(got)} of {len(q)} samples"
    classes, scores = net.predict(q), net.scores(q)
    wrong = np.flatnonzero((got[:, 0] != classes) | (got[:, 1] != classes) | (got[:, 2:] != scores).any(axis=1))
    if len(wrong):
        i = int(wrong[0])
        return (f"FAIL {len(wrong)} of {len(q)} samples; the first is sample {i}: expected class {classes[i]}, "
                f"scores {scores[i].tolist()}; the C code gave classes {got[i, 0]} (per sample) and {got[i, 1]} "
                f"(batch), scores {got[i, 2:].tolist()}")
    return f"PASS {len(q)} samples (per-sample and batch functions, classes and scores)"


def _run_tool(command: list[str], what: str, stdin: str | None = None) -> str:
    """stdout of `command`; a failure is a RunError with the tool's last line."""
    result = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise RunError(f"{what}: {tail[0]}")
    return result.stdout


def _accuracies(model, encoder, net: FrozenNetwork, data) -> dict:
    """Test accuracy of the float model (real inputs) and of the frozen network (quantised inputs):
    what the input precision costs."""
    x, labels = data.x_test.flatten(1), data.y_test.numpy()
    with torch.no_grad():
        float_classes = model(encoder.binarize(x).flatten(1).float()).argmax(-1).numpy()
    frozen_classes = net.predict(net.input.quantise(x.numpy()))
    return {"accuracy_float": float((float_classes == labels).mean()),
            "accuracy_frozen": float((frozen_classes == labels).mean())}


def _pipeline(cfg) -> str:
    """pipeline=, with the older registered=true standing for pipeline=layers."""
    return "layers" if cfg.registered and cfg.pipeline == "none" else cfg.pipeline


def export_files(cfg) -> list[str]:
    """The names of the files dwn-export writes into its out folder with these settings (each
    writer's own list; tests/test_export.py checks them against what an export leaves)."""
    names = {"json": ["frozen.json"],
             "c": ["dwn_model.h", "dwn_model.c", "dwn_main.c", "README.md"] + (["dwn_main"] if cfg.verify else []),
             "verilog": ["dwn_top.v", "dwn_tb.v", "vectors.hex", "README.md"]}.get(cfg.format, [])
    device = fpga.device_of(cfg.fpga, cfg.fpga_device)
    if cfg.format == "verilog" and (cfg.shell == "serial" or cfg.fpga in ("ice40", "ecp5")):
        names.append("dwn_shell.v")
    if cfg.format == "verilog" and cfg.fpga == "ice40":
        names.append(f"dwn_shell_{device}.asc")
    if cfg.format == "verilog" and cfg.fpga == "ecp5":
        names.append(f"dwn_shell_ecp5_{device}.config")
    if cfg.format == "verilog" and cfg.fpga == "xilinx":
        names.append("vivado.tcl")
    return names + ["cost.json"]


def _refuse_replacing(cfg, out_dir: Path) -> None:
    """Without overwrite=true, an out folder that holds any file this export writes is refused
    before anything is written; files it would not write are never touched either way."""
    if cfg.overwrite:
        return
    found = [name for name in export_files(cfg) if (out_dir / name).exists()]
    if found:
        names = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise DWNError(f"{out_dir} already holds files this export would replace ({names}); nothing was written: "
                       "add overwrite=true to replace them, or give another out= folder.")


def _write_and_verify(cfg, net: FrozenNetwork, out_dir: Path, q, class_names, simulator, built) -> str:
    """Write the chosen format into out_dir and, with verify=true, check it against `net` on q
    (`built`: the Verilog design of net)."""
    if cfg.format == "json":
        (out_dir / "frozen.json").write_text(net.to_json())
        if cfg.verify:
            again = FrozenNetwork.from_json((out_dir / "frozen.json").read_text())
            return f"{'PASS' if (again.predict(q) == net.predict(q)).all() else 'FAIL'} {len(q)} samples"
    elif cfg.format == "c":
        c_export.write(net, out_dir, class_names)
        if cfg.verify:
            return _verify_c(net, out_dir, q)
    else:
        verilog_export.write(net, out_dir, q, pipeline=_pipeline(cfg), class_names=class_names, built=built)
        if cfg.verify:
            return simulate.run_testbench(out_dir, simulator, len(q))
    return "not verified (verify=false)"


def _hardware(cfg, net: FrozenNetwork, out_dir: Path, latency: int, numbers: dict, report: dict) -> None:
    """The serial shell and the FPGA flows (`latency`: the core's clock cycles), into the cost
    numbers and the report."""
    if cfg.shell == "serial" and cfg.fpga not in ("ice40", "ecp5"):
        fpga.write_shell(out_dir)
    if cfg.fpga == "xilinx":
        numbers.update(fpga.xilinx(out_dir, net))
        fpga.write_vivado(out_dir)
        report["xilinx (yosys synth_xilinx)"] = (f"dwn_top {numbers['lut6']} LUT6, {numbers['ff']} FF; "
                                                 f"{fpga.parts_text(numbers, 'lut6', 'LUT6')}; synthesis only, no "
                                                 "timing (vivado.tcl for that)")
    elif cfg.fpga in ("ice40", "ecp5"):
        device, flow = fpga.device_of(cfg.fpga, cfg.fpga_device), getattr(fpga, cfg.fpga)
        numbers.update(flow(out_dir, net, latency, device, cfg.fpga_timeout))
        cycles = latency + 1  # the shell registers the class one clock after the core has it
        numbers["shell_latency_cycles"] = cycles
        fmax = numbers["fmax_mhz"]
        numbers["latency_ns"] = round(cycles * 1000 / fmax, 1) if fmax else None
        carry = f" ({numbers['carry_core']} carry slices)" if "carry_core" in numbers else ""
        report[f"{cfg.fpga} {device} (yosys + nextpnr)"] = (
            f"core {numbers['lut4_core']} LUT4{carry} + {numbers['ff_core']} FF; with the serial shell "
            f"{numbers['lut4']} LUT4 + {numbers['ff']} FF; Fmax {fmax} MHz; class {cycles} clock(s) after the last "
            f"feature" + (f" = {numbers['latency_ns']} ns" if fmax else ""))
        unit = "lut4" if cfg.fpga == "ice40" else "ecp5_lut4"
        report[f"{cfg.fpga} LUT4 by part"] = fpga.parts_text(numbers, unit, "LUT4")


def run_export(cfg, run_dir: Path) -> str:
    check_export(cfg)  # every setting and the FPGA tools, before any work
    out_dir = Path(cfg.out) if cfg.out else run_dir / "export"
    _refuse_replacing(cfg, out_dir)
    simulator = simulate.choose(cfg.simulator) if cfg.format == "verilog" and cfg.verify else None
    count = cfg.vectors or simulate.DEFAULT_VECTORS.get(simulator, 256)
    restored = restore(cfg.checkpoint, data_overrides(cfg))
    model, encoder = restored.model, restored.encoder
    data = load_dataset(restored.config.dataset)
    with console.phase("freezing and simplifying the network"):
        fmt = input_format(model, encoder, data.x_train.flatten(1).numpy(), cfg.input_bits, cfg.frac_bits)
        original = freeze(model, encoder, fmt)
        net = reduce(original)  # what every writer emits (the same function, bit for bit)
    q = fmt.quantise(data.x_test.flatten(1).numpy()[:count])
    expected = float_predictions(model, encoder, net, q)
    differ = np.flatnonzero(net.predict(q) != expected)
    if len(differ):
        i = int(differ[0])
        raise RunError(f"the frozen network disagrees with the float model on {len(differ)} of {len(q)} test samples "
                       f"(the first is sample {i}: class {net.predict(q[i:i + 1])[0]} instead of {expected[i]}); "
                       "nothing was written: please report this as a bug.")
    out_dir.mkdir(parents=True, exist_ok=True)
    with console.phase(f"writing the {cfg.format} export" + (" and verifying it" if cfg.verify else "")):
        built = verilog_export.design(net, _pipeline(cfg))  # the RTL, and the registers and latency of the cost table
        verdict = _write_and_verify(cfg, net, out_dir, q, restored.data.get("class_names"), simulator, built)
    numbers = cost_numbers(net, _pipeline(cfg), original, built)
    report = cost_report(net, _pipeline(cfg), original, numbers)
    with console.phase("scoring the float and the frozen network on the test split"):
        numbers.update(_accuracies(model, encoder, net, data))
    if cfg.format == "verilog" and cfg.yosys:  # (validate.check_export: yosys is installed)
        numbers["yosys_lut6"] = fpga.lut6(out_dir / "dwn_top.v")
        report["yosys synth -lut 6"] = f"{numbers['yosys_lut6']} LUT-6 (whole design)"
    if cfg.format == "verilog":
        _hardware(cfg, net, out_dir, built.latency, numbers, report)
    report["test accuracy: float / frozen"] = (f"{100 * numbers['accuracy_float']:.2f} % / "
                                               f"{100 * numbers['accuracy_frozen']:.2f} % ({fmt.bits}-bit inputs)")
    if gap := accuracy_gap(numbers["accuracy_float"], numbers["accuracy_frozen"]):
        console.log.warning(gap)
    (out_dir / "cost.json").write_text(json.dumps({**numbers, "verify": verdict}, indent=2) + "\n")
    report = {"files": str(out_dir), "input": fmt.describe(), **report, "verify": verdict}
    console.summary_table(f"dwn-export format={cfg.format}", report)
    if verdict.startswith("FAIL"):
        raise RunError(f"verification of the {cfg.format} export in {out_dir} failed: {verdict}.")
    return verdict
