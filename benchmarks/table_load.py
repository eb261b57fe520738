"""How fast, and in how much memory, does a large CSV load? pyarrow, pandas and ours.

Writes a seeded CSV (default 1,000,000 rows; ``--rows 5000000`` is the full
size, about 1.5 GB) of 40 columns: 30 decimals, 6 integers, 3 text columns
(5, 50 and 1,000 categories) and an integer label last; ``--gzip`` writes it
gzipped. Then loads it with each reader, ``--repeat`` times (3), each time in
a process of its own, and reports the fastest wall time and the peak
resident memory of those processes (``ru_maxrss`` from ``wait4``), next to
the size of the float32 matrix the data end as (rows x 37 numeric columns x
4 bytes). The machine may be shared: the fastest of the runs is the one
least disturbed.

    arrow      pyarrow.csv.read_csv(path) as it is (decimals as float64)
    pandas     pandas.read_csv(path), when pandas is installed
    ours       parallel_backprop.data.tables.read_table(path)
    ours+f32   read_table, then the numeric columns into one float32 (n, 37) matrix,
               by blocks of rows (what preprocessing does, without the scaling)
    full       load_dataset("file", train_file=path) end to end (``--full``; needs
               the data set "file", which preprocessing registers)
    baseline   a process that only imports pyarrow (its memory is in every other)

pyarrow parses on its CPU thread pool, one thread per core (``--threads``
sets the pool's size: pyarrow.set_cpu_count).

    python benchmarks/table_load.py --rows 5000000 --dir /tmp/tables [--gzip] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_DECIMAL, N_INTEGER, CATEGORIES = 30, 6, (5, 50, 1000)
CHUNK_ROWS = 250_000
READERS = ("baseline", "arrow", "pandas", "ours", "ours+f32")


def write_csv(path: Path, rows: int, seed: int, gzipped: bool) -> None:
    """The seeded table, written in chunks so that writing it needs little memory."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    sink = pa.CompressedOutputStream(str(path), "gzip") if gzipped else pa.OSFile(str(path), "wb")
    writer = None
    with sink:
        for start in range(0, rows, CHUNK_ROWS):
            table = _chunk(rng, min(CHUNK_ROWS, rows - start))
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema,
                                         write_options=pacsv.WriteOptions(quoting_style="none"))
            writer.write_table(table)
        writer.close()


def _chunk(rng: np.random.Generator, n: int):
    import pyarrow as pa

    columns = {}
    for j in range(N_DECIMAL):
        # Three decimals: "-1.234" rather than 17 digits, as measured data are written.
        columns[f"x{j}"] = np.round(rng.normal(j, 1 + j % 5, n), 3)
    for j in range(N_INTEGER):
        columns[f"n{j}"] = rng.integers(0, 1000 * (j + 1), n)
    for j, count in enumerate(CATEGORIES):
        names = np.array([f"cat{j}_{k}" for k in range(count)])
        columns[f"s{j}"] = pa.array(names[rng.integers(0, count, n)])
    columns["label"] = rng.integers(0, 10, n)
    return pa.table(columns)


def load(reader: str, path: str) -> dict:
    """Run one reader in this process; its seconds and what it produced."""
    import pyarrow as pa

    start = time.perf_counter()
    if reader == "baseline":
        shape = ()
    elif reader == "arrow":
        import pyarrow.csv as pacsv
        shape = pacsv.read_csv(path).shape
    elif reader == "pandas":
        import pandas
        shape = pandas.read_csv(path).shape
    elif reader == "full":
        from parallel_backprop.data import load_dataset
        data = load_dataset("file", train_file=path)
        shape = data.x_train.shape
    else:
        from parallel_backprop.data.tables import read_table
        table = read_table(path)
        shape = table.shape if reader == "ours" else numeric_matrix(table, pa).shape
    return {"seconds": time.perf_counter() - start, "shape": list(shape)}


