"""`pbp tune`, `pbp study` and `pbp report` end to end on tiny data, and bad options.

Timings are never asserted (tiny work, shared machine). What is checked:
the grid search picks the candidate with the highest validation accuracy
and records divergence; a study with a tiny custom grid writes every part
into ``study.json``; the report has its Markdown, its HTML page with every
figure inline, and every figure file.
"""

import base64
import contextlib
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest

from parallel_backprop.cli import main
from parallel_backprop.data import load_dataset
from parallel_backprop.network import Network
from parallel_backprop.study import TuneConfig, tune
from parallel_backprop.trainer import TrainConfig
from test_data_kdd import ROWS

SYNTHETIC = ["--dataset", "synthetic", "--samples", "600", "--features", "12", "--classes", "3"]
TUNE_KEYS = {"schema", "dataset", "net", "activations", "loss", "n_train", "n_val", "n_test",
             "config", "jobs", "candidates", "best", "wall_s", "command", "environment"}
CANDIDATE_KEYS = {"lr", "batch_size", "status", "val_accuracy", "final_loss", "train_s",
                  "samples_per_s", "val_accuracy_per_epoch", "note"}
RUN_KEYS = {"dataset", "executor", "threads", "blas_threads", "ranks", "net", "batch_size", "lr",
            "epochs", "limit", "seed", "status", "notes", "n_train", "test_accuracy",
            "val_accuracy", "epoch_s", "samples_per_s", "final_loss", "wall_s", "part"}


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ---- pbp tune -----------------------------------------------------------------------

def test_tune_picks_the_highest_validation_accuracy_and_records_divergence(tmp_path):
    out = tmp_path / "tune.json"
    # A linear network: lr 1000 makes its weights overflow under SGD, the others train.
    code, stdout, err = run_cli(["tune", "--preset", "seed", *SYNTHETIC, "--net", "12-16-3",
                                 "--activation", "linear",
                                 "--epochs", "2", "--lrs", "0.003,0.03,0.3,1000",
                                 "--batch-sizes", "16,64", "--out", out])
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["schema"] == "parallel-backprop/tune/1" and TUNE_KEYS <= doc.keys()
    assert doc["command"][:2] == ["pbp", "tune"] and doc["environment"]["versions"]["numpy"]
    assert (doc["n_train"], doc["n_val"]) == (500, 100)        # the 5:1 split
    candidates = doc["candidates"]
    assert [(c["lr"], c["batch_size"]) for c in candidates] == [
        (lr, b) for b in (16, 64) for lr in (0.003, 0.03, 0.3, 1000.0)]
    for c in candidates:
        assert CANDIDATE_KEYS <= c.keys()
    diverged = [c for c in candidates if c["status"] == "diverged"]
    assert {c["lr"] for c in diverged} == {1000.0}
    assert all(c["val_accuracy"] is None and "diverged" in c["note"] for c in diverged)
    ok = [c for c in candidates if c["status"] == "ok"]
    winner = max(ok, key=lambda c: c["val_accuracy"])   # max() keeps the first on a tie
    best = doc["best"]
    assert (best["lr"], best["batch_size"]) == (winner["lr"], winner["batch_size"])
    assert best["val_accuracy"] == winner["val_accuracy"] and 0 <= best["test_accuracy"] <= 1
    assert len(winner["val_accuracy_per_epoch"]) == 2
    # The table: one row per candidate, the winner marked, the test accuracy once.
    assert stdout.count("<- best") == 1 and stdout.count("diverged") >= 2
    assert f"test accuracy {best['test_accuracy']:.4f}" in stdout


@pytest.fixture(scope="module")
def small_data():
    return load_dataset("synthetic", synthetic_samples=300, synthetic_features=10,
                        synthetic_classes=3)


def test_candidates_in_parallel_train_exactly_as_one_at_a_time(small_data):
    network = Network.from_spec("10-12-3", 10, 3)
    config = TuneConfig(lrs=(0.1, 1.0, 3.0), batch_sizes=(25,), train=TrainConfig(epochs=2))
    one = tune(network, small_data, replace(config, jobs=1))
    two = tune(network, small_data, replace(config, jobs=2))
    assert (one["jobs"], two["jobs"]) == (1, 2)
    strip = lambda doc: [{k: v for k, v in c.items() if k not in ("train_s", "samples_per_s")}
                         for c in doc["candidates"]]
    assert strip(one) == strip(two) and one["best"] == two["best"]


