"""Sizes read from files, checked against the machine before anything is allocated; numbers
that overflow into NaN or infinity. Each case is one line naming the input, no traceback.

``pbp`` runs as a process under a 2 GiB address-space limit: an allocation the checks
should have prevented then fails (out of memory) instead of quietly succeeding on a large
machine. Where a case needs a file larger than this machine's memory, the process is told
its machine has less (``resources.physical_memory`` replaced), so that the files stay small
or sparse.
"""

import gzip
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from parallel_backprop import BackpropClassifier, TrainingDiverged
from parallel_backprop.cli import main
from parallel_backprop.data import Identity, write_idx
from parallel_backprop.errors import InputError
from parallel_backprop.modelio import Model, save_model
from parallel_backprop.network import Network

LIMIT = 2 * 2**30
MiB = 2**20
SMALL = ["--dataset", "synthetic", "--samples", "300", "--features", "6", "--classes", "3",
         "--net", "6-8-3", "--batch-size", "16", "--epochs", "1", "--quiet"]

# The command, in a process whose machine may be made to look smaller.
RUN = """
import sys
from parallel_backprop import resources
memory = int(sys.argv[1])
if memory:
    resources.physical_memory = lambda: memory
from parallel_backprop.cli import main
sys.exit(main(sys.argv[2:]))
"""


def limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def pbp(args, cwd: Path, memory: int = 0):
    """Run ``pbp ARGS`` under the memory limit; (exit status, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-c", RUN, str(memory), *map(str, args)],
                            cwd=cwd, capture_output=True, text=True, timeout=120,
                            preexec_fn=limit_address_space,
                            env={**os.environ, "PBP_OFFLINE": "1"})
    return result.returncode, result.stdout, result.stderr


def one_line(code, err, *expected):
    assert code == 1, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbp: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


def model_file(path: Path, sizes=(6, 8, 3), activation="sigmoid", params=None) -> Path:
    network = Network(tuple(sizes), (activation,) * (len(sizes) - 1))
    params = network.init_params(0) if params is None else params
    save_model(path, Model(network, params, Identity(sizes[0], 3), ["a", "b", "c"],
                           "synthetic"))
    return path


def rewrite_npz(path: Path, compress=False, **replace) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(replace)
    with open(path, "wb") as handle:
        (np.savez_compressed if compress else np.savez)(handle, **arrays)


def huge_network_arrays(width: int) -> dict:
    """sizes and zero params (deflated to almost nothing) of the network 6-width-3."""
    network = Network((6, width, 3), ("sigmoid", "sigmoid"))
    return {"sizes": np.array(network.sizes), "params": np.zeros(network.n_params, np.float32)}


def checkpoint_folder(tmp_path: Path, capsys) -> Path:
    folder = tmp_path / "run"
    assert main(["train", *SMALL, "--checkpoint-dir", str(folder)]) == 0
    capsys.readouterr()
    return folder


# ---- .npy inputs of pbp predict -----------------------------------------------------------

def test_npy_header_claiming_more_than_the_file_holds(tmp_path):
    model = model_file(tmp_path / "m.npz")
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 784)})
    (tmp_path / "big.npy").write_bytes(header.getvalue() + b"\0" * 64)
    code, _, err = pbp(["predict", model.name, "--input", "big.npy"], tmp_path)
    one_line(code, err, "big.npy: the array claims shape (1000000000000, 784) of float32",
             "more than the 64 bytes stored")


def test_npy_larger_than_memory(tmp_path):
    """A whole, valid (sparse) 240 MB .npy on a machine of 64 MiB: refused from its header."""
    model = model_file(tmp_path / "m.npz")
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**7, 6)})
    path = tmp_path / "large.npy"
    path.write_bytes(header.getvalue())
    with open(path, "r+b") as handle:
        handle.truncate(len(header.getvalue()) + 4 * 6 * 10**7)
    code, _, err = pbp(["predict", model.name, "--input", path.name], tmp_path, memory=64 * MiB)
    one_line(code, err, "large.npy: the array of shape (10000000, 6) and type float32 needs "
             "about 228.9 MiB, more than this machine's 64.0 MiB of memory")


# ---- model files and checkpoints ----------------------------------------------------------

def test_model_whose_network_cannot_fit_in_memory(tmp_path):
    model = model_file(tmp_path / "m.npz")
    rewrite_npz(model, sizes=np.array([6, 10**11, 3]))
    code, _, err = pbp(["predict", model.name, "--input", "x.csv"], tmp_path)
    one_line(code, err, "model file m.npz: net 6-100000000000-3 (1,000,000,000,003 parameters) "
             "needs about", "more than this machine's")


def test_model_parameters_larger_than_memory(tmp_path):
    """160 MB of parameters, deflated to 160 kB, on a machine of 64 MiB."""
    model = model_file(tmp_path / "m.npz")
    rewrite_npz(model, compress=True, **huge_network_arrays(4 * 10**6))
    np.savetxt(tmp_path / "x.csv", np.ones((2, 6)), delimiter=",")
    code, _, err = pbp(["predict", model.name, "--input", "x.csv"], tmp_path, memory=64 * MiB)
    one_line(code, err, "model file m.npz: array 'params' of shape (40000003,) and type float32 "
             "needs about 152.6 MiB, more than this machine's 64.0 MiB of memory")


def test_checkpoint_whose_network_cannot_fit_in_memory(tmp_path, capsys):
    folder = checkpoint_folder(tmp_path, capsys)
    rewrite_npz(max(folder.glob("checkpoint-*.npz")), sizes=np.array([6, 10**11, 3]))
    code, _, err = pbp(["train", "--resume", folder.name], tmp_path)
    one_line(code, err, "net 6-100000000000-3 (1,000,000,000,003 parameters) needs about",
             "more than this machine's")


def test_checkpoint_parameters_larger_than_memory(tmp_path, capsys):
    folder = checkpoint_folder(tmp_path, capsys)
    path = max(folder.glob("checkpoint-*.npz"))
    rewrite_npz(path, compress=True, **huge_network_arrays(4 * 10**6))
    code, _, err = pbp(["train", "--resume", folder.name], tmp_path, memory=64 * MiB)
    one_line(code, err, f"checkpoint {folder.name}/{path.name}: array 'params' of shape "
             "(40000003,)", "more than this machine's 64.0 MiB of memory")


# ---- IDX files ----------------------------------------------------------------------------

def large_idx(path: Path, count: int, compress: bool) -> None:
    """Images of zeros, (count, 28, 28): gzipped to a few MB, or raw and sparse."""
    header = bytes([0, 0, 0x08, 3]) + np.array([count, 28, 28], ">u4").tobytes()
    if not compress:
        path.write_bytes(header)
        with open(path, "r+b") as handle:
            handle.truncate(len(header) + count * 784)
        return
    with open(path, "wb") as handle, gzip.GzipFile(fileobj=handle, mode="wb",
                                                    compresslevel=1, mtime=0) as stream:
        stream.write(header)
        for _ in range(count * 784 // MiB):
            stream.write(bytes(MiB))
        stream.write(bytes(count * 784 % MiB))


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_idx_images_larger_than_memory(compress, tmp_path):
    """627 MB of images (held three times over by an unchecked reader) on 256 MiB."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    large_idx(folder / name, 800_000, compress)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 12, np.uint8), True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz",
              rng.integers(0, 256, (6, 28, 28), np.uint8), True)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 6, np.uint8), True)
    code, _, err = pbp(["train", "--dataset", "mnist", "--data-dir", folder, "--net", "784-8-10",
                        "--epochs", "1"], tmp_path, memory=256 * MiB)
    one_line(code, err, f"{name}: IDX data of shape (800000, 28, 28) and type uint8 needs about "
             "598.1 MiB, more than this machine's 256.0 MiB of memory")


# ---- values that overflow -----------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_predict_input_beyond_float32(suffix, tmp_path):
    model = model_file(tmp_path / "m.npz")
    rows = np.ones((3, 6))
    rows[2, 1] = 1e39
    path = tmp_path / f"rows{suffix}"
    np.save(path, rows) if suffix == ".npy" else np.savetxt(path, rows, delimiter=",")
    code, _, err = pbp(["predict", model.name, "--input", path.name], tmp_path)
    one_line(code, err, f"rows{suffix}: value 1e+39 at sample index 2, feature index 1 is beyond "
             "float32's range")