def numeric_matrix(table, pa, block: int = 16_384) -> np.ndarray:
    """The numeric columns as one float32 (n, d) matrix.

    Filled by blocks of rows, each column written into a block that stays in
    the cache: three to four times faster than writing whole strided columns.
    """
    numeric = [name for name, kind in zip(table.column_names, table.schema.types)
               if pa.types.is_integer(kind) or pa.types.is_floating(kind)]
    out = np.empty((table.num_rows, len(numeric)), dtype=np.float32)
    for start in range(0, table.num_rows, block):
        part = table.slice(start, block)
        rows = out[start:start + part.num_rows]
        for j, name in enumerate(numeric):
            rows[:, j] = part.column(name).to_numpy()
    return out


def measure(reader: str, path: Path, threads: int | None, repeat: int) -> dict:
    """One reader, ``repeat`` times, each in a fresh process: the fastest time, the peak memory.

    The peak is the child's ``ru_maxrss`` from ``wait4``. The parent stays small
    (the CSV is written by a child too): a forked child's peak starts at its
    parent's size.
    """
    seconds, peak, shape = [], 0, None
    for _ in range(repeat):
        child = subprocess.Popen(_child(reader, path, threads), stdout=subprocess.PIPE, text=True)
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return {"reader": reader, "error": f"exit status {os.waitstatus_to_exitcode(status)}"}
        result = json.loads(output)
        seconds.append(result["seconds"])
        peak, shape = max(peak, usage.ru_maxrss / 1024), result["shape"]
    return {"reader": reader, "seconds": min(seconds), "all_seconds": seconds,
            "peak_rss_mb": peak, "shape": shape}


def _child(reader: str, path: Path, threads: int | None) -> list[str]:
    return [sys.executable, __file__, "--child", reader, str(path),
            *(["--threads", str(threads)] if threads else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--gzip", action="store_true", help="write and read the CSV gzipped")
    parser.add_argument("--full", action="store_true", help='also load_dataset("file", ...)')
    parser.add_argument("--threads", type=int, help="pyarrow's CPU pool (default: one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader (fastest kept)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV (reused when present)")
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import pyarrow
        pyarrow.set_cpu_count(args.threads)
    if args.child and args.child[0] == "write":
        write_csv(Path(args.child[1]), args.rows, args.seed, args.gzip)
    elif args.child:
        print(json.dumps(load(*args.child)))
    else:
        report(args)


def report(args) -> None:
    path = args.dir / f"table_{args.rows}_{args.seed}.csv{'.gz' if args.gzip else ''}"
    if not path.exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", "write", str(path), "--rows",
                        str(args.rows), "--seed", str(args.seed)] + ["--gzip"] * args.gzip,
                       check=True)
        print(f"wrote {path} ({path.stat().st_size / 2**20:,.0f} MiB) in "
              f"{time.perf_counter() - start:.1f} s")
    matrix_mb = args.rows * (N_DECIMAL + N_INTEGER + 1) * 4 / 2**20
    print(f"{args.rows:,} rows x 40 columns; float32 matrix {matrix_mb:,.0f} MiB; "
          f"pyarrow threads: {args.threads or os.cpu_count()}")
    readers = READERS + (("full",) if args.full else ())
    try:
        for reader in readers:
            if reader == "pandas" and not _has("pandas"):
                print(f"{reader:9s} skipped (pandas is not installed)")
                continue
            row = measure(reader, path, args.threads, args.repeat)
            if "error" in row:
                print(f"{reader:9s} failed: {row['error']}")
                continue
            runs = " ".join(f"{s:.2f}" for s in row["all_seconds"])
            print(f"{reader:9s} {row['seconds']:7.2f} s  peak RSS {row['peak_rss_mb']:8,.0f} MiB "
                  f"({row['peak_rss_mb'] / matrix_mb:4.2f}x the matrix)  shape {row['shape']}  "
                  f"runs: {runs} s")
    finally:
        if not args.keep:
            path.unlink()


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
