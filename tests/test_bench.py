"""`pbp bench` end to end on a tiny grid, its outputs, and bad options.

Timings are never asserted: the grid is tiny and the machine shared. What is
checked is the harness: every configuration accounted for, the JSON schema,
the CSV rows, the plots, speedups against serial, skipped peers recorded.
"""

import contextlib
import csv
import importlib.util
import io
import json
from dataclasses import replace

import numpy as np
import pytest

from parallel_backprop import Network
from parallel_backprop.backprop import gradient
from parallel_backprop.bench import report, run_bench, runner, systems
from parallel_backprop.bench.config import BenchConfig, Timing
from parallel_backprop.bench.report import CSV_COLUMNS
from parallel_backprop.bench.systems import (SYSTEMS, Pool, Setup, availability, build,
                                             describe_systems, naive_step)
from parallel_backprop.cli import main
from parallel_backprop.errors import PbpError
from parallel_backprop.executors import EXECUTORS
from parallel_backprop.harness import Measurement, is_ok
from parallel_backprop.plugins import load_plugins

# 20-16-3 network, batches of 4 and 8, 1 and 2 threads, each round a few ms.
TINY = ["--nets", "20-16-3", "--batch-sizes", "4,8", "--threads", "1,2", "--warmup", "0",
        "--min-time", "0.002", "--repeats", "2", "--gemm-size", "64", "--epoch-samples", "1000",
        "--timeout", "120"]
RECORD_KEYS = {"system", "kind", "status", "notes", "net", "net_name", "batch_size", "threads",
               "workers", "blas_threads", "samples_per_s", "epoch_s", "gflops",
               "speedup_vs_serial", "efficiency"}
PLOTS = ("epoch_time.png", "gflops.png", "speedup.png", "speedup_threads.png")


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """One tiny grid through the CLI, with JAX made to look uninstalled."""
    out = tmp_path_factory.mktemp("bench")
    real = systems.missing_modules
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(systems, "missing_modules",
                      lambda system: ["jax"] if system.name == "jax" else real(system))
        code, stdout, stderr = run_cli(["bench", *TINY, "--out", out,
                                        "--systems", "serial,threads,hybrid,jax,gemm"])
    assert code == 0, stderr
    return out, json.loads((out / "bench.json").read_text()), stdout


def test_json_has_the_environment_and_one_record_per_configuration(tiny_grid):
    _, doc, _ = tiny_grid
    assert doc["schema"] == "parallel-backprop/bench/1"
    assert doc["command"][:2] == ["pbp", "bench"] and not doc["interrupted"]
    env = doc["environment"]
    for key in ("cpu_model", "logical_cpus", "usable_cpus", "blas", "versions", "git", "date",
                "load_average"):
        assert key in env
    assert env["versions"]["numpy"] and env["blas"]
    from parallel_backprop import compiled
    assert env["compiled"]["_kernels"] == (compiled.kernels is not None)
    keys = {(r["system"], r["batch_size"], r["threads"]) for r in doc["records"]}
    # serial once per batch at one thread; the others at every thread count; gemm per count.
    assert keys == ({("serial", b, 1) for b in (4, 8)}
                    | {(s, b, t) for s in ("threads", "hybrid", "jax") for b in (4, 8)
                       for t in (1, 2)}
                    | {("gemm", None, t) for t in (1, 2)})
    for r in doc["records"]:
        assert RECORD_KEYS <= r.keys()


def test_records_read_back_as_typed_records_with_the_same_keys(tiny_grid):
    _, doc, _ = tiny_grid
    for r in doc["records"]:
        record = Measurement.from_dict(r)
        assert record.to_dict() == r and record.ok == is_ok(r) == (r["status"] == "ok")


