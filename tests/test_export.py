"""Freezing and exporting: the frozen network, the packed engine, C and Verilog all agree with the
float model, bit for bit, on the same quantised inputs."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import dwn_train as dwn
from dwn_train import DWNError
from dwn_train.checkpoint import restore
from dwn_train.config import EvalConfig, ExportConfig
from dwn_train.data import load_dataset
from dwn_train.evaluate import run_eval
from dwn_train.export import fpga, template
from dwn_train.export.freeze import FrozenLayer, FrozenNetwork, InputFormat, freeze
from dwn_train.export.packed import pack, predict_packed, unpack
from dwn_train.deploy import run_export
from dwn_train.export.freeze import float_predictions
from dwn_train.train import train
from conftest import compose
from helpers.frozen import signed_fixed_point_model, tie_network
from helpers.runs import SMALL

TINY = [*SMALL, "model.layers.0.out_features=120", "model.layers.1.out_features=60", "trainer.epochs=3"]


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits")
    train(compose(TINY), run)
    return run / "checkpoints" / "last.pt"


def _trained(checkpoint):
    """(model, encoder, raw data) of a checkpoint, through the one restore path."""
    restored = restore(checkpoint)
    return restored.model, restored.encoder, load_dataset(restored.config.dataset)


def _export_cfg(checkpoint, out, **kwargs):
    base = dict(checkpoint=str(checkpoint), format="json", out=str(out), verify=True, vectors=120, yosys=False)
    return OmegaConf.merge(OmegaConf.structured(ExportConfig), {**base, **kwargs})


def _eval_cfg(**kwargs):
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), dict(device="cpu", **kwargs))


def test_frozen_network_equals_float_model_on_bytes(digits_checkpoint):
    model, encoder, data = _trained(digits_checkpoint)
    fmt = InputFormat.infer(data.x_train.numpy())
    assert (fmt.bits, fmt.frac_bits, fmt.signed) == (8, 0, False)  # digits are whole numbers 0..16
    net = freeze(model, encoder, fmt)
    q = fmt.quantise(data.x_test.numpy())
    assert np.array_equal(q, data.x_test.numpy())  # no rounding for byte data
    assert np.array_equal(net.predict(q), float_predictions(model, encoder, net, q))
    again = FrozenNetwork.from_json(net.to_json())
    assert np.array_equal(again.scores(q), net.scores(q))


def test_frozen_network_equals_float_model_on_signed_fixed_point():
    x, encoder, model = signed_fixed_point_model(400)
    fmt = InputFormat.infer(x)
    assert fmt.signed and fmt.bits == 16
    net = freeze(model, encoder, fmt)
    q = fmt.quantise(x)
    assert (x - fmt.dequantise(q)).min() >= 0 and (x - fmt.dequantise(q)).max() < 2.0 ** -fmt.frac_bits  # round down
    assert np.array_equal(net.predict(q), float_predictions(model, encoder, net, q))
    classes, scores = predict_packed(net, q, chunk=100)
    assert np.array_equal(scores, net.scores(q)) and np.array_equal(classes, net.predict(q))


def test_input_format_with_explicit_widths_and_what_it_refuses():
    x = np.array([[-3.2, 0.5], [7.9, 1.0]])
    assert InputFormat.infer(x) == InputFormat(16, 11, True)  # 5 integer bits (|x| < 15, sign) in 16
    assert InputFormat.infer(x, bits=12) == InputFormat(12, 7, True)
    assert InputFormat.infer(x, frac_bits=4) == InputFormat(16, 4, True)
    assert InputFormat.infer(np.array([[0, 100]]), bits=8) == InputFormat(8, 0, True)  # widths asked for: signed Q
    with pytest.raises(DWNError, match="input_bits must be between 2 and 32; got 40"):
        InputFormat.infer(x, bits=40)
    with pytest.raises(DWNError, match="need 5 integer bits .* 8 input bits with 6 fraction bits cannot hold"):
        InputFormat.infer(x, bits=8, frac_bits=6)
    with pytest.raises(DWNError, match="frac_bits must be >= 0 .*; got -1"):
        InputFormat.infer(x, frac_bits=-1)
    with pytest.raises(DWNError, match=r"need 9 integer bits \(sign included\); 8 input bits cannot hold them"):
        InputFormat.infer(np.array([[0, 255]]), bits=8)
    assert InputFormat.infer(np.array([[-np.inf, 0.5], [7.9, np.inf]])) == InputFormat(16, 11, True)  # inf saturates
    with pytest.raises(DWNError, match="no finite value"):
        InputFormat.infer(np.array([[np.inf, np.nan]]))


def test_pack_round_trip_with_a_partial_word():
    bits = (np.random.default_rng(1).random((130, 7)) > 0.5).astype(np.uint8)
    words = pack(bits)
    assert words.shape == (7, 3) and words.dtype == np.uint64
    assert np.array_equal(unpack(words, 130), bits)
    one = np.zeros((130, 7), dtype=np.uint8)
    one[70, 2] = 1  # sample s is bit s % 64 of word s // 64, one row of words per bit
    assert pack(one)[2].tolist() == [0, 1 << 6, 0] and not np.delete(pack(one), 2, axis=0).any()


@pytest.mark.parametrize("bit", [0, 1])
def test_ties_go_to_the_lowest_class_everywhere(bit, tmp_path):
    net = tie_network(bit)
    q = np.random.default_rng(2).integers(0, 256, size=(70, 2))
    assert (net.predict(q) == 0).all() and (predict_packed(net, q)[0] == 0).all()
    if shutil.which("gcc"):
        from dwn_train.export import c as c_export
        from dwn_train.deploy import _verify_c

        c_export.write(net, tmp_path)
        assert _verify_c(net, tmp_path, q).startswith("PASS")


@pytest.mark.slow
def test_c_export_compiles_strictly_and_matches(digits_checkpoint, tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    verdict = run_export(_export_cfg(digits_checkpoint, tmp_path, format="c"), tmp_path)
    assert verdict.startswith("PASS 120 samples")
    assert "malloc" not in (tmp_path / "dwn_model.c").read_text()
    assert "| 9 | 9 |" in (tmp_path / "README.md").read_text()  # class_id -> the training label


@pytest.mark.slow
@pytest.mark.parametrize("simulator, pipeline", [("iverilog", "none"), ("iverilog", "registered"),
                                                 ("iverilog", "full"), ("verilator", "full")])
def test_verilog_export_simulates_and_matches(simulator, pipeline, digits_checkpoint, tmp_path):
    from dwn_train.export import simulate

    if shutil.which(simulator) is None:
        pytest.skip(f"{simulator} is not installed")
    stages = dict(registered=True) if pipeline == "registered" else dict(pipeline=pipeline)  # the older alias
    verdict = run_export(_export_cfg(digits_checkpoint, tmp_path, format="verilog", vectors=40, simulator=simulator,
                                     **stages), tmp_path)
    assert verdict.startswith(f"PASS 40 vectors ({simulator}, ")
    assert ("posedge clk" in (tmp_path / "dwn_top.v").read_text()) == (pipeline != "none")
    # the testbench really compares: a wrong expected class fails it, and the first mismatch is named
    lines = (tmp_path / "vectors.hex").read_text().splitlines()
    lines[3] = lines[3][:-1] + ("0" if lines[3][-1] != "0" else "1")
    (tmp_path / "vectors.hex").write_text("\n".join(lines) + "\n")
    verdict = simulate.run_testbench(tmp_path, simulator, 40)
    assert verdict.startswith("FAIL 1 of 40 vectors; the first: vector 3: class ")


def test_the_simulator_default_and_its_vector_count(monkeypatch):
    from dwn_train.export import simulate

    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}" if tool == "iverilog" else None)
    assert simulate.choose("auto") == "iverilog" and simulate.DEFAULT_VECTORS["iverilog"] < 50
    with pytest.raises(dwn.DWNError, match="simulator=verilator is not installed"):
        simulate.choose("verilator")
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(dwn.DWNError, match="needs a Verilog simulator: apt-get install verilator"):
        simulate.choose("auto")


def test_packed_eval_engine_equals_float_eval(digits_checkpoint, tmp_path):
    cfg = dict(checkpoint=str(digits_checkpoint), save_predictions=True, cost=True)
    float_acc = run_eval(_eval_cfg(**cfg, engine="float"), tmp_path)
    float_preds = (tmp_path / "predictions.csv").read_text()
    packed_acc = run_eval(_eval_cfg(**cfg, engine="packed"), tmp_path)
    assert packed_acc == float_acc and (tmp_path / "predictions.csv").read_text() == float_preds


def test_cost_report_counts(digits_checkpoint):
    from dwn_train.export.cost import cost_report, lut6_equivalents

    model, encoder, data = _trained(digits_checkpoint)
    net = freeze(model, encoder, InputFormat.infer(data.x_train.numpy()))
    report = cost_report(net, "layers")
    assert report["LUTs (LUT-6 equivalents)"] == "180 (180)" and report["registers"] == 180
    assert report["latency (clock cycles)"] == "2 (pipeline=layers)"
    full = cost_report(net, "full")
    # encoder 192 + LUTs 180 + popcounts (10 classes, one chunk of 6 bits, 3-bit scores) 30 + argmax
    # tournament of 10 (rounds of 5, 3, 2, 1 winners: (3 + 4) bits each) 77 + scores delayed 4 rounds 120
    assert full["registers"] == 192 + 180 + 30 + 77 + 120 and full["latency (clock cycles)"] == "8 (pipeline=full)"
    assert report["popcount adder trees"].startswith("10 x 6-input")
    assert [lut6_equivalents(n) for n in (2, 6, 7, 8)] == [1, 1, 3, 7]


def test_cost_counts_working_luts_and_wide_luts_in_lut6_equivalents():
    from dwn_train.export.cost import cost_numbers, cost_report

    first = FrozenLayer(np.array([[0, 1]] * 4), np.array([[0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 1, 0, 1]],
                                                        dtype=np.uint8))  # the third LUT is a constant
    tables = np.zeros((2, 256), dtype=np.uint8)
    tables[0, 1::2] = 1  # LUT-8 reading input 0 (layer 1's XOR); the second output is a constant 0
    second = FrozenLayer(np.array([[0, 1, 2, 3, 0, 1, 2, 3]] * 2), tables)
    net = FrozenNetwork(InputFormat(8, 0, False), 2, np.array([[10], [200]]), [first, second], 2)
    numbers = cost_numbers(net)
    assert (numbers["luts"], numbers["lut6_equivalents"]) == (3 + 1, 3 * 1 + 1 * 7)
    rows = cost_report(net, numbers=numbers)
    assert rows["layer 1"] == "3 LUT-2 (3 LUT-6 equivalents) and 1 constant outputs"
    assert rows["layer 2"] == "1 LUT-8 (7 LUT-6 equivalents) and 1 constant outputs"
    assert rows["LUTs (LUT-6 equivalents)"] == "4 (10)"


@pytest.mark.slow
def test_dwn_export_console_script(digits_checkpoint, tmp_path):
    result = subprocess.run(["dwn-export", f"checkpoint={digits_checkpoint}", "format=json", "verify=true",
                             f"out={tmp_path}/frozen", f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert FrozenNetwork.from_json((tmp_path / "frozen" / "frozen.json").read_text()).num_classes == 10
    bad = subprocess.run(["dwn-export", f"checkpoint={digits_checkpoint}", "format=vhdl",
                          f"hydra.run.dir={tmp_path}/run2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "format must be one of" in bad.stderr


@pytest.mark.parametrize("classes", [2, 4])
def test_reduction_head_freezes_exactly(classes):
    torch.manual_seed(classes)
    x = np.random.default_rng(classes).integers(0, 256, size=(300, 5))
    encoder = dwn.DistributiveThermometer(4).fit(x)
    groups = 1 if classes == 2 else classes
    model = torch.nn.Sequential(dwn.LUTLayer(20, 8 * groups, n=4), dwn.ReductionHead(8 * groups, classes, n=2)).eval()
    fmt = InputFormat.infer(x)
    net = freeze(model, encoder, fmt)
    predictions = net.predict(x)
    assert np.array_equal(predictions, float_predictions(model, encoder, net, x))
    assert np.array_equal(predict_packed(net, x)[0], predictions)
    from dwn_train.export import compiled

    assert np.array_equal(compiled.predict(net, x)[0], predictions)
    assert len(np.unique(net.scores(x), axis=0)) > 1  # the outputs depend on the input


@pytest.mark.slow
def test_yosys_counts_the_whole_design(tmp_path):
    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed")
    from dwn_train.export import verilog as verilog_export
    from dwn_train.export.fpga import lut6

    net = tie_network(0)
    net.layers[0].wiring[:, 1] = 1
    net.layers[0].tables[:] = [0, 1, 1, 0]  # XOR of the two comparators: real logic to synthesise
    verilog_export.write(net, tmp_path, np.zeros((1, 2), dtype=np.int64))
    assert lut6(tmp_path / "dwn_top.v") >= 1


def test_checkpoints_from_before_a_config_key_existed_still_evaluate(digits_checkpoint, tmp_path):
    from dwn_train.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(digits_checkpoint)
    old = {k: v for k, v in payload.items() if k not in ("format", "version")}
    del old["config"]["model"]["regularizer"], old["config"]["model"]["head"]["n"]
    del old["config"]["trainer"]["strategy"], old["config"]["model"]["layers"][0]["efd"]
    save_checkpoint(old, tmp_path / "old.pt")
    new_acc = run_eval(_eval_cfg(checkpoint=str(digits_checkpoint)), tmp_path)
    old_acc = run_eval(_eval_cfg(checkpoint=str(tmp_path / "old.pt")), tmp_path)
    assert old_acc == new_acc


# A generated block written by hand, in the form templates/dwn_runtime.c documents: one feature,
# one comparator (x > 127) and two LUT-1s, NOT and BUF of it, each the whole score of its class.
TINY_C_BLOCK = """#include <stdint.h>
#define DWN_NUM_FEATURES 1
#define DWN_NUM_CLASSES 2
typedef uint8_t dwn_input_t;
#define DWN_NUM_BITS 1
#define DWN_NUM_LAYERS 1
#define DWN_MAX_WORDS 1
#define DWN_MAX_N 1
#define DWN_GROUP 1
#define DWN_LAST_WIDTH 2
#define DWN_SCORE_BITS 1
typedef uint8_t dwn_wire_t;
static const int32_t dwn_thresholds[1] = {127};
static const uint8_t dwn_wiring_0[2] = {0, 0};
static const uint64_t dwn_tables_0[2] = {0x1u, 0x2u};
#define DWN_LAYERS {1, 2, 1, dwn_wiring_0, dwn_tables_0}
"""


@pytest.mark.slow
def test_c_runtime_template_is_plain_c(tmp_path):
    """The shipped runtime, unmodified, compiles strictly and runs when #included after a block."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")

    main = """
int main(void)
{
    dwn_input_t x[3] = {200, 5, 128};
    int32_t classes[3], scores[2];
    dwn_predict_batch(x, 3, classes);
    return !(dwn_predict(&x[0], scores) == 1 && scores[0] == 0 && scores[1] == 1 && dwn_predict(&x[1], NULL) == 0
             && classes[0] == 1 && classes[1] == 0 && classes[2] == 1);
}
"""
    (tmp_path / "tiny.c").write_text(TINY_C_BLOCK + f'#include "{template.path("dwn_runtime.c")}"\n' + main)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", "tiny", "tiny.c"], cwd=tmp_path, check=True)
    assert subprocess.run([str(tmp_path / "tiny")]).returncode == 0


