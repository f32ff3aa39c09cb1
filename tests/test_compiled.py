"""The compiled packed engine (dwn_train/export/compiled.py, built by export/cbuild.py): bit for bit
the frozen network's contract (the float model, the reference evaluation and the numpy engine agree
with it), any batch size, any number of threads, a disk cache that is reused and invalidated, a
temporary folder when the cache cannot be written, numpy when no C compiler is found, a CC with
flags used as written, and a CC that names no compiler refused."""

import logging
import shutil
import subprocess

import numpy as np
import pytest
import torch

import dwn_train as dwn
from dwn_train.errors import DWNError
from dwn_train.export import cbuild, compiled
from dwn_train.export.freeze import FrozenLayer, FrozenNetwork, InputFormat, freeze
from dwn_train.export.packed import predict_packed
from dwn_train.export.freeze import float_predictions
from helpers.frozen import signed_fixed_point_model, tie_network

needs_cc = pytest.mark.skipif(cbuild.find_compiler() is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test builds into one cache folder of this session, not the user's."""
    monkeypatch.setenv("DWN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dwn-cache"))


def _forget() -> None:
    """What this process remembers of built engines (the disk cache stays)."""
    for memo in (cbuild._LIBRARIES, compiled._KEYS, cbuild._FAILED, cbuild._WARNED):
        memo.clear()


