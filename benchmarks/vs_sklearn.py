"""BackpropClassifier against scikit-learn's MLPClassifier: test accuracy and fit time.

Both get the same split, scaling, hidden layers, batch size, epochs, solver
and seed, and the same two cores: scikit-learn's matrix products on two BLAS
threads (the variables below are set before NumPy loads), ours on the
executor given (default ``threads`` with 2 workers, BLAS pinned to one thread
each). Every fit runs exactly ``--epochs`` epochs (tol=0 and
n_iter_no_change=epochs, so neither stops early); runs alternate between the
two, and the median fit time of ``--repeats`` is reported.

    python benchmarks/vs_sklearn.py --dataset digits --epochs 50
    python benchmarks/vs_sklearn.py --dataset fashion --limit 20000 --epochs 10

``--solver sgd`` compares plain mini-batch SGD (momentum 0, alpha 0), the
method a trainer without the optimizers runs. The last line gives the fit
time ratio (ours over scikit-learn's) and the accuracy difference. On a
machine shared with other jobs, scikit-learn's two BLAS threads wait for
each other and its time balloons (seen: 8 s instead of 0.2 s); compare one
thread against one there (``OPENBLAS_NUM_THREADS=1 ... --executor serial``).
"""

from __future__ import annotations

import os

CORES = "2"
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, CORES)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from parallel_backprop import BackpropClassifier  # noqa: E402
from parallel_backprop.data import load_dataset  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def digits(limit: int | None, seed: int):
    """scikit-learn's digits: a stratified 75/25 split, standardised on the training part."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=seed)
    scaler = StandardScaler().fit(x_train)
    return (scaler.transform(x_train).astype(np.float32), y_train,
            scaler.transform(x_test).astype(np.float32), y_test)


def fashion(limit: int | None, seed: int):
    """Fashion-MNIST as ``pbp train`` loads it (standardised); ``limit`` training rows."""
    data = load_dataset("fashion-mnist", data_dir=FASHION_DIR, limit=limit, seed=seed,
                        progress=False, download=False)
    return data.x_train, data.y_train, data.x_test, data.y_test


DATASETS = {"digits": digits, "fashion": fashion}


def settings(args) -> dict:
    """The parameters both estimators take, by scikit-learn's names."""
    common = dict(hidden_layer_sizes=tuple(args.hidden), batch_size=args.batch_size,
                  max_iter=args.epochs, tol=0.0, n_iter_no_change=args.epochs,
                  solver=args.solver, random_state=args.seed)
    if args.solver == "sgd":
        common.update(momentum=0.0, alpha=0.0, learning_rate_init=args.lr or 0.1)
    else:
        common.update(learning_rate_init=args.lr or 0.001)
    return common


def fit_once(model, x_train, y_train, x_test, y_test) -> tuple[float, float, float]:
    """Fit time (s), test accuracy and the fit's CPU time (s, every thread of the process:
    steadier than the wall time on a shared machine, and twice it when two cores are busy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(x_train, y_train)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, float(model.score(x_test, y_test)), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--limit", type=int, default=None, help="training rows (fashion)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256])
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--solver", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning_rate_init (default: 0.001 adam, 0.1 sgd)")
    parser.add_argument("--executor", default="threads")
    parser.add_argument("--threads", type=int, default=int(CORES))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="of BackpropClassifier's products (scikit-learn's: float32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = DATASETS[args.dataset](args.limit, args.seed)
    common = settings(args)
    models = {"MLPClassifier": lambda: MLPClassifier(**common),
              "BackpropClassifier": lambda: BackpropClassifier(
                  **common, executor=args.executor, threads=args.threads,
                  precision=args.precision)}
    runs = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, make in models.items():
            runs[name].append(fit_once(make(), x_train, y_train, x_test, y_test))
    print(f"{args.dataset}: {len(x_train)} training rows, {len(x_test)} test rows, "
          f"hidden {args.hidden}, batch {args.batch_size}, {args.epochs} epochs, "
          f"solver {args.solver}, ours in {args.precision}; {platform.processor() or platform.machine()}")
    print("| estimator | test accuracy | fit time (s, median) | CPU time (s, median) | epochs/s |")
    print("|---|---|---|---|---|")
    results = {}
    for name, values in runs.items():
        seconds, accuracy, cpu = (statistics.median(v[i] for v in values) for i in range(3))
        results[name] = dict(fit_s=seconds, test_accuracy=accuracy, cpu_s=cpu, runs=values)
        print(f"| {name} | {accuracy:.4f} | {seconds:.2f} | {cpu:.2f} | "
              f"{args.epochs / seconds:.1f} |")
    ours, theirs = results["BackpropClassifier"], results["MLPClassifier"]
    print(f"fit time ratio {ours['fit_s'] / theirs['fit_s']:.2f}, accuracy "
          f"{100 * (ours['test_accuracy'] - theirs['test_accuracy']):+.2f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)


if __name__ == "__main__":
    main()