def test_c_export_splices_only_data_into_the_templates(tmp_path):
    from dwn_train.export import c as c_export

    files = c_export.generate(tie_network(1), "tiny")
    assert sorted(files) == ["tiny.c", "tiny.h"] and '#include "tiny.h"' in files["tiny.c"]
    head, _, tail = template.read("dwn_runtime.c").partition(template.MARKER + "\n")
    assert files["tiny.c"].startswith(head) and files["tiny.c"].endswith(tail)  # the runtime, verbatim
    block = files["tiny.c"][len(head):-len(tail)].splitlines()
    assert all(line.startswith(("#", "typedef ", "static const ", "    ", "};", "/*")) for line in block if line)
    assert all(template.MARKER not in text for text in files.values())
    if shutil.which("gcc"):
        for filename, text in files.items():
            (tmp_path / filename).write_text(text)
        subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "tiny.c"], cwd=tmp_path,
                       check=True)


@pytest.mark.slow
def test_a_verification_mismatch_names_the_first_sample(digits_checkpoint, tmp_path, monkeypatch):
    """A C export whose tables were corrupted after writing: RunError with the first bad sample."""
    import re

    from dwn_train.errors import RunError
    from dwn_train.export import c as c_export

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    real_write = c_export.write

    def corrupted_write(net, out_dir, class_names=None):
        paths = real_write(net, out_dir, class_names)
        source = out_dir / "dwn_model.c"
        source.write_text(re.sub(r"0x[0-9a-f]{16}u", "0x0000000000000000u", source.read_text()))
        return paths

    monkeypatch.setattr(c_export, "write", corrupted_write)
    with pytest.raises(RunError, match=r"verification of the c export in .* failed: FAIL \d+ of 120 samples; the first "
                                       r"is sample \d+: expected class \d, scores \["):
        run_export(_export_cfg(digits_checkpoint, tmp_path, format="c"), tmp_path)