@pytest.fixture(scope="module")
def byte_model():
    """(model, encoder, net, codes) of a small two-layer model on 8-bit features, 70 features so
    that the second chunk of 64 is partial; untrained tables are as good as trained ones here."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).integers(0, 256, size=(1500, 70))
    encoder = dwn.DistributiveThermometer(3).fit(torch.from_numpy(x).float())
    model = torch.nn.Sequential(dwn.LUTLayer(210, 90, n=6), dwn.LUTLayer(90, 45, n=5), dwn.GroupSum(4)).eval()
    return model, encoder, freeze(model, encoder, InputFormat(8, 0, False)), x


@needs_cc
@pytest.mark.parametrize("count", [1, 63, 511, 513, 1500])
@pytest.mark.parametrize("threads", [1, 4])
def test_equals_float_model_and_numpy_engine(byte_model, count, threads):
    model, encoder, net, x = byte_model
    q = x[:count]
    classes, scores = compiled.predict(net, q, threads=threads)
    assert np.array_equal(scores, net.scores(q)) and np.array_equal(scores, predict_packed(net, q)[1])
    assert np.array_equal(classes, float_predictions(model, encoder, net, q))


@needs_cc
def test_inputs_of_every_kind_give_the_same_classes(byte_model):
    _, _, net, x = byte_model
    expected = net.predict(x)
    for q in (x, x.astype(np.uint8), torch.from_numpy(x), x.astype(np.int16)):
        assert np.array_equal(compiled.predict(net, q, scores=False)[0], expected)
    for real in (x.astype(np.float32), torch.from_numpy(x).float(), x.astype(np.float64)):
        classes, scores = compiled.predict_features(net, real)
        assert np.array_equal(classes, expected) and np.array_equal(scores, net.scores(x))
    classes, scores = compiled.predict(net, x[:0])
    assert classes.shape == (0,) and scores.shape == (0, 4)


@needs_cc
def test_bad_inputs_are_named(byte_model):
    _, _, net, x = byte_model
    with pytest.raises(DWNError, match="expects 70 features"):
        compiled.predict(net, x[:, :69])
    with pytest.raises(DWNError, match=r"must lie in 0\.\.255"):
        compiled.predict(net, x - 1)
    real = x.astype(np.float32)
    real[700, 3] = np.nan
    with pytest.raises(DWNError, match=r"input \(700, 3\) is NaN"):
        compiled.predict_features(net, real)


@needs_cc
def test_the_disk_cache_is_reused_and_invalidated(byte_model, monkeypatch):
    _, _, net, x = byte_model
    compiled.library(net)
    cache, cc = cbuild.cache_dir(), cbuild.find_compiler()
    built = set(cache.glob("*.so"))
    _forget()
    with monkeypatch.context() as patch:
        patch.setattr(cbuild, "_compile", lambda *args: pytest.fail("the cached library was not reused"))
        assert np.array_equal(compiled.predict(net, x)[1], net.scores(x))
    changed = FrozenNetwork(net.input, net.num_features, net.thresholds,
                            [FrozenLayer(net.layers[0].wiring, 1 - net.layers[0].tables), net.layers[1]], 4)
    assert compiled.cache_key(changed, cc) != compiled.cache_key(net, cc)
    assert np.array_equal(compiled.predict(changed, x)[1], changed.scores(x))  # a new build, not the old one
    assert len(set(cache.glob("*.so")) - built) == 1
    before = compiled.cache_key(net, cc)
    monkeypatch.setattr(cbuild, "FLAGS", cbuild.FLAGS + ("-DDWN_UNUSED",))  # other flags, another key
    assert compiled.cache_key(net, cc) != before and compiled._key(net, cc) != before


def test_without_a_compiler_numpy_answers_after_one_warning(byte_model, monkeypatch, caplog):
    _, _, net, x = byte_model
    _forget()
    monkeypatch.setattr(cbuild, "find_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger="dwn_train"):
        first = compiled.predict(net, x[:100])
        second = compiled.predict_features(net, x[:100].astype(np.float32), scores=False)
    assert np.array_equal(first[1], net.scores(x[:100])) and np.array_equal(second[0], net.predict(x[:100]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "numpy" in warnings[0] and "no C compiler" in warnings[0]
    _forget()


def _packed_eval(run_cli, tiny_run, run_dir):
    """dwn-eval engine=packed on the tiny run: (code, out + err, the predictions it wrote or None)."""
    code, out, err = run_cli("eval", f"checkpoint={tiny_run}/checkpoints/last.pt", "engine=packed",
                             "save_predictions=true", f"hydra.run.dir={run_dir}")
    written = run_dir / "predictions.csv"
    return code, out + err, written.read_text() if written.exists() else None


@pytest.fixture
def fresh_memos(monkeypatch):
    """This process forgets the engines it built, for this test only (the disk cache stays)."""
    for name in ("_LIBRARIES", "_FAILED", "_TEMPORARY"):
        monkeypatch.setattr(cbuild, name, {})
    monkeypatch.setattr(compiled, "_KEYS", {})
    monkeypatch.setattr(cbuild, "_WARNED", set())


@pytest.fixture
def float_predictions_csv(run_cli, tiny_run, tmp_path):
    """predictions.csv of dwn-eval engine=float on the tiny run: what engine=packed must give."""
    code, out, err = run_cli("eval", f"checkpoint={tiny_run}/checkpoints/last.pt", "save_predictions=true",
                             f"hydra.run.dir={tmp_path}/float")
    assert code == 0, out + err
    return (tmp_path / "float" / "predictions.csv").read_text()


@needs_cc
def test_an_unwritable_cache_folder_falls_back_to_a_temporary_folder(run_cli, tiny_run, tmp_path, monkeypatch,
                                                                     fresh_memos, float_predictions_csv):
    """DWN_CACHE_DIR under /proc (unwritable even for root): the engine is built in a private
    temporary folder after one warning naming DWN_CACHE_DIR, and gives the float model's classes."""
    monkeypatch.setenv("DWN_CACHE_DIR", "/proc/dwn-cache")
    code, output, predictions = _packed_eval(run_cli, tiny_run, tmp_path / "packed")
    assert code == 0 and "Traceback" not in output, output
    assert output.count("DWN_CACHE_DIR") == 1 and output.count("WARNING") == 1, output
    assert "cache folder /proc/dwn-cache/compiled cannot be used" in output and "numpy" not in output
    assert predictions == float_predictions_csv
    assert list(cbuild._TEMPORARY["folder"].glob("*.so"))  # built there, not given up for numpy


def test_when_no_folder_can_hold_the_engine_numpy_answers(run_cli, tiny_run, tmp_path, monkeypatch, fresh_memos,
                                                          float_predictions_csv):
    """Neither the cache folder nor the temporary folder can be written: one warning naming
    DWN_CACHE_DIR and numpy, and the same classes."""
    import tempfile

    monkeypatch.setenv("DWN_CACHE_DIR", "/proc/dwn-cache")
    monkeypatch.setattr(tempfile, "tempdir", "/proc/dwn-tmp")
    code, output, predictions = _packed_eval(run_cli, tiny_run, tmp_path / "packed")
    assert code == 0 and "Traceback" not in output, output
    assert output.count("WARNING") == 1 and "DWN_CACHE_DIR" in output and "runs in numpy" in output, output
    assert predictions == float_predictions_csv


