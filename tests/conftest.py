"""Markers for the test suite, given here by file, fixture and test name.

- ``mpi``: test_mpi.py: jobs under mpiexec, the launcher's checks and the
  scaling model.
- ``multihost``: test_multihost.py: MPI jobs across hosts made of network
  namespaces (tests/netns_rig.py), skipped without root and ``ip``.
- ``gpu_interpreter``: test_gpu.py: the Triton kernels run on the CPU by
  Triton's interpreter (its few real-GPU tests skip without CUDA).
- ``subprocess``: tests that start processes: ``pbp`` as a command,
  bench workers, tune jobs, mpiexec (found by recording process starts
  during a run of the suite).
- ``slow``: about 0.3 s or more each on a 2-core machine (measured with
  ``pytest --durations=0``; scikit-learn's ~100 estimator checks together),
  and every test that shares a module fixture costing seconds, since that
  cost lands on whichever runs first. What is left, ``-m "not slow"``,
  still covers the math, every executor's step, the data readers, the
  command line and the GPU kernels under the interpreter.

``pytest -m "not slow"`` is the quick run while developing; ``python -m
pytest`` runs everything and is the CI command. Marking here rather than
with decorators keeps the lists in one place; a test file may still add its
own ``pytest.mark`` decorators.
"""

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

FILE_MARKS = {
    "test_mpi.py": {"mpi"},
    "test_multihost.py": {"multihost", "mpi", "slow", "subprocess"},
    "test_gpu.py": {"gpu_interpreter"},
    "test_hostile_signals.py": {"slow", "subprocess"},   # ~30 s: jobs stopped by signals
}

# Module fixtures that cost seconds: a study, a bench grid, reference runs.
FIXTURE_MARKS = {
    "tiny_study": {"slow", "subprocess"},
    "tiny_report": {"slow", "subprocess"},
    "tiny_grid": {"slow", "subprocess"},
    "references": {"slow"},
    "real_table": {"slow"},        # the real KDD Cup 99 10% file, where it is present
}

