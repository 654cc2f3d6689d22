"""Change capturers. Here: the watermark poller for incremental copies."""

from copyjob.ingest.watermark import IncrementPlan, plan_full, plan_incremental

__all__ = ["IncrementPlan", "plan_full", "plan_incremental"]
