"""Run the whole graph for a month range through Dagster, with a progress line per step."""

import time
from pathlib import Path

import dagster as dg

from assets.segments import REFIT_TAG

from assets.build import build_definitions
from schedules import REFRESH_JOB


def _progress_hooks(t0: float):
    @dg.success_hook(name="segpipe_progress_ok")
    def ok(context: dg.HookContext) -> None:
        print(f"  [{time.perf_counter() - t0:7.1f}s] done    {context.step_key}", flush=True)

    @dg.failure_hook(name="segpipe_progress_failed")
    def failed(context: dg.HookContext) -> None:
        err = context.op_exception
        print(f"  [{time.perf_counter() - t0:7.1f}s] FAILED  {context.step_key}: {err}", flush=True)

    return {ok, failed}


def run_pipeline(config_file: str | Path, first: str, last: str, *, quiet_logs: bool = True,
                 refit: bool = False) -> bool:
    """Materialize every asset for months ``first``..``last`` in one Dagster run (in dependency
    order, each asset handling the whole range) on the project instance; True on success. With
    ``refit`` the cluster model and RFM thresholds are refit on ``last``'s snapshot."""
    defs = build_definitions(config_file)
    t0 = time.perf_counter()
    job = dg.define_asset_job(
        REFRESH_JOB, selection=dg.AssetSelection.all(), hooks=_progress_hooks(t0),
        partitions_def=defs.resolve_job_def(REFRESH_JOB).partitions_def,
    )
    job_def = dg.Definitions.merge(
        dg.Definitions(assets=defs.assets, resources=defs.resources, jobs=[job], executor=defs.executor)
    ).resolve_job_def(REFRESH_JOB)
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING" if quiet_logs else "INFO"}}}}
    with dg.DagsterInstance.get() as instance:
        result = job_def.execute_in_process(
            instance=instance,
            run_config=run_config,
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
                "segpipe/launched_by": "segpipe run",
                **({REFIT_TAG: "true"} if refit else {}),
            },
            raise_on_error=False,
        )
        print(f"run {result.run_id} {'succeeded' if result.success else 'FAILED'} "
              f"in {time.perf_counter() - t0:.1f}s (see it in the UI: make ui)")
        for check in result.get_asset_check_evaluations():
            if not check.passed:
                level = "FAILED" if check.severity == dg.AssetCheckSeverity.ERROR else "warns"
                months = check.metadata["months"].value if "months" in check.metadata else {}
                by_status: dict[str, list[str]] = {}
                for month, status in sorted(months.items()):
                    if status != "ok":
                        by_status.setdefault(status, []).append(month[:7])
                where = "; ".join(f"{status} in {', '.join(ms)}" for status, ms in sorted(by_status.items()))
                print(f"  check {level}: {check.asset_key.to_user_string()} {check.check_name}"
                      + (f" ({where}; details in the UI)" if where else ""))
    return result.success