def test_cost_json_reports_float_and_frozen_accuracy(digits_checkpoint, tmp_path):
    import json

    run_export(_export_cfg(digits_checkpoint, tmp_path, format="json"), tmp_path)
    cost = json.loads((tmp_path / "cost.json").read_text())
    model, encoder, data = _trained(digits_checkpoint)
    net = FrozenNetwork.from_json((tmp_path / "frozen.json").read_text())
    frozen = (net.predict(net.input.quantise(data.x_test.numpy())) == data.y_test.numpy()).mean()
    assert cost["accuracy_frozen"] == pytest.approx(frozen)
    assert cost["accuracy_float"] == pytest.approx(frozen)  # byte data: quantising changes nothing
    assert (cost["luts"], cost["input_bits"], cost["latency_cycles"], cost["comparators_before"]) == (180, 8, 0, 192)
    # the writers emit the reduced network: its comparators are the ones some LUT reads, once each
    assert cost["comparators"] == cost["comparators_after"] < 192
    assert cost["verify"].startswith("PASS")


# ---- traps other LUT-network exporters found in their own releases ----

def _wide_network(classes: int, fmt: InputFormat, seed: int = 0) -> FrozenNetwork:
    """3 features x `classes` / 3 thresholds -> `classes` LUT-2s, one bit per class. The tables of the
    first classes (all but the last 40) are empty and the others sparse, so that the answers are
    varied and, with 300 classes, mostly above 255."""
    rng = np.random.default_rng(seed)
    per = classes // 3
    thresholds = np.sort(rng.integers(fmt.lo, fmt.hi, size=(3, per)), axis=1)
    tables = (rng.random((classes, 4)) < 0.2).astype(np.uint8)
    tables[:max(0, classes - 40)] = 0
    layer = FrozenLayer(rng.integers(0, 3 * per, (classes, 2)), tables)
    return FrozenNetwork(fmt, 3, thresholds, [layer], classes)