def test_a_tie_goes_to_the_first_candidate(small_data):
    network = Network.from_spec("10-12-3", 10, 3)
    # Rates this small leave the predictions where the initial weights put them.
    doc = tune(network, small_data, TuneConfig(lrs=(1e-9, 2e-9), train=TrainConfig(epochs=1),
                                               jobs=1))
    first, second = doc["candidates"]
    assert first["val_accuracy"] == second["val_accuracy"]
    assert doc["best"]["lr"] == 1e-9


def test_default_jobs_fill_the_cores_with_one_thread_candidates():
    config = TuneConfig()
    assert config.resolved_jobs(cores=2) == 2 and config.resolved_jobs(cores=64) == 6
    threaded = TuneConfig(train=TrainConfig(executor="threads", threads=2))
    assert threaded.resolved_jobs(cores=2) == 1 and threaded.resolved_jobs(cores=8) == 4
    assert TuneConfig(train=TrainConfig(executor="gpu")).resolved_jobs(cores=8) == 1


# ---- pbp study and pbp report ---------------------------------------------------------

def tiny_kdd_file(path, rows=300):
    """A KDD Cup 99 CSV of ``rows`` rows: the test module's rows with varied counts."""
    lines = ROWS.strip().splitlines()
    rng = np.random.default_rng(0)
    out = []
    for i in range(rows):
        fields = lines[i % len(lines)].split(",")
        fields[0] = str(int(rng.integers(0, 50)))
        fields[4] = str(int(fields[4]) + int(rng.integers(0, 100)))
        out.append(",".join(fields))
    path.write_text("\n".join(out) + "\n")
    return path