def test_measured_records_have_consistent_metrics(tiny_grid):
    _, doc, _ = tiny_grid
    ok = [r for r in doc["records"] if r["status"] == "ok" and r["kind"] != "ceiling"]
    assert {r["system"] for r in ok} == {"serial", "threads"}
    ceiling = doc["ceilings"]["gemm"]
    for r in ok:
        assert r["net"] == "20-16-3" and r["samples_per_s"] > 0 and r["gflops"] > 0
        assert r["epoch_s"] == pytest.approx(1000 / r["samples_per_s"])
        assert r["samples_per_s_best"] >= r["samples_per_s"]
        assert len(r["step_s_rounds"]) == 2 and r["steps_per_round"] >= 1
        # 20-16-3: 2 * (2 * (20*16 + 16*3) + 16*3) FLOPs per sample.
        assert r["gflops"] == pytest.approx(r["samples_per_s"] * 1568 / 1e9)
        assert r["efficiency"] == pytest.approx(r["gflops"] / ceiling[str(r["threads"])])
        assert any(pool["user_api"] == "blas" for pool in r["threadpools"])
        assert r["cores_busy"] > 0
    serial = {r["batch_size"]: r for r in ok if r["system"] == "serial"}
    for r in ok:
        expected = r["samples_per_s"] / serial[r["batch_size"]]["samples_per_s"]
        assert r["speedup_vs_serial"] == pytest.approx(expected)
    assert all(r["speedup_vs_serial"] == 1.0 for r in serial.values())


def test_thread_settings_reach_the_worker(tiny_grid):
    _, doc, _ = tiny_grid
    threads = [r for r in doc["records"] if r["system"] == "threads" and r["status"] == "ok"]
    assert {r["workers"] for r in threads} == {1, 2}
    # The threads executor pins BLAS to one thread per worker.
    for r in threads:
        assert r["blas_threads"] == 1
        assert all(p["num_threads"] == 1 for p in r["threadpools"] if p["user_api"] == "blas")


def test_unavailable_systems_are_skipped_with_a_reason(tiny_grid):
    _, doc, stdout = tiny_grid
    jax = [r for r in doc["records"] if r["system"] == "jax"]
    assert jax and all(r["status"] == "skipped" and r["samples_per_s"] is None for r in jax)
    assert "jax is not installed (pip install -e '.[compare]')" in jax[0]["notes"]
    hybrid = [r for r in doc["records"] if r["system"] == "hybrid"]
    assert all(r["status"] == "skipped" and "no split" in r["notes"][-1] for r in hybrid)
    assert any(note.startswith("jax skipped: jax is not installed") for note in doc["notes"])
    assert "note: jax skipped: jax is not installed" in stdout


def test_csv_has_a_row_per_record(tiny_grid):
    out, doc, _ = tiny_grid
    with open(out / "bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == len(doc["records"])
    serial = [row for row in rows if row["system"] == "serial"]
    assert {float(row["speedup_vs_serial"]) for row in serial} == {1.0}


def test_plots_are_written(tiny_grid):
    out, doc, _ = tiny_grid
    assert doc["plots"] == list(PLOTS)
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_replot_redraws_from_the_json(tiny_grid, tmp_path):
    out, _, _ = tiny_grid
    code, stdout, err = run_cli(["bench", "--replot", out / "bench.json", "--out", tmp_path])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOTS)
    assert "20-16-3: samples/s (speedup over serial)" in stdout
    code, _, err = run_cli(["bench", "--replot", out / "bench.csv", "--out", tmp_path])
    assert code == 1 and err.startswith(f"pbp: error: --replot {out / 'bench.csv'}: cannot read")


def test_summary_table_is_printed(tiny_grid):
    _, _, stdout = tiny_grid
    assert "20-16-3: samples/s (speedup over serial)" in stdout
    assert "(1.00x)" in stdout and "gemm ceiling, GFLOP/s" in stdout
    assert "fp32 speedup over serial (share of the gemm ceiling's gain: " in stdout
    assert "  20-16-3 batch 8: threads 2 thr " in stdout