@needs_cc
def test_a_damaged_cached_library_is_named_and_the_engine_built_elsewhere(byte_model, tmp_path, monkeypatch,
                                                                          fresh_memos, caplog):
    _, _, net, x = byte_model
    monkeypatch.setenv("DWN_CACHE_DIR", str(tmp_path))
    damaged = cbuild.cache_dir() / f"{compiled._key(net, cbuild.find_compiler())}.so"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a library")
    with caplog.at_level(logging.WARNING, logger="dwn_train"):
        assert np.array_equal(compiled.predict(net, x)[1], net.scores(x))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{damaged} does not load" in warnings[0], warnings
    assert "delete it to rebuild" in warnings[0] and "DWN_CACHE_DIR" in warnings[0]
    assert damaged.read_bytes() == b"not a library"  # named, not removed behind the user's back


def test_a_cc_that_names_no_compiler_is_refused(run_cli, tiny_run, tmp_path, monkeypatch, fresh_memos):
    """CC is what the user asked for: not found, it is named (exit 2), not replaced by another compiler."""
    from helpers.runs import clean

    monkeypatch.setenv("CC", "/nonexistent/cc")
    code, output, predictions = _packed_eval(run_cli, tiny_run, tmp_path / "packed")
    clean(code, output, "", 2, "CC=/nonexistent/cc names no compiler on the PATH; install it, or unset CC")
    assert predictions is None and not (tmp_path / "packed" / "metrics.json").exists()
    with pytest.raises(DWNError, match="CC=/nonexistent/cc names no compiler"):
        cbuild.find_compiler()



REAL_CC = shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(REAL_CC is None, reason="no cc or gcc on the PATH")
def test_a_cc_with_flags_builds_with_them(byte_model, tmp_path, monkeypatch, fresh_memos):
    """CC as autotools reads it: the first word is the program, the others go before our flags on its
    command line, and the key covers them (another CC, another library)."""
    _, _, net, x = byte_model
    monkeypatch.setenv("DWN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", f"{REAL_CC} -O2")
    cc = cbuild.find_compiler()
    assert cc == (REAL_CC, "-O2") and compiled.cache_key(net, cc) != compiled.cache_key(net, (REAL_CC,))
    commands, run = [], subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: commands.append(args) or run(args, **kw))
    classes, scores = compiled.predict(net, x)
    assert commands and commands[0][:3] == [REAL_CC, "-O2", cbuild.FLAGS[0]], commands
    assert np.array_equal(scores, net.scores(x)) and np.array_equal(scores, predict_packed(net, x)[1])
    assert np.array_equal(classes, net.predict(x))


def test_a_cc_whose_first_word_names_no_program_is_refused(monkeypatch):
    monkeypatch.setenv("CC", "nonexistent-cc -O2")
    with pytest.raises(DWNError, match=r"^CC='nonexistent-cc -O2' names no compiler on the PATH \(its first word, "
                                       r"nonexistent-cc, is the program\); install it, or unset CC"):
        cbuild.find_compiler()
    monkeypatch.setenv("CC", 'gcc "-O2')
    with pytest.raises(DWNError, match="cannot be split into words"):
        cbuild.find_compiler()

def _odd_network() -> FrozenNetwork:
    """Everything the simplifier folds: thresholds outside the code range (constant bits), a LUT
    reading one signal twice, a LUT ignoring an input, constant LUTs, a LUT-8 (split in LUT-6s),
    LUT-1s and LUT-2s, and a last layer holding constants and wires."""
    rng = np.random.default_rng(5)
    thresholds = np.array([[-1, 40, 255], [10, 100, 200], [0, 128, 254], [-1, -1, 255]])  # codes 0..255
    first = FrozenLayer(rng.integers(0, 12, size=(40, 8)), rng.integers(0, 2, size=(40, 256)).astype(np.uint8))
    first.wiring[0, 3] = first.wiring[0, 5]  # one signal read twice
    first.tables[1] = np.tile(first.tables[1].reshape(-1, 2)[:, :1], 2).reshape(-1)  # ignores input 0
    first.tables[2] = 0  # constant
    second = FrozenLayer(rng.integers(0, 40, size=(12, 2)), rng.integers(0, 2, size=(12, 4)).astype(np.uint8))
    second.tables[0], second.tables[1], second.wiring[2] = [0, 1, 0, 1], 1, [2, 2]  # a wire, a constant, ...
    third = FrozenLayer(rng.integers(0, 12, size=(9, 1)), np.tile([[0, 1], [1, 0]], (5, 1))[:9].astype(np.uint8))
    return FrozenNetwork(InputFormat(8, 0, False), 4, thresholds, [first, second, third], 3)


