"""The ``noop`` kind (``jobs.run_diagnostics`` permission): does no work per item, to measure the queue's own overhead.

``manage.py bench_queue`` compares a job of this kind through the real queue with the literature
handler run in-process, so the ratio shows what the queue costs.
"""
import os
import signal
import time

from django.conf import settings

from . import Kind, register
from .literature import ITEM_SCHEMA, _normalize

# Fault injection (issue 12's fault suite): honoured only where MEDASSIST_FAULT_INJECTION is on (the test
# workers' environment); elsewhere a job that asks for it is refused at submit.
FAULT_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "test only (MEDASSIST_FAULT_INJECTION): slow items down, or make one kill or hang its process",
    "properties": {
        "sleep_ms": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "work time per item"},
        "kill_marker": {"type": "string", "minLength": 1, "maxLength": 100,
                        "description": "an item whose text contains this SIGKILLs its process (a native crash)"},
        "hang_marker": {"type": "string", "minLength": 1, "maxLength": 100,
                        "description": "an item whose text contains this blocks, deaf to the soft time limit, "
                                       "until the hard limit kills its process"},
    },
}


def _inject(fault: dict, batch: list[dict]) -> None:
    for item in batch:
        if fault.get("kill_marker") and fault["kill_marker"] in item["text"]:
            os.kill(os.getpid(), signal.SIGKILL)
        if fault.get("hang_marker") and fault["hang_marker"] in item["text"]:
            while True:  # like a native call that never returns to Python: the soft limit cannot stop it
                try:
                    time.sleep(0.5)
                except Exception:  # noqa: S112 (SoftTimeLimitExceeded, deliberately ignored)
                    continue
    if fault.get("sleep_ms"):
        time.sleep(fault["sleep_ms"] * len(batch) / 1000)


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    if params.get("fault") and settings.MEDASSIST_FAULT_INJECTION:
        _inject(params["fault"], batch)
    return [{"chars": len(item["text"])} for item in batch]


def check_params(params: dict) -> list[tuple[str, str]]:
    if params.get("fault") and not settings.MEDASSIST_FAULT_INJECTION:
        return [("fault", "fault injection is off on this server (MEDASSIST_FAULT_INJECTION)")]
    return []


KIND = register(Kind(
    name="noop",
    description="Diagnostics: returns each item's length; measures queue overhead.",
    queue="batch",
    item_schema=ITEM_SCHEMA,
    params_schema={"type": "object", "additionalProperties": False, "properties": {"fault": FAULT_SCHEMA}},
    check_params=check_params,
    result_schema={"type": "object", "properties": {"chars": {"type": "integer"}}},
    run=run,
    permission="jobs.run_diagnostics",
    normalize_item=_normalize,
))