@pytest.mark.slow
@pytest.mark.parametrize("classes, fmt", [(300, InputFormat(8, 0, False)), (12, InputFormat(12, 3, True)),
                                          (6, InputFormat(5, 0, False))],
                         ids=["300 classes", "signed 12-bit", "unsigned 5-bit"])
def test_wide_labels_and_odd_bit_widths_agree_in_every_engine(classes, fmt, tmp_path):
    from dwn_train.export import c as c_export
    from dwn_train.export import simulate, verilog
    from dwn_train.deploy import _verify_c

    net = _wide_network(classes, fmt)
    q = np.random.default_rng(1).integers(fmt.lo, fmt.hi + 1, size=(40, 3))
    expected = net.predict(q)
    assert len(set(expected.tolist())) > 1  # not a constant answer
    assert classes < 256 or expected.max() >= 256  # the label width really exceeds a byte
    assert np.array_equal(predict_packed(net, q)[0], expected)
    if shutil.which("gcc"):
        c_export.write(net, tmp_path / "c")
        assert _verify_c(net, tmp_path / "c", q).startswith("PASS")
    if shutil.which("iverilog"):
        verilog.write(net, tmp_path / "v", q)
        assert simulate.run_testbench(tmp_path / "v", "iverilog", len(q)).startswith("PASS 40 vectors")


