"""The ``noop`` kind (staff only): does no work per item, to measure the queue's own overhead.

``manage.py bench_queue`` compares a job of this kind through the real queue with the literature
handler run in-process, so the ratio shows what the queue costs.
"""
from . import Kind, register
from .literature import ITEM_SCHEMA, _normalize


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    return [{"chars": len(item["text"])} for item in batch]


KIND = register(Kind(
    name="noop",
    description="Diagnostics: returns each item's length; measures queue overhead.",
    queue="batch",
    item_schema=ITEM_SCHEMA,
    params_schema={"type": "object", "additionalProperties": False, "properties": {}},
    result_schema={"type": "object", "properties": {"chars": {"type": "integer"}}},
    run=run,
    staff_only=True,
    normalize_item=_normalize,
))