# "file::test" (any parameters) -> marks; slow ones measured at 0.3 s or more.
TEST_MARKS = {
    "test_bench.py::test_torch_peer_runs_the_same_work": {"slow", "subprocess"},
    "test_bf16.py::test_mpi_in_bf16_agrees_with_serial_bf16": {"slow", "subprocess", "mpi"},
    "test_bf16.py::test_bf16_workloads_take_steps": {"slow"},      # imports torch, jax
    "test_bf16.py::test_estimators_train_in_bf16_like_fp32": {"slow"},
    "test_bf16.py::test_estimators_name_a_bad_precision": {"slow"},   # imports scikit-learn
    "test_bench.py::test_mpi_ranks_agree_on_the_number_of_steps": {"slow", "subprocess"},
    "test_bench.py::test_ctrl_c_writes_what_was_measured": {"slow", "subprocess"},
    "test_blas.py::test_gemm_releases_the_gil": {"slow"},
    "test_kernels.py::test_pure_python_switch_trains_to_the_same_bits": {"slow", "subprocess"},
    "test_blas.py::test_mkl_after_pytorch_runs_on_its_openmp_and_computes_right":
        {"slow", "subprocess"},
    "test_blas.py::test_distributed_executor_step_under_mkl_equals_openblas":
        {"slow", "subprocess"},
    "test_blas.py::test_a_bad_blas_name_is_a_one_line_error": {"slow", "subprocess"},
    "test_blas.py::test_auto_measures_once_and_caches_per_machine": {"slow"},
    "test_blas.py::test_a_corrupt_cache_is_measured_again_and_rewritten": {"slow"},
    "test_blas.py::test_select_blas_exports_the_choice_to_child_processes":
        {"slow", "subprocess"},
    "test_blas.py::test_blas_option_and_variable_reach_the_metrics": {"slow", "subprocess"},
    "test_blas.py::test_missing_mkl_is_a_one_line_error_with_the_install_hint":
        {"slow", "subprocess"},
    "test_checkpoint.py::test_sigkill_at_a_random_moment_then_resume_gives_the_same_model":
        {"slow", "subprocess"},
    "test_checkpoint.py::test_ctrl_c_writes_a_checkpoint_and_stops_cleanly":
        {"slow", "subprocess"},
    "test_cli.py::test_console_script_runs_as_a_process": {"slow", "subprocess"},
    # Real data sets, where they are present (skipped elsewhere).
    "test_data_datasets.py::test_real_fashion_mnist_from_debian": {"slow"},
    "test_data_datasets.py::test_real_kdd_with_limit": {"slow"},
    "test_estimator.py::test_import_without_scikit_learn": {"slow", "subprocess"},
    "test_estimator.py::test_scikit_learn_checks": {"slow"},      # ~4 s over ~100 checks
    "test_executors.py::test_training_reaches_serial_accuracy": {"slow"},
    "test_fuzz.py::test_kdd_reader_raises_only_data_errors": {"slow"},
    "test_gpu.py::test_resumed_run_on_resident_data_matches_an_uninterrupted_one": {"slow"},
    "test_gpu.py::test_training_matches_serial": {"slow"},
    "test_gpu.py::test_train_epoch_on_resident_data_equals_steps": {"slow"},
    "test_gpu.py::test_pbp_train_gpu_saves_the_serial_model": {"slow"},
    "test_gpu.py::test_compiled_kernels_and_cuda_graphs_match_serial_on_a_gpu":
        {"slow", "subprocess"},
    "test_gpu.py::test_tf32_and_bf16_updates_within_their_tolerance_at_net_1h_on_a_gpu":
        {"slow", "subprocess"},
    "test_gpu.py::test_a_second_load_data_drops_the_graphs_that_gather": {"slow"},
    "test_gpu.py::test_the_executor_measures_at_its_first_full_batch_and_then_reads_the_cache":
        {"slow"},
    "test_gpu_check.py::test_quick_run_answers_every_section": {"slow", "subprocess"},
    "test_gpu_check.py::test_gpu_vs_torch_checks_each_layers_update_not_the_weights": {"slow"},
    "test_gpu_check.py::test_correctness_at_the_real_shapes_on_a_gpu": {"slow", "subprocess"},
    "test_gpu_check.py::test_kernels_compile_for_sm90_to_fma_or_tensor_cores_by_precision":
        {"slow", "subprocess"},
    "test_mpi.py::test_importing_the_package_does_not_start_mpi": {"slow", "subprocess"},
    "test_mpi.py::test_ranks_train_the_serial_model": {"slow", "subprocess"},
    "test_mpi.py::test_a_failing_rank_ends_the_job": {"slow", "subprocess"},
    "test_mpi.py::test_more_ranks_than_the_batch_under_mpiexec": {"slow", "subprocess"},
    "test_mpi.py::test_one_step_on_uneven_and_empty_shards_is_the_gradient_step":
        {"slow", "subprocess"},
    "test_study.py::test_tune_picks_the_highest_validation_accuracy_and_records_divergence":
        {"slow", "subprocess"},
    "test_study.py::test_candidates_in_parallel_train_exactly_as_one_at_a_time":
        {"slow", "subprocess"},
    "test_readme.py::test_every_readme_command_runs": {"slow", "subprocess"},
    "test_bench.py::test_list_systems_names_every_system": {"slow", "subprocess"},
    "test_bench.py::test_an_executor_registered_by_a_plugin_is_planned_listed_and_measured":
        {"slow", "subprocess"},
    "test_bench.py::test_replot_redraws_from_the_json": {"slow"},
    "test_cli.py::test_plugin_activation_trains_from_the_command_line": {"slow", "subprocess"},
    "test_cli.py::test_plugin_by_module_name_and_in_tune_worker_processes":
        {"slow", "subprocess"},
    "test_cli.py::test_plugin_reaches_the_mpi_ranks": {"slow", "subprocess", "mpi"},
    "test_cli.py::test_plugin_executor_is_a_choice_of_executor": {"slow", "subprocess"},
    "test_extending.py::test_toy_executor_trains_through_pbp_train_like_serial":
        {"slow", "subprocess"},
    "test_extending.py::test_toy_executor_is_measured_by_pbp_bench": {"slow", "subprocess"},
    "test_hostile_files.py::test_two_runs_started_together_on_one_folder": {"slow", "subprocess"},
    "test_tables.py::test_a_million_distinct_categories_are_capped": {"slow"},
    "test_tables_schema.py::test_bench_times_the_rows_of_a_table": {"slow", "subprocess"},
    "test_tables_schema.py::test_schema_gives_the_kdd_preprocessors_features": {"slow"},
    "test_optimizers.py::test_mpi_ranks_take_the_serial_steps": {"slow", "subprocess", "mpi"},
    "test_estimator.py::test_pipeline_grid_search_and_pickle": {"slow"},
    "test_gpu.py::test_optimizer_steps_match": {"slow"},
    "test_gpu.py::test_train_epoch_applies_the_optimizer_as_steps_do": {"slow"},
    "test_gpu.py::test_optimizer_state_round_trip_continues_as_uninterrupted": {"slow"},
    "test_gpu.py::test_optimizers_in_cuda_graphs_follow_the_rate_and_step_count_on_a_gpu":
        {"slow", "subprocess"},
    "test_hostile_signals.py::test_a_stopped_launcher_stops_every_rank": {"mpi"},
    "test_hostile_signals.py::test_a_killed_launcher_leaves_no_rank": {"mpi"},
    "test_hostile_signals.py::test_a_stalled_rank_ends_the_job_with_one_line": {"mpi"},
    "test_hostile_signals.py::test_ranks_that_disagree_stop_before_the_first_step": {"mpi"},
    "test_hostile_files.py::test_a_held_folder_is_refused_and_free_once_its_holder_dies":
        {"subprocess"},
    # mount and umount a tiny tmpfs
    "test_hostile_files.py::test_full_disk_is_one_line_and_the_previous_file_stays":
        {"subprocess"},
    "test_hostile_files.py::test_full_disk_while_checkpointing_keeps_the_earlier_checkpoints":
        {"subprocess"},
    "test_hostile_files.py::test_full_disk_for_predictions": {"subprocess"},
}