def test_nan_has_no_code_and_infinities_saturate():
    fmt = InputFormat(16, 4, True)
    assert fmt.quantise([[np.inf, -np.inf, 1.5]]).tolist() == [[fmt.hi, fmt.lo, 24]]
    with pytest.raises(dwn.DWNError, match=r"input \(1, 0\) is NaN"):
        fmt.quantise([[0.0], [np.nan]])


def test_no_check_in_the_package_is_an_assert():
    """python -O strips assert statements: every check must be an explicit raise."""
    import ast
    from pathlib import Path

    package = Path(dwn.__file__).parent
    found = [f"{path.relative_to(package)}:{node.lineno}" for path in package.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert found == []


@pytest.mark.slow
def test_files_left_over_from_another_export_do_not_pass(digits_checkpoint, tmp_path):
    from dwn_train.export import simulate

    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed")
    run_export(_export_cfg(digits_checkpoint, tmp_path, format="verilog", vectors=10, simulator="iverilog"), tmp_path)
    top = (tmp_path / "dwn_top.v").read_text()
    import re

    (tmp_path / "dwn_top.v").write_text(re.sub(r"BUILD_ID = 32'h[0-9a-f]{8}", "BUILD_ID = 32'hdeadbeef", top))
    assert "is from another export" in simulate.run_testbench(tmp_path, "iverilog", 10)
    (tmp_path / "dwn_top.v").write_text(top)
    lines = (tmp_path / "vectors.hex").read_text().splitlines()
    (tmp_path / "vectors.hex").write_text("\n".join(lines[:7]) + "\n")  # an older, shorter vectors.hex
    assert "holds fewer than 10 vectors" in simulate.run_testbench(tmp_path, "iverilog", 10)


def test_fpga_settings_are_checked_before_any_work(digits_checkpoint, tmp_path):
    with pytest.raises(dwn.DWNError, match="fpga_device must be one of"):
        run_export(_export_cfg(digits_checkpoint, tmp_path / "out", format="verilog", fpga="ice40",
                               fpga_device="hx8"), tmp_path)
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_named_and_kept(digits_checkpoint, tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(dwn.DWNError, match="is a file; give a folder for the exported files"):
        run_export(_export_cfg(digits_checkpoint, tmp_path / "out", format="c"), tmp_path)
    assert (tmp_path / "out").read_text() == "mine"


def test_a_wrong_fpga_device_is_named_even_without_the_tools(monkeypatch):
    monkeypatch.setattr(fpga.shutil, "which", lambda tool: None)
    with pytest.raises(dwn.DWNError, match="fpga_device must be one of"):
        fpga.check("ice40", "hx8")
    with pytest.raises(dwn.DWNError, match="needs yosys on the PATH"):
        fpga.check("ice40", "hx8k")


def test_a_failing_tool_is_a_run_error():
    from dwn_train.errors import RunError
    from dwn_train.deploy import _run_tool

    with pytest.raises(RunError, match="the C verification driver failed: "):
        _run_tool(["sh", "-c", "echo 'segmentation fault' >&2; exit 139"], "the C verification driver failed")


def _files(folder) -> dict:
    """name -> bytes of every file in folder."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("settings", [["format=json"], ["format=c", "verify=false"], ["format=c", "verify=true"],
                                      ["format=verilog", "verify=false", "yosys=false", "shell=serial"],
                                      ["format=verilog", "verify=false", "yosys=false", "fpga=xilinx"]],
                         ids=["json", "c", "c-verify", "verilog-shell", "verilog-xilinx"])
def test_export_files_names_what_each_export_writes(settings, tiny_run, run_cli, tmp_path):
    """export_files (what overwrite= guards) is exactly what an export leaves in an empty folder."""
    from dwn_train.deploy import export_files

    if "verify=true" in settings and shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if "fpga=xilinx" in settings and shutil.which("yosys") is None:
        pytest.skip("yosys is not installed")
    code, out, err = run_cli("export", f"checkpoint={tiny_run}/checkpoints/last.pt", *settings, "vectors=20",
                             f"out={tmp_path}/out", f"hydra.run.dir={tmp_path}/run")
    assert code == 0, out + err
    assert sorted(_files(tmp_path / "out")) == sorted(export_files(compose(
        [f"checkpoint={tiny_run}/checkpoints/last.pt", *settings], config_name="export")))


def test_an_export_refuses_to_replace_files_unless_overwrite_is_set(tiny_run, run_cli, tmp_path):
    """A second export into one folder is refused before anything is written, naming the folder,
    the files and the key; overwrite=true replaces them; other files there are never touched."""
    from helpers.runs import clean

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    export = ["export", f"checkpoint={tiny_run}/checkpoints/last.pt", f"out={out}"]
    assert run_cli(*export, "format=c", f"hydra.run.dir={tmp_path}/r1")[0] == 0
    (out / "dwn_model.c").write_text("edited by hand")
    before = _files(out)
    for i, (settings, names) in enumerate([(["format=c"], "dwn_model.h, dwn_model.c, dwn_main.c, README.md and 1 more"),
                                           (["format=json"], "cost.json")]):  # json would replace cost.json only
        code, stdout, stderr = run_cli(*export, *settings, f"hydra.run.dir={tmp_path}/refused{i}")
        clean(code, stdout, stderr, 2, f"{out} already holds files this export would replace ({names}); nothing was "
                                       "written: add overwrite=true to replace them")
        assert _files(out) == before  # nothing written, nothing removed
    assert run_cli(*export, "format=c", "overwrite=true", f"hydra.run.dir={tmp_path}/r2")[0] == 0
    assert (out / "dwn_model.c").read_text() != "edited by hand" and (out / "notes.txt").read_text() == "mine"
    assert run_cli(*export, "format=json", f"out={tmp_path}/json", f"hydra.run.dir={tmp_path}/r3")[0] == 0


@pytest.mark.slow
def test_verilog_verification_logs_each_phase_in_order(tiny_run, run_cli, tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed")
    code, out, err = run_cli("export", f"checkpoint={tiny_run}/checkpoints/last.pt", "format=verilog", "verify=true",
                             "simulator=iverilog", "vectors=20", "yosys=false", f"out={tmp_path}/out",
                             f"hydra.run.dir={tmp_path}/run")
    assert code == 0, out + err
    phases = ["verify: compiling dwn_top.v and its testbench with iverilog", "verify: compiled (",
              *(f"verify: simulated {n}/20 vectors (" for n in range(2, 20, 2)),
              "verify: compared 20 vectors with vectors.hex: PASS ("]
    text = out + err
    places = [text.find(phase) for phase in phases]
    assert -1 not in places and places == sorted(places), (places, text)


def test_simulator_output_arrives_line_by_line(tmp_path):
    """A program that buffers its output as a C library does (line by line on a terminal, in blocks
    into a pipe: Python's open() of stdout with default buffering) writes a progress line, then waits
    until the reader has seen it: read through a pipe, the line would come only at exit, after the
    program gave up waiting."""
    from dwn_train.export.simulate import _output_lines

    seen = tmp_path / "seen"
    child = ("import os, time\n"
             "out = open(1, 'w', closefd=False)\n"
             "print('progress 1', file=out)\n"
             "deadline = time.time() + 30\n"
             f"while not os.path.exists({str(seen)!r}) and time.time() < deadline: time.sleep(0.02)\n"
             f"print('PASS' if os.path.exists({str(seen)!r}) else 'TIMEOUT', file=out)\n")
    lines = []
    for line in _output_lines([sys.executable, "-c", child], tmp_path):
        seen.touch()
        lines.append(line)
    assert lines == ["progress 1", "PASS"]


# ---- the exported network is as accurate as the trained one, by default ----

BUNDLED = {  # every data set the tests can load offline, with a small model of it
    "breast_cancer": ["dataset=breast_cancer", "model=breast_cancer_small", "trainer.epochs=8"],
    "digits": [*SMALL, "model.layers.0.out_features=60", "model.layers.1.out_features=30", "trainer.epochs=2"],
    "synthetic": ["dataset=synthetic", "model=breast_cancer_small", "model.layers.0.out_features=60", "trainer.epochs=4"],
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_the_default_export_scores_as_the_float_model_on_every_bundled_data_set(name, tmp_path, caplog):
    import json

    train(compose([*BUNDLED[name], "trainer.plot=false", "trainer.threads=1"]), tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    run_export(_export_cfg(checkpoint, tmp_path / "out", format="json", vectors=40), tmp_path / "out")
    cost = json.loads((tmp_path / "out" / "cost.json").read_text())
    assert abs(cost["accuracy_float"] - cost["accuracy_frozen"]) <= 0.001, cost
    assert "loses precision" not in caplog.text and "lose precision" not in caplog.text
    # the training values sit on the float model's side of every threshold, bit for bit
    model, encoder, data = _trained(checkpoint)
    net = FrozenNetwork.from_json((tmp_path / "out" / "frozen.json").read_text())
    x, full = data.x_train.flatten(1), freeze(model, encoder, net.input)  # (frozen.json is simplified)
    assert np.array_equal(full.encode(net.input.quantise(x.numpy())), encoder.binarize(x).flatten(1).numpy())
    # dwn-eval's packed engine freezes the same network and says both accuracies
    packed = run_eval(_eval_cfg(checkpoint=str(checkpoint), engine="packed"), tmp_path)
    assert packed == pytest.approx(cost["accuracy_frozen"])
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy_float"] == pytest.approx(cost["accuracy_float"])


def test_a_format_too_coarse_for_the_thresholds_is_warned_of(tmp_path, caplog):
    train(compose([*BUNDLED["breast_cancer"], "trainer.plot=false", "trainer.threads=1"]), tmp_path / "run")
    run_export(_export_cfg(tmp_path / "run" / "checkpoints" / "last.pt", tmp_path / "out", format="json", vectors=40,
                           frac_bits=0), tmp_path / "out")
    assert "the frozen network scores" in caplog.text and "its inputs lose precision" in caplog.text


def test_each_feature_takes_the_fraction_bits_of_one_shared_width():
    """Features of very different ranges: one code width, as narrow as the finest feature needs,
    each feature with the fraction bits its range leaves in it."""
    x = np.array([[0.0, 10.0], [0.001, 30.0], [0.002, 20.0], [0.01, 40.0]])
    t = np.array([[0.0015, 0.005], [15.0, 35.0]])
    # feature 0: 0.002 above 0.0015 first parts at 9 fraction bits (floor 1.02 > floor 0.77), with
    # 2 integer bits (sign): 11 bits; feature 1 needs 7 integer bits and no fraction: 4 to spare
    fmt = InputFormat.infer(x, thresholds=t)
    assert fmt == InputFormat(11, (9, 4), True) and fmt.describe() == "11-bit signed, 4..9 fraction bits by feature"
    q = fmt.quantise(x)
    assert np.array_equal(q > np.floor(t[:, :1].T * fmt.scale), x > t[:, :1].T)
    assert InputFormat.infer(x[:, :1], thresholds=t[:1, :1]) == InputFormat(11, 9, True)  # one feature: one count
    again = FrozenNetwork(fmt, 2, np.zeros((2, 1), dtype=np.int64), [], 2)
    assert FrozenNetwork.from_json(again.to_json()).input == fmt