def test_predict_outputs_that_overflow_name_the_rows(tmp_path):
    """Finite float32 inputs far beyond the training data overflow a ReLU network."""
    model = model_file(tmp_path / "m.npz", activation="relu")
    rows = np.ones((4, 6), np.float32)
    rows[1] = 3e38
    np.save(tmp_path / "rows.npy", rows)
    (tmp_path / "out.csv").write_text("earlier predictions\n")
    code, _, err = pbp(["predict", model.name, "--input", "rows.npy", "--output", "out.csv"],
                       tmp_path)
    one_line(code, err, "rows.npy: the network's outputs are NaN or infinite for 1 of 4 samples "
             "(sample index 1)", "inputs far outside the range the model was trained on")
    assert (tmp_path / "out.csv").read_text() == "earlier predictions\n"


def test_prediction_too_wide_for_one_batch_runs_in_smaller_ones(tmp_path):
    """6-200000-3 at batch 1024 needs 2.4 GB of buffers; on 256 MiB it predicts in small ones."""
    model = model_file(tmp_path / "m.npz", sizes=(6, 200_000, 3))
    np.savetxt(tmp_path / "x.csv", np.ones((2000, 6)), delimiter=",")
    code, out, err = pbp(["predict", model.name, "--input", "x.csv", "--output", "p.npy"], tmp_path,
                         memory=256 * MiB)
    assert code == 0 and err == "", err
    assert out == "predicted 2000 samples\n" and np.load(tmp_path / "p.npy").shape == (2000,)


def fitted(activation="relu"):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 4)), rng.integers(0, 3, 60)
    return BackpropClassifier(hidden_layer_sizes=(8,), activation=activation, max_iter=1,
                              solver="sgd", momentum=0.0, alpha=0.0, random_state=0).fit(x, y)


def test_estimator_outputs_that_overflow_name_the_rows():
    model = fitted()
    x = np.ones((3, 4), np.float32)
    x[2] = 3e38
    for method in (model.predict_proba, model.predict):
        with pytest.raises(InputError, match=r"BackpropClassifier: X: the network's outputs are "
                                             r"NaN or infinite for 1 of 3 samples \(sample "
                                             r"index 2\)"):
            method(x)


def test_estimator_with_diverged_weights():
    model = fitted("sigmoid")
    model.params_ = np.full_like(model.params_, np.nan)
    with pytest.raises(InputError, match="the weights are NaN or infinite: a model from a "
                                         "diverged run"):
        model.predict(np.ones((2, 4)))


def test_training_on_inputs_of_absurd_scale_blames_their_scale():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 4)) * 1e30, rng.integers(0, 3, 60)
    model = BackpropClassifier(hidden_layer_sizes=(8,), activation="relu", max_iter=1,
                               solver="sgd", momentum=0.0, alpha=0.0, learning_rate_init=0.1,
                               batch_size=32)
    with pytest.raises(TrainingDiverged, match=r"the training inputs reach magnitude [0-9.]+e\+30"
                                               r": scale them"):
        model.fit(x, y)


@pytest.mark.parametrize("executor", ["serial", "threads"])
def test_diverging_run_is_one_line_without_numpy_warnings(executor, tmp_path):
    code, _, err = pbp(["train", *SMALL, "--preset", "seed", "--activation", "linear",
                        "--lr", "1e3",
                        "--executor", executor, "--threads", "2" if executor == "threads" else "1"],
                       tmp_path)
    one_line(code, err, "training diverged", "in epoch 1 with learning rate 1000.0")


def test_synthetic_data_with_absurdly_many_classes(tmp_path, capsys):
    """--classes 10**9 (on the command line, or from a resumed checkpoint's options)."""
    code, _, err = pbp(["train", "--dataset", "synthetic", "--samples", "300", "--features", "6",
                        "--classes", "1000000000", "--epochs", "1"], tmp_path)
    one_line(code, err, "synthetic data of 300 + 50 samples x 6 features, 1000000000 classes",
             "over the 8 GiB limit")
    folder = checkpoint_folder(tmp_path, capsys)
    path = max(folder.glob("checkpoint-*.npz"))
    with np.load(path, allow_pickle=False) as archive:
        options = json.loads(str(archive["options"]))
    rewrite_npz(path, options=np.array(json.dumps({**options, "classes": 10**9})))
    code, _, err = pbp(["train", "--resume", folder.name], tmp_path)
    one_line(code, err, "1000000000 classes", "over the 8 GiB limit")