# test_hostile_sizes.py: pbp in a process of its own under a 2 GiB address-space limit.
TEST_MARKS.update({f"test_hostile_sizes.py::{name}": {"slow", "subprocess"} for name in (
    "test_npy_header_claiming_more_than_the_file_holds",
    "test_npy_larger_than_memory",
    "test_model_whose_network_cannot_fit_in_memory",
    "test_model_parameters_larger_than_memory",
    "test_checkpoint_whose_network_cannot_fit_in_memory",
    "test_checkpoint_parameters_larger_than_memory",
    "test_idx_images_larger_than_memory",
    "test_predict_input_beyond_float32",
    "test_predict_outputs_that_overflow_name_the_rows",
    "test_prediction_too_wide_for_one_batch_runs_in_smaller_ones",
    "test_diverging_run_is_one_line_without_numpy_warnings",
    "test_synthetic_data_with_absurdly_many_classes",
)})


# Exceptions to FILE_MARKS: tests of a marked file that run in-process.
UNMARKED = {
    "test_multihost.py::test_the_rig_leaves_no_namespace_link_or_process": {"mpi"},
    "test_hostile_signals.py::test_a_second_stop_signal_is_not_deferred": {"subprocess"},
    "test_hostile_signals.py::test_a_bad_mpi_timeout_is_one_line": {"slow", "subprocess"},
}


def marks_for(item) -> set[str]:
    name = getattr(item, "originalname", item.name)
    marks = set(FILE_MARKS.get(item.path.name, ())) - UNMARKED.get(f"{item.path.name}::{name}",
                                                                   set())
    marks |= TEST_MARKS.get(f"{item.path.name}::{name}", set())
    for fixture in set(item.fixturenames) & FIXTURE_MARKS.keys():
        marks |= FIXTURE_MARKS[fixture]
    return marks


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in sorted(marks_for(item)):
            item.add_marker(getattr(pytest.mark, mark))
    warn_of_stale_names(config, items)


def warn_of_stale_names(config, items) -> None:
    """A warning for each TEST_MARKS entry whose file was collected whole but has no such
    test: a renamed test would otherwise silently lose its marks."""
    if any("::" in str(arg) for arg in config.args):
        return
    collected = {f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
                 for item in items}
    files = {name.split("::")[0] for name in collected}
    stale = sorted(key for key in TEST_MARKS
                   if key.split("::")[0] in files and key not in collected)
    if stale:
        warnings.warn(pytest.PytestWarning(
            f"tests/conftest.py marks tests that do not exist: {', '.join(stale)}"))


@pytest.fixture(autouse=True)
def blas_as_found():
    """Each test starts with the BLAS the session started with: a command that chooses one
    (``--blas``, which also exports ``PBP_BLAS`` to the processes it starts) changes both
    for the rest of the process."""
    import os

    from parallel_backprop.gemm import current_blas, use_blas

    before, variable = current_blas().name, os.environ.get("PBP_BLAS")
    yield
    use_blas(before)
    if variable is None:
        os.environ.pop("PBP_BLAS", None)
    else:
        os.environ["PBP_BLAS"] = variable
