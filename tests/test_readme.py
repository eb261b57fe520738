"""The README's commands still work, and its links and install lines still point somewhere.

Every ``pbp ...`` line of README.md's shell code blocks (and every
``python -c`` line, which may make a file a later command reads) runs, in
README order, in one temporary folder: offline (``PBP_OFFLINE=1``), on a
small fake Fashion-MNIST, and kept short by options appended to it (click
keeps an option's last value, so ``--epochs 1`` after ``--epochs 10`` wins).
``COMMANDS`` says how to run each line; a README line it does not know
fails the test, so a new command comes with its entry. A command shown
after a ``$`` prompt with its output must print exactly that output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from parallel_backprop.data import write_idx

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SHORT = ("--limit", "300", "--epochs", "1")
TINY_GRID = ("--nets", "20-16-3", "--batch-sizes", "8", "--threads", "1,2",
             "--systems", "serial,threads,gemm", "--gemm-size", "64", "--warmup", "0",
             "--min-time", "0.002", "--repeats", "2", "--timeout", "120", "--quiet")


@dataclass(frozen=True)
class Run:
    """How to run one README command here."""

    extra: tuple[str, ...] = ()     # appended to keep it short
    makes: tuple[str, ...] = ()     # files it must leave in the folder
    fails: bool = False             # expected to end with one "pbp: error: ..." line


COMMANDS = {
    "pbp train --dataset fashion-mnist --save fashion.npz": Run(SHORT, makes=("fashion.npz",)),
    "pbp train --dataset fashion-mnist --preset seed --batch-size 8 --lr 0.3 --lr-schedule linear "
    "--epochs 10 --save fashion.npz": Run(SHORT, makes=("fashion.npz",)),
    "pbp train --dataset fashion-mnist --net 1h --batch-size 128 --executor threads "
    "--threads 2 --save fashion.npz": Run(SHORT, makes=("fashion.npz",)),
    "pbp train --dataset synthetic --features 20 --net 784-1024-10": Run(fails=True),
    "pbp predict fashion.npz": Run(),
    "python -c \"import numpy as np; from parallel_backprop.data import load_dataset; "
    "np.save('images.npy', load_dataset('fashion-mnist', image_scaling='unit').x_test[:100])\"":
        Run(makes=("images.npy",)),
    "pbp predict fashion.npz --input images.npy --output predictions.csv":
        Run(makes=("predictions.csv",)),
    "python -c \"import numpy as np; from sklearn.datasets import load_diabetes; "
    "d = load_diabetes(scaled=False); np.savetxt('diabetes.csv', "
    "np.column_stack([d.data, d.target]), delimiter=',', fmt='%g', "
    "header=','.join(d.feature_names + ['progression']), comments='')\"":
        Run(makes=("diabetes.csv",)),
    "pbp train --train-file diabetes.csv --target progression --net 10-64-64-1 --activation relu "
    "--preset seed --lr 0.01 --batch-size 32 --epochs 100 --save diabetes.npz":
        Run(("--epochs", "2"), makes=("diabetes.npz",)),
    "pbp predict diabetes.npz --input diabetes.csv --output progression.csv":
        Run(makes=("progression.csv",)),
    "python -c \"import pyarrow.csv as csv, pyarrow.parquet as pq; "
    "pq.write_table(csv.read_csv('diabetes.csv'), 'diabetes.parquet')\"":
        Run(makes=("diabetes.parquet",)),
    "pbp train --train-file diabetes.parquet --target progression --net 10-64-64-1 "
    "--activation relu --preset seed --lr 0.01 --batch-size 32 --epochs 100":
        Run(("--epochs", "2")),
    "pbp --plugin my_activations.py train --dataset fashion-mnist --activation softsign "
    "--epochs 5": Run(SHORT),
    "pbp bench --quick --out bench-results": Run((*TINY_GRID, "--no-plots"),
                                                 makes=("bench-results/bench.json",)),
    "pbp study --preset quick --out study-results": Run(
        (*TINY_GRID, "--shapes", "fashion", "--widths", "8,16", "--executors", "serial,threads",
         "--limit", "300", "--epochs", "1", "--tune-epochs", "1", "--lrs", "0.1,0.5"),
        makes=("study-results/study.json",)),
    "pbp report study-results/study.json --out study-report": Run(
        makes=("study-report/report.md", "study-report/report.html")),
}


# ---- reading the README ------------------------------------------------------------------

def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def shell_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, output shown after it or None) for each pbp or python -c line, in order."""
    found = []
    for language, body in code_blocks(text):
        if language not in ("", "bash", "sh", "console"):
            continue
        lines = body.replace("\\\n", "").splitlines()   # bash's line continuation
        for i, line in enumerate(lines):
            prompted = line.startswith("$ ")
            line = line[2:] if prompted else line
            if line.split()[:1] not in (["pbp"], ["python"]):     # output, other tools
                continue
            words = shlex.split(line, comments=True)
            if not (words[0] == "pbp" or words[:2] == ["python", "-c"]):
                continue
            shown = None
            if prompted:
                rest = lines[i + 1:]
                end = next((k for k, l in enumerate(rest) if l.startswith("$ ")), len(rest))
                shown = "\n".join(rest[:end])
            found.append((shlex.join(words), shown))
    return found