@needs_cc
@pytest.mark.slow
def test_simplified_networks_keep_their_function():
    net = _odd_network()
    q = np.random.default_rng(6).integers(0, 256, size=(700, 4))
    q[:5] = [[0, 0, 0, 0], [255, 255, 255, 255], [40, 100, 128, 7], [41, 101, 129, 0], [254, 200, 254, 255]]
    prog = compiled.program(net)
    assert all(len(inputs) == 6 for _, inputs in prog.luts)
    classes, scores = compiled.predict(net, q, threads=2)
    assert np.array_equal(scores, net.scores(q)) and np.array_equal(classes, net.predict(q))


@needs_cc
@pytest.mark.slow
@pytest.mark.parametrize("bit", [0, 1])
def test_ties_go_to_the_lowest_class(bit):
    net = tie_network(bit)
    classes, scores = compiled.predict(net, np.random.default_rng(2).integers(0, 256, size=(70, 2)))
    assert (classes == 0).all() and (scores == 2 * bit).all()


@needs_cc
@pytest.mark.slow
def test_signed_fixed_point_features_quantise_inside_the_engine():
    x, encoder, model = signed_fixed_point_model(900)
    fmt = InputFormat.infer(x)
    net = freeze(model, encoder, fmt)
    step = 2.0 ** -fmt.frac_bits
    x[:5] = [[1e9] * 6, [-np.inf] * 6, [np.inf] * 6, [0.5 * step] * 6, [-2.5 * step] * 6]  # saturated, ties to even
    q = fmt.quantise(x)
    assert np.array_equal(compiled.predict(net, q)[0], float_predictions(model, encoder, net, q))
    _, scores = compiled.predict_features(net, x.astype(np.float32), threads=3)
    assert np.array_equal(scores, net.scores(fmt.quantise(x.astype(np.float32))))


AVX512_NO_GFNI = ("-march=skylake-avx512",)  # AVX-512 compares, the portable transpose


@needs_cc
@pytest.mark.slow
@pytest.mark.parametrize("march", [(), AVX512_NO_GFNI], ids=["portable", "avx512-without-gfni"])
def test_the_other_c_paths_agree(byte_model, monkeypatch, march):
    """The template without -march=native: plain vector C, or AVX-512 without VBMI and GFNI."""
    if march and " avx512bw" not in cbuild._machine():
        pytest.skip("this CPU has no AVX-512")
    _, _, net, x = byte_model
    monkeypatch.setattr(cbuild, "FLAGS", cbuild.PORTABLE_FLAGS + march)
    classes, scores = compiled.predict(net, x, threads=2)
    assert np.array_equal(scores, net.scores(x))


def test_simplification_counts_for_the_cost_table():
    """Bits 0 and 1 compare feature 0 with the same threshold (one comparator, so LUT 0, their OR, is
    a wire of bit 0), bit 2's threshold is above every code (a constant 0), LUT 1 reads bit 3 twice (a
    wire), LUT 2 reads the constant and becomes constant (and nothing reads it); in the last layer,
    LUT 1 reads one input twice."""
    from dwn_train.export.simplify import counts

    thresholds = np.array([[10, 10, 300], [5, 50, 60]])
    first = FrozenLayer(np.array([[0, 1], [3, 3], [2, 4]]),
                        np.array([[0, 1, 1, 1], [0, 0, 0, 1], [0, 1, 0, 1]], dtype=np.uint8))
    last = FrozenLayer(np.array([[0, 1], [1, 1]]), np.array([[0, 1, 1, 0], [0, 0, 0, 1]], dtype=np.uint8))
    net = FrozenNetwork(InputFormat(8, 0, False), 2, thresholds, [first, last], 2)
    assert counts(net) == {"comparators_before": 6, "comparators_after": 2, "luts_before": 5, "luts_after": 4,
                           "lut_inputs_before": 10, "lut_inputs_after": 5}