def test_scaling_is_each_speedup_over_the_ceilings_own_gain():
    def record(system, threads, speedup, **fields):
        return {"system": system, "kind": "executor", "status": "ok", "net": "1h",
                "batch_size": 1024, "threads": threads, "speedup_vs_serial": speedup,
                "precision": "fp32", "optimizer": "sgd", **fields}

    doc = {"ceilings": {"gemm": {"1": 160.0, "2": 328.0}},
           "records": [record("serial", 1, 1.0), record("threads", 1, 0.98),
                       record("threads", 2, 1.85), record("blas", 2, 1.64, optimizer="adam"),
                       record("threads", 2, 4.1, precision="bf16"),
                       record("hybrid", 2, None, status="failed")]}
    assert report.scaling(doc) == [
        "fp32 speedup over serial (share of the gemm ceiling's gain: 2.05x at 2 thr)",
        "  1h batch 1024: threads 2 thr 1.85x (90%), blas adam 2 thr 1.64x (80%)"]
    assert report.scaling({**doc, "ceilings": {"gemm": {"2": 328.0}}}) == []
    assert report.scaling({**doc, "ceilings": {}}) == []


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_torch_peer_runs_the_same_work(tmp_path):
    code, _, err = run_cli(["bench", *TINY, "--threads", "1", "--batch-sizes", "8",
                            "--systems", "serial,torch", "--no-plots", "--quiet",
                            "--out", tmp_path])
    assert code == 0, err
    doc = json.loads((tmp_path / "bench.json").read_text())
    torch, serial = (next(r for r in doc["records"] if r["system"] == system)
                     for system in ("torch", "serial"))
    assert torch["status"] == "ok", torch["notes"]
    assert torch["speedup_vs_serial"] == pytest.approx(
        torch["samples_per_s"] / serial["samples_per_s"])
    assert "torch.set_num_threads(1)" in torch["notes"]
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py not installed")
def test_mpi_ranks_agree_on_the_number_of_steps(tmp_path):
    code, _, err = run_cli(["bench", *TINY, "--threads", "2", "--batch-sizes", "8",
                            "--systems", "mpi", "--timeout", "60", "--no-plots", "--quiet",
                            "--out", tmp_path])
    assert code == 0, err
    record = json.loads((tmp_path / "bench.json").read_text())["records"][0]
    if record["status"] == "skipped":       # no mpiexec here
        pytest.skip(record["notes"][-1])
    assert record["status"] == "ok", record["notes"]
    assert record["ranks"] == 2 and record["samples_per_s"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--systems", "serial,nope"], "--systems 'nope': expected some of serial"),
    (["--batch-sizes", "0"], "--batch-sizes 0: expected a positive integer"),
    (["--batch-sizes", "4,x"], "--batch-sizes '4,x': expected positive integers"),
    (["--threads", ","], "--threads ',': expected a comma-separated list"),
    (["--nets", "20-x-3"], "--nets '20-x-3': expected sizes joined by '-'"),
    (["--repeats", "0"], "'--repeats': 0 is not in the range"),
    (["--passes", "0"], "'--passes': 0 is not in the range"),
    (["--warmup", "-1"], "'--warmup': -1.0 is not in the range"),
])
def test_bad_options_give_one_line_errors(argv, message, tmp_path):
    code, stdout, stderr = run_cli(["bench", *argv, "--out", tmp_path / "out"])
    assert code != 0
    assert stderr.startswith("pbp: error: ") and message in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()     # nothing ran


def not_run(run, config, scratch, plugins=()):
    """A stand-in for runner.execute that measures nothing: the record of a failed run."""
    record = run.record()
    record.fail("not run in this test")
    return record


def test_ctrl_c_writes_what_was_measured(tmp_path, monkeypatch):
    calls = []

    def execute(run, config, scratch, plugins=()):
        calls.append(run)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return not_run(run, config, scratch, plugins)

    monkeypatch.setattr(runner, "execute", execute)
    code, _, stderr = run_cli(["bench", *TINY, "--systems", "serial", "--quiet",
                               "--out", tmp_path])
    assert code == 130
    assert stderr.strip() == f"pbp: interrupted: what was measured is in {tmp_path}"
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["interrupted"] and len(doc["records"]) == 1