def python_files(text: str) -> dict[str, str]:
    """Python blocks that start with a ``# name.py`` line: files a command needs."""
    files = {}
    for language, body in code_blocks(text):
        first = body.splitlines()[0] if body else ""
        if language == "python" and re.fullmatch(r"# [\w-]+\.py", first):
            files[first[2:]] = body
    return files


def normalise(command: str) -> str:
    return shlex.join(shlex.split(command))


# ---- running them ------------------------------------------------------------------------

def fake_fashion_mnist(folder: Path, n_train: int = 600, n_test: int = 100) -> None:
    """The four IDX files of a small Fashion-MNIST: random images, learnable labels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), labels, :] = 255          # row `label` lit: learnable
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, True)


def environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PBP_OFFLINE="1", PBP_DATA_DIR=str(folder / "data"),
               PBP_CACHE_DIR=str(folder / "cache"), MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                        env.get("PYTHONPATH")])))
    return env


def run_command(command: str, how: Run, folder: Path) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    if words[0] == "pbp":
        argv = [sys.executable, "-m", "parallel_backprop.cli", *words[1:], *how.extra]
    else:
        argv = [sys.executable, *words[1:], *how.extra]
    return subprocess.run(argv, cwd=folder, env=environment(folder), capture_output=True,
                          text=True, timeout=600)


def problem(command: str, shown: str | None, how: Run, done, folder: Path) -> str | None:
    """What is wrong with one command's run, or None."""
    if how.fails:
        if done.returncode != 1 or not done.stderr.startswith("pbp: error: ") \
                or done.stderr.count("\n") != 1:
            return f"expected one 'pbp: error:' line and exit status 1, got " \
                   f"{done.returncode}: {done.stderr[-2000:]}"
    elif done.returncode != 0:
        return f"exit status {done.returncode}: {done.stderr[-2000:]}"
    if shown is not None and (done.stdout + done.stderr).strip() != shown.strip():
        return f"printed {(done.stdout + done.stderr).strip()!r}, the README shows {shown!r}"
    missing = [name for name in how.makes if not (folder / name).is_file()]
    if missing:
        return f"did not write {', '.join(missing)}"
    return None


# ---- the tests ---------------------------------------------------------------------------

def test_every_readme_command_is_in_the_table():
    found = [normalise(command) for command, _ in shell_commands(README.read_text())]
    table = {normalise(command) for command in COMMANDS}
    unknown = [command for command in found if command not in table]
    assert not unknown, ("README commands this test does not know; add each to COMMANDS "
                         f"with how to run it: {unknown}")
    stale = sorted(table - set(found))
    assert not stale, f"COMMANDS lists commands the README no longer has: {stale}"


def test_every_readme_command_runs(tmp_path):
    text = README.read_text()
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    for name, body in python_files(text).items():
        (tmp_path / name).write_text(body)
    table = {normalise(command): how for command, how in COMMANDS.items()}
    failures = []
    for command, shown in shell_commands(text):
        how = table[normalise(command)]
        done = run_command(command, how, tmp_path)
        trouble = problem(command, shown, how, done, tmp_path)
        if trouble:
            failures.append(f"{command}\n    {trouble}")
    assert not failures, "README commands that fail:\n" + "\n".join(failures)


def pyproject_extras() -> set[str]:
    """The names of pyproject.toml's optional dependencies (no TOML parser before 3.11)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, flags=re.M))


def test_install_lines_name_existing_extras():
    extras = pyproject_extras()
    assert {"gpu", "mpi", "compare", "plots", "dev"} <= extras
    for document in (README, *sorted((ROOT / "docs").glob("*.md"))):
        for line in document.read_text().splitlines():
            if "pip install" in line and "parallel-backprop" in line:
                pytest.fail(f"{document.name}: {line.strip()!r} installs from an index; "
                            "the package installs from a clone: pip install -e '.[...]'")
            for names in re.findall(r"pip install -e \"?'?\.\[([\w,-]+)\]", line):
                unknown = set(names.split(",")) - extras
                assert not unknown, f"{document.name}: {line.strip()!r}: no extra {unknown}"


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_links_between_the_documents_resolve():
    broken = []
    for document in (README, *sorted((ROOT / "docs").glob("*.md"))):
        text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+:", target):          # http:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.exists():
                broken.append(f"{document.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" \
                    and anchor not in anchors(resolved.read_text()):
                broken.append(f"{document.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