# A 20-16-3 network at batch 8 for the speed grids, widths 8 and 16, serial
# and threads only; the training parts on 300 synthetic samples and a
# 300-row KDD file. About 10 s, most of it starting processes.
TINY_STUDY = ["--shapes", "fashion", "--nets", "20-16-3", "--batch-sizes", "8",
              "--threads", "1,2", "--systems", "serial,threads,gemm", "--widths", "8,16",
              "--gemm-size", "64", "--warmup", "0", "--min-time", "0.002", "--repeats", "2",
              "--timeout", "120", "--datasets", "synthetic,kdd99", "--samples", "300",
              "--features", "12", "--classes", "3", "--executors", "serial,threads",
              "--train-net", "1h", "--epochs", "1", "--lrs", "0.1,0.5", "--kdd-sizes", "60,120",
              "--quiet"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    kdd = tiny_kdd_file(folder / "kdd.csv")
    code, stdout, err = run_cli(["study", *TINY_STUDY, "--kdd-file", kdd,
                                 "--out", folder / "out"])
    assert code == 0, err
    return folder / "out", json.loads((folder / "out" / "study.json").read_text())


def test_study_json_has_every_part(tiny_study):
    out, doc = tiny_study
    assert doc["schema"] == "parallel-backprop/study/1" and doc["preset"] == "quick"
    assert doc["command"][:2] == ["pbp", "study"] and not doc["interrupted"]
    for key in ("cpu_model", "usable_cpus", "blas", "versions", "git", "load_average_end"):
        assert key in doc["environment"]
    assert doc["environment"]["source_changed"] is False     # nothing edited mid-run
    assert {part: record["status"] for part, record in doc["parts"].items()} == dict.fromkeys(
        ("tune", "accuracy", "kdd-size", "batch", "threads", "width"), "ok")
    assert doc["wall_s"] > 0 and set(doc["data"]) == {"synthetic", "kdd99"}


def test_study_tunes_then_trains_every_executor_with_the_tuned_rate(tiny_study):
    _, doc = tiny_study
    assert set(doc["tune"]) == {"synthetic", "kdd99"}
    for dataset, tuned in doc["tune"].items():
        assert tuned["schema"] == "parallel-backprop/tune/1"
        assert [c["lr"] for c in tuned["candidates"]] == [0.1, 0.5]
        runs = [r for r in doc["accuracy"] if r["dataset"] == dataset]
        assert [r["executor"] for r in runs] == ["serial", "threads"]
        for r in runs:
            assert RUN_KEYS <= r.keys() and r["status"] == "ok", r["notes"]
            assert r["lr"] == tuned["best"]["lr"] and r["epochs"] == 1
            assert 0 <= r["test_accuracy"] <= 1 and r["epoch_s"] > 0
            assert r["accuracy_vs_serial"] == pytest.approx(
                r["test_accuracy"] - runs[0]["test_accuracy"])
            assert r["matches_serial"] is True
        assert runs[1]["threads"] == doc["environment"]["usable_cpus"]


def test_study_times_kdd_at_each_training_set_size(tiny_study):
    _, doc = tiny_study
    runs = doc["kdd_size"]
    assert [(r["size"], r["executor"]) for r in runs] == [
        (60, "serial"), (60, "threads"), (120, "serial"), (120, "threads")]
    for r in runs:
        assert r["status"] == "ok" and r["epochs"] == 2 and r["part"] == "kdd-size"
        assert r["n_train"] == r["size"]
        serial = next(s for s in runs if s["size"] == r["size"] and s["executor"] == "serial")
        assert r["speedup_vs_serial"] == pytest.approx(
            r["samples_per_s"] / serial["samples_per_s"])
    assert all(r["speedup_vs_serial"] == 1.0 for r in runs if r["executor"] == "serial")


def test_study_embeds_the_harness_grids_and_writes_their_files(tiny_study):
    out, doc = tiny_study
    assert set(doc["grids"]) == {"batch-fashion", "threads", "width"}
    for name, grid in doc["grids"].items():
        assert grid["schema"] == "parallel-backprop/bench/1"
        assert (out / name / "bench.json").exists() and (out / name / "bench.csv").exists()
    batch = doc["grids"]["batch-fashion"]
    assert {(r["system"], r["threads"]) for r in batch["records"] if r["kind"] != "ceiling"} \
        == {("serial", 1), ("threads", doc["environment"]["usable_cpus"])}
    assert batch["config"]["epoch_samples"] == 50_000
    threads = {r["threads"] for r in doc["grids"]["threads"]["records"]
               if r["system"] == "threads"}
    assert threads == {1, 2}
    widths = {r["net"] for r in doc["grids"]["width"]["records"] if r["net"]}
    assert widths == {"784-8-10", "784-16-10"}
    assert (out / "batch-fashion" / "speedup.png").exists()


@pytest.fixture(scope="module")
def tiny_report(tiny_study, tmp_path_factory):
    out, _ = tiny_study
    report = tmp_path_factory.mktemp("report")
    code, stdout, err = run_cli(["report", out / "study.json", "--out", report])
    assert code == 0, err
    return report, stdout


EXPECTED_FIGURES = {"fashion_epoch_time_20-16-3.png", "fashion_gflops_20-16-3.png",
                    "fashion_speedup_20-16-3.png", "speedup_threads.png", "width_scaling.png",
                    "kdd_size_scaling.png", "tune.png"}


def test_report_writes_every_figure(tiny_report):
    report, stdout = tiny_report
    figures = {path.name for path in (report / "figures").iterdir()}
    assert figures == EXPECTED_FIGURES
    for name in figures:
        data = (report / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert "7 figures" in stdout


def test_report_markdown_links_every_figure_and_has_the_sections(tiny_report):
    report, _ = tiny_report
    text = (report / "report.md").read_text()
    links = set(re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", text))
    assert links == EXPECTED_FIGURES
    for heading in ("## Summary", "## Machine", "## Learning rate",
                    "## Speed against batch size: Fashion-MNIST-shaped work",
                    "## Speedup against threads", "## Problem size", "## Accuracy"):
        assert heading in text
    assert "| CPU |" in text and "kernels (core type)" in text and "| commit |" in text
    assert "| BLAS of the executors |" in text
    assert "fastest executor" in text and "of the GEMM ceiling" in text
    assert "every executor within 0.01 of it" in text
    assert "| serial | 1 |" in text


def test_report_html_is_self_contained(tiny_report):
    report, _ = tiny_report
    page = (report / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(EXPECTED_FIGURES)
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert page.count("<table>") >= 6 and "<h2>Summary</h2>" in page
    assert "figures/" not in page        # nothing linked: the page stands alone


def test_report_refuses_a_file_that_is_not_a_study(tiny_study, tmp_path):
    out, _ = tiny_study
    bench = out / "threads" / "bench.json"
    code, _, err = run_cli(["report", bench, "--out", tmp_path])
    assert code == 1
    assert err == f"pbp: error: {bench}: not a study.json (expected schema " \
                  "parallel-backprop/study/1)\n"


# ---- bad options --------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["tune", *SYNTHETIC, "--lrs", "0.1,x"], "--lrs '0.1,x': expected numbers separated"),
    (["tune", *SYNTHETIC, "--lrs", "0.1,-1"], "--lrs -1.0: expected positive finite numbers"),
    (["tune", *SYNTHETIC, "--batch-sizes", "0"], "--batch-sizes 0: expected a positive integer"),
    (["tune", *SYNTHETIC, "--executor", "gpu", "--jobs", "2"],
     "--jobs 2: executor 'gpu' trains one candidate at a time"),
    (["study", "--preset", "huge"], "'--preset': 'huge' is not one of 'quick', 'paper'"),
    (["study", "--parts", "tune,nope"], "--parts 'nope': expected some of tune, accuracy"),
    (["study", "--shapes", "mnist"], "--shapes 'mnist': expected some of fashion, kdd"),
    (["study", "--datasets", "cifar"], "--datasets 'cifar': expected some of mnist"),
    (["study", "--executors", "serial,fast"], "--executors 'fast': expected some of serial"),
    (["study", "--systems", "serial,nope"], "--systems 'nope': expected some of serial"),
    (["study", "--kdd-sizes", "50000,lots"], "--kdd-sizes '50000,lots': expected integers"),
    (["study", "--widths", "0"], "--widths 0: expected a positive integer"),
    (["study", "--train-net", "big"], "--train-net 'big': expected sizes joined by '-'"),
    (["study", "--parts", "accuracy"], "--parts: the accuracy part without the tune part "
                                      "needs --lr"),
    (["study", "--parts", "tune", "--datasets", "kdd99", "--kdd-file", "/nonexistent/kdd.gz"],
     "KDD file /nonexistent/kdd.gz: not found"),
])
def test_bad_options_give_one_line_errors(argv, message, tmp_path):
    code, _, stderr = run_cli([*argv, "--out", tmp_path / "out"])
    assert code != 0
    assert stderr.startswith("pbp: error: ") and message in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()     # nothing ran, nothing written


def test_report_of_a_missing_file(tmp_path):
    code, _, stderr = run_cli(["report", tmp_path / "nope.json", "--out", tmp_path / "r"])
    assert code == 1 and stderr.startswith(f"pbp: error: {tmp_path / 'nope.json'}: cannot read")


def test_measurements_disturbed_by_other_programs_are_flagged():
    from parallel_backprop.study.report import busy

    def record(system, threads, cores_busy, ranks=None):
        return {"system": system, "kind": "executor", "status": "ok", "threads": threads,
                "ranks": ranks, "cores_busy": cores_busy}

    fine = [record("serial", 1, 1.0), record("threads", 2, 1.8), record("blas", 4, 1.9),
            record("mpi", 4, 0.5, ranks=4), record("mpi", 2, 0.99, ranks=2)]
    disturbed = [record("threads", 2, 1.0), record("mpi", 2, 0.6, ranks=2),
                 record("serial", 1, 0.5)]
    assert busy(fine + disturbed, cores=2) == disturbed


def test_the_executors_of_a_study_come_from_the_registry():
    from parallel_backprop.executors import BASELINE, EXECUTORS
    from parallel_backprop.study.config import StudyConfig, size_executors
    from parallel_backprop.study.run import executor_settings

    config = StudyConfig()
    assert config.executors == tuple(EXECUTORS) and set(EXECUTORS) <= set(config.systems)
    # Timed against the problem size: the baseline and the one-process CPU executors
    # that spread the machine's cores (hybrid only from 2 x 2 on).
    assert size_executors(tuple(EXECUTORS), cores=2) == (BASELINE, "threads", "blas")
    assert "hybrid" in size_executors(tuple(EXECUTORS), cores=4)
    assert executor_settings("blas", 2) == {"threads": 2, "blas_threads": 1, "ranks": None,
                                            "process_threads": 2, "notes": []}
    hybrid = executor_settings("hybrid", 2)
    assert (hybrid["threads"], hybrid["blas_threads"], hybrid["process_threads"]) == (2, 2, 2)
    assert hybrid["notes"] == ["2 workers x 2 BLAS threads on 2 core(s): oversubscribed"]
    assert executor_settings("mpi", 1)["ranks"] == 2      # one rank would show nothing


def test_a_users_table_joins_the_training_parts(tmp_path):
    from parallel_backprop.errors import DataError
    from parallel_backprop.study.config import StudyConfig
    from parallel_backprop.study.run import find_sources

    table = tmp_path / "mine.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(60)))
    config = replace(StudyConfig(), datasets=("synthetic",))
    sources, _ = find_sources(config, None, None, train_file=table)
    assert set(sources) == {"synthetic", "file"}
    args = sources["file"].args
    assert args[args.index("--train-file") + 1] == str(table)
    with pytest.raises(DataError, match="missing.csv"):
        find_sources(config, None, None, train_file=tmp_path / "missing.csv")