def test_out_must_be_a_folder(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    code, _, stderr = run_cli(["bench", *TINY, "--systems", "serial", "--out", target])
    assert code == 1 and stderr == f"pbp: error: --out {target}: is a file, expected a folder\n"


def test_list_systems_names_every_system():
    code, stdout, _ = run_cli(["bench", "--list-systems"])
    assert code == 0
    assert [line.split()[0] for line in stdout.splitlines()] == list(SYSTEMS)


def test_plan_runs_serial_once_and_splits_hybrid():
    config = BenchConfig(systems=("serial", "hybrid", "jax"), nets=("20-16-3",),
                         batch_sizes=(8,), threads=(4, 6), timing=Timing(0, 0, 1))
    runs = {(r.system, r.threads): r for r in runner.plan(config)}
    assert set(runs) == {("serial", 1), ("hybrid", 4), ("hybrid", 6), ("jax", 4), ("jax", 6)}
    assert (runs["hybrid", 4].workers, runs["hybrid", 4].executor_blas_threads) == (2, 2)
    assert (runs["hybrid", 6].workers, runs["hybrid", 6].executor_blas_threads) == (3, 2)
    assert runs["hybrid", 6].process_threads == 2
    split = replace(config, threads=(3, 6, 8), hybrid_blas_threads=4)
    runs = {(r.system, r.threads): r for r in runner.plan(split)}
    assert (runs["hybrid", 8].workers, runs["hybrid", 8].executor_blas_threads) == (2, 4)
    assert "--blas-threads 4" in runs["hybrid", 6].skip and "no split" in runs["hybrid", 6].skip
    assert "no split" in runs["hybrid", 3].skip


def test_quick_preset_and_explicit_options():
    quick = BenchConfig.preset(True)
    assert quick.nets == ("1h", "2h") and quick.batch_sizes == (128, 1024)
    assert quick.threads[0] == 1 and quick.timing.repeats == 3
    chosen = BenchConfig.preset(True, batch_sizes=(64,), repeats=7, systems=None)
    assert chosen.batch_sizes == (64,) and chosen.timing.repeats == 7
    assert chosen.timing.warmup_s == quick.timing.warmup_s and chosen.systems == quick.systems


def test_naive_step_matches_the_reference_update():
    network = Network((5, 4, 3), ("sigmoid", "sigmoid"))
    params = network.init_params(0, np.float64)
    pool = Pool.make(network, 3, 6, 6, seed=1)
    x, y = pool.x.astype(np.float64), pool.y.astype(np.float64)
    _, grad = gradient(network, params, x[:6], y[:6])
    naive = params.copy()
    naive_step(network.layers(naive), x[:6], y[:6], 0.5)
    np.testing.assert_allclose(naive, params - 0.5 / 6 * grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("system", ["serial", "threads", "numpy", "sklearn", "gemm"])
def test_workloads_take_any_number_of_steps_round_the_pool(system):
    if SYSTEMS[system].requires and importlib.util.find_spec(SYSTEMS[system].requires[0]) is None:
        pytest.skip(f"{system} not installed")
    network = Network((6, 5, 3), ("sigmoid", "sigmoid"))
    setup = Setup(system=system, network=network, n_classes=3, batch_size=4, threads=2,
                  executor_threads=2, executor_blas_threads=1, lr=0.1, seed=0,
                  pool_samples=8, gemm_size=8)
    workload = build(setup)
    try:
        for k in (1, 2, 3, 5):        # the pool holds 2 batches: most calls wrap round it
            workload.run(k)
    finally:
        workload.close()
    expected = 2 * 8 ** 3 if system == "gemm" else network.train_flops_per_sample() * 4
    assert workload.flops_per_step == expected
    assert workload.samples_per_step == (0 if system == "gemm" else 4)



TOY_PLUGIN = '''"""The toy executor: the serial executor under another name, from a plugin."""

from parallel_backprop.executors import SerialExecutor, register_executor


@register_executor
class ToyExecutor(SerialExecutor):
    name = "toy"
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """A plugin file that registers the executor ``toy``, loaded here; unregistered after."""
    path = tmp_path / "toy_plugin.py"
    path.write_text(TOY_PLUGIN)
    monkeypatch.setitem(EXECUTORS, "toy", None)     # taken out of the registry on teardown
    load_plugins([str(path)])
    return str(path)


def test_an_executor_registered_by_a_plugin_is_planned_listed_and_measured(toy_plugin, tmp_path):
    assert SYSTEMS["toy"].kind == "executor" and "toy executor" in SYSTEMS["toy"].description
    assert "toy" in BenchConfig().systems
    config = BenchConfig(systems=("serial", "toy"), nets=("20-16-3",), batch_sizes=(8,),
                         threads=(1, 2), timing=Timing(0, 0.002, 2), gemm_size=64)
    # Like serial, it uses one core whatever it is given: once per batch, at one thread.
    assert [(r.system, r.threads) for r in runner.plan(config)] == [("serial", 1), ("toy", 1)]
    code, stdout, _ = run_cli(["bench", "--list-systems"])
    assert code == 0 and "toy" in [line.split()[0] for line in stdout.splitlines()]
    # The worker processes import the plugin too, or they would not know "toy".
    doc = run_bench(config, tmp_path / "out", plots=False, progress=False,
                    log=lambda line: None, plugins=[toy_plugin])
    toy = next(r for r in doc["records"] if r["system"] == "toy")
    assert toy["status"] == "ok", toy["notes"]
    assert toy["samples_per_s"] > 0 and toy["speedup_vs_serial"] > 0


def test_a_plugin_that_cannot_be_imported_is_a_one_line_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no\\nway')\n")
    with pytest.raises(PbpError, match=r"^--plugin .*broken.py: cannot import it "
                                       r"\(RuntimeError: no way\)$"):
        load_plugins([str(broken)])
    with pytest.raises(PbpError, match="--plugin no_such_plugin_module: cannot import it"):
        load_plugins(["no_such_plugin_module"])


def test_list_systems_tells_whether_each_can_run_here():
    lines = describe_systems()
    assert [line.split()[0] for line in lines] == list(SYSTEMS)
    for line, system in zip(lines, SYSTEMS.values()):
        reason = availability(system)
        assert line.split()[2] == ("available" if reason is None else "unavailable")
        assert reason is None or line.endswith(f"({reason})")


def test_records_name_the_blas_the_executors_and_the_gemm_ceiling_ran(tiny_grid):
    from parallel_backprop.blas_choice import installed_blas

    _, doc, _ = tiny_grid
    used = doc["environment"]["gemm_blas"]
    assert used["name"] in installed_blas() and used["version"]
    assert {lib["internal_api"] for lib in doc["environment"]["blas"]} >= set(installed_blas())
    for record in doc["records"]:
        ours = record["system"] in ("serial", "threads", "hybrid", "gemm")
        if ours and record["status"] == "ok":
            assert record["blas"] == used["name"] == record["blas_library"]["name"]
        elif not ours:
            assert "blas" not in record



def test_passes_run_the_grid_again_in_reverse_and_keep_each_median_pass(tmp_path, monkeypatch):
    # In the order they run: pass 1 gemm T1, gemm T2, serial, threads (hybrid is
    # skipped once), pass 2 the other way round, pass 3 as pass 1.
    values = iter([100.0, 300.0, 30.0, 10.0, 20.0, 50.0, 200.0, 70.0, 200.0, 100.0, 60.0, 80.0])
    order = []

    def execute(run, config, scratch, plugins=()):
        order.append((run.system, run.batch_size, run.threads))
        record = run.record()
        if run.skip:
            return record
        if run.system == "gemm":               # a ceiling has GFLOP/s, no samples/s
            gflops = next(values)
            record.take({"status": "ok", "gflops": gflops, "gflops_best": gflops + 1,
                         "step_s_median": 1 / gflops, "step_s_min": 1 / (gflops + 1)})
            return record
        rate = next(values)
        record.take({"status": "ok", "samples_per_s": rate, "samples_per_s_best": rate + 1,
                     "gflops": rate / 10, "gflops_best": (rate + 1) / 10, "step_s_median": 1 / rate,
                     "step_s_min": 1 / (rate + 1)})
        return record

    monkeypatch.setattr(runner, "execute", execute)
    systems_ = ("serial", "threads", "hybrid", "gemm")
    code, _, stderr = run_cli(["bench", *TINY, "--systems", ",".join(systems_), "--threads", "2",
                               "--batch-sizes", "4", "--passes", "3", "--quiet", "--no-plots",
                               "--out", tmp_path])
    assert code == 0, stderr
    planned = [(r.system, r.batch_size, r.threads)
               for r in runner.plan(BenchConfig.preset(False, systems=systems_,
                                                       nets=("20-16-3",), batch_sizes=(4,),
                                                       threads=(2,)))]
    assert planned == [("gemm", None, 1), ("gemm", None, 2), ("serial", 4, 1),
                       ("threads", 4, 2), ("hybrid", 4, 2)]
    measured = [p for p in planned if p[0] != "hybrid"]     # hybrid needs 4 threads: skipped once
    assert order == planned + measured[::-1] + measured
    doc = json.loads((tmp_path / "bench.json").read_text())
    by_config = {(r["system"], r["threads"]): r for r in doc["records"]}
    passes = {("serial", 1): [30.0, 50.0, 60.0], ("threads", 2): [10.0, 20.0, 80.0]}
    for key, seen in passes.items():
        record = by_config[key]
        assert record["samples_per_s_passes"] == seen
        assert record["samples_per_s"] == sorted(seen)[1]
        assert record["samples_per_s_best"] == max(seen) + 1
        assert record["gflops"] == sorted(seen)[1] / 10
    assert by_config[("gemm", 1)]["gflops_passes"] == [100.0, 70.0, 200.0]
    assert by_config[("gemm", 1)]["gflops"] == 100.0
    assert by_config[("gemm", 2)]["gflops_passes"] == [300.0, 200.0, 100.0]
    assert by_config[("gemm", 2)]["gflops"] == 200.0 and by_config[("gemm", 2)]["gflops_best"] == 301
    assert by_config[("hybrid", 2)]["status"] == "skipped"
    assert doc["config"]["passes"] == 3


def test_median_pass_keeps_a_finished_pass_over_a_failed_one():
    from parallel_backprop.harness import Measurement

    def record(rate):
        r = Measurement(system="serial", kind="executor")
        if rate is None:
            r.fail("worker exited with status 1: boom")
        else:
            r.take({"status": "ok", "samples_per_s": rate, "samples_per_s_best": rate,
                    "step_s_min": 1 / rate})
        return r

    merged = runner.median_pass([record(5.0), record(None), record(7.0)])
    assert merged.ok and merged.samples_per_s == 5.0 and merged.samples_per_s_best == 7.0
    assert merged.extra["samples_per_s_passes"] == [5.0, None, 7.0]
    assert "1 of 3 passes did not finish: worker exited with status 1: boom" in merged.notes
    assert not runner.median_pass([record(None), record(None)]).ok


def test_source_fingerprint_follows_the_package_modules(tmp_path):
    from parallel_backprop.harness.environment import source_fingerprint

    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "mod.py"
    module.write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not a module")
    first = source_fingerprint(tmp_path)
    assert source_fingerprint(tmp_path) == first
    (tmp_path / "notes.txt").write_text("still not a module, longer")
    assert source_fingerprint(tmp_path) == first
    module.write_text("x = 22\n")
    edited = source_fingerprint(tmp_path)
    assert edited != first
    (tmp_path / "new.py").write_text("")
    assert source_fingerprint(tmp_path) != edited


@pytest.mark.parametrize("changed", [False, True])
def test_a_bench_says_when_the_package_changed_during_its_run(tmp_path, monkeypatch, changed):
    # Every configuration runs in a new process that imports the package
    # afresh: an edit during the run would mix two versions in one bench.json.
    from parallel_backprop.harness import environment
    from parallel_backprop.harness.environment import SOURCE_CHANGED

    fingerprints = iter(["before", "after" if changed else "before"])
    monkeypatch.setattr(environment, "source_fingerprint", lambda: next(fingerprints))
    monkeypatch.setattr(runner, "execute", not_run)
    code, stdout, stderr = run_cli(["bench", *TINY, "--systems", "serial", "--no-plots",
                                    "--out", tmp_path])
    assert code == 0, stderr
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["environment"]["source_changed"] is changed
    assert (doc["notes"][:1] == [SOURCE_CHANGED]) is changed
    assert (f"warning: {SOURCE_CHANGED}" in stdout) is changed
