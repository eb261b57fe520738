"""Adding an executor is one file: registered from a plugin, it runs everywhere executors do.

The toy executor below is written in the test, against the public contract
of ``executors/base.py`` and the reference math of ``backprop.py``; nothing
in the package names it. Registered by ``pbp --plugin``, it must train
through ``pbp train``, be measured by ``pbp bench`` and train the
scikit-learn estimator, each giving what the serial executor gives.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from parallel_backprop import BackpropClassifier
from parallel_backprop.executors import EXECUTORS
from parallel_backprop.plugins import load_plugins

TOY_EXECUTOR = '''\
"""The toy executor: the reference backprop on the caller's thread, nothing else."""

import numpy as np

from parallel_backprop.backprop import Workspace, backward, forward
from parallel_backprop.executors import Executor, register_executor


@register_executor
class ToyExecutor(Executor):
    name = "toy"

    def __init__(self, network, params, *, batch_size, threads=1):
        super().__init__(network, params, batch_size=batch_size, threads=threads)
        self._params = np.array(params, copy=True)
        self._layers = network.layers(self._params)
        self._ws = Workspace(network, batch_size, self._params.dtype)

    def step(self, x, y, lr):
        forward(self._layers, x, self._ws)
        return backward(self._layers, x, y, self._ws, update_scale=lr / x.shape[0])

    def predict(self, x):
        out = np.empty((x.shape[0], self.network.sizes[-1]), self._params.dtype)
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            out[start:start + len(chunk)] = forward(self._layers, chunk, self._ws)
        return out

    def params(self):
        return self._params.copy()
'''

RUN = ["--preset", "seed", "--dataset", "synthetic", "--samples", "400", "--features", "12",
       "--classes", "3", "--net", "12-16-3", "--batch-size", "32", "--epochs", "2", "--lr", "0.5",
       "--quiet"]


@pytest.fixture
def toy_plugin(tmp_path):
    path = tmp_path / "toy_executor_plugin.py"
    path.write_text(TOY_EXECUTOR)
    return path


def pbp(*argv, cwd):
    result = subprocess.run([sys.executable, "-m", "parallel_backprop.cli", *map(str, argv)],
                            capture_output=True, text=True, timeout=300, cwd=cwd,
                            env={**os.environ, "PBP_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    return result


def test_toy_executor_trains_through_pbp_train_like_serial(toy_plugin, tmp_path):
    pbp("--plugin", toy_plugin, "train", *RUN, "--executor", "toy", "--save", "toy.npz",
        cwd=tmp_path)
    pbp("train", *RUN, "--executor", "serial", "--save", "serial.npz", cwd=tmp_path)
    with np.load(tmp_path / "toy.npz") as toy, np.load(tmp_path / "serial.npz") as serial:
        assert np.array_equal(toy["params"], serial["params"])
        assert json.loads(str(toy["metadata"]))["executor"] == "toy"


def test_toy_executor_is_measured_by_pbp_bench(toy_plugin, tmp_path):
    pbp("--plugin", toy_plugin, "bench", "--systems", "serial,toy", "--nets", "20-16-3",
        "--batch-sizes", "8", "--threads", "1", "--warmup", "0", "--min-time", "0.01",
        "--repeats", "1", "--gemm-size", "64", "--no-plots", "--quiet", "--out", "out",
        cwd=tmp_path)
    records = json.loads((tmp_path / "out" / "bench.json").read_text())["records"]
    toy = next(r for r in records if r["system"] == "toy")
    serial = next(r for r in records if r["system"] == "serial")
    assert toy["kind"] == "executor" and toy["status"] == "ok", toy["notes"]
    assert toy["speedup_vs_serial"] == pytest.approx(toy["samples_per_s"]
                                                     / serial["samples_per_s"])


def test_toy_executor_trains_the_estimator_like_serial(toy_plugin, monkeypatch):
    monkeypatch.setitem(EXECUTORS, "toy", None)     # out of the registry again on teardown
    load_plugins([str(toy_plugin)])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    settings = dict(hidden_layer_sizes=(8,), batch_size=16, max_iter=3, random_state=1,
                    solver="sgd", momentum=0.0, alpha=0.0)   # plain SGD: all the toy applies
    toy = BackpropClassifier(executor="toy", **settings).fit(x, y)
    serial = BackpropClassifier(**settings).fit(x, y)
    assert np.array_equal(toy.params_, serial.params_)
    assert np.array_equal(toy.predict(x), serial.predict(x))
