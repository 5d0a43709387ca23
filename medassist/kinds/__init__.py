"""The job-kind registry: the one place that says which kinds exist and what each needs.

A kind declares its input schema (one item), its params schema, its result schema (JSON Schema
dicts, also used for the OpenAPI docs), the queue it runs on, the model roles it uses, and its
handler ``run(batch, params, runtime) -> results``. Adding a kind means one new module that calls
``register()``, plus its import at the bottom of this file.

A handler returns one result per input item, in order. To fail a single item it puts an
``ItemFailure`` in that item's place; if it raises, the worker retries the batch item by item so
that only the bad item fails.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator


class ItemFailure:
    """Placed in a handler's result list for an item that could not be processed."""

    def __init__(self, message: str):
        self.message = message

    def __repr__(self) -> str:
        return f"ItemFailure({self.message!r})"


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    queue: str  # "interactive" (single cases, latency first) or "batch" (bulk, throughput first)
    item_schema: dict
    params_schema: dict
    result_schema: dict
    run: Callable[[list[dict], dict, Any], list]
    text_field: str | None = "text"  # the field the per-item character limit applies to
    model_roles: tuple[str, ...] = ()  # roles the kind may use (docs, warm-up)
    roles_for: Callable[[dict], tuple[str, ...]] | None = None  # roles a job's params need; default all
    # Roles the items themselves call for, beyond the params' (e.g. an abstract with its own question).
    item_roles: Callable[[dict, list[dict]], tuple[str, ...]] = lambda params, items: ()
    # The job's main model version (Job.model_version) is the first of these roles the job used: the
    # model whose output the result rests on most. Default: ``model_roles`` in their order.
    main_roles: tuple[str, ...] = ()
    # Items per chunk for a job's params (None: settings.MEDASSIST_CHUNK_SIZE). Language-model work is
    # slow per item: smaller chunks keep each task well inside its time limit and spread the work.
    chunk_size_for: Callable[[dict], int | None] = lambda params: None
    # Checks beyond the schema that need data (e.g. "unknown concept"): (field, message) pairs.
    check_item: Callable[[dict], list[tuple[str, str]]] = lambda item: []
    # Checks of the params beyond the schema (e.g. one knob constrains another): (field, message) pairs.
    check_params: Callable[[dict], list[tuple[str, str]]] = lambda params: []
    # The Django permission ("app_label.codename") a user needs to submit this kind, given through a
    # group (e.g. "jobs.run_finetune"); None: every authenticated user. Staff status alone grants nothing.
    permission: str | None = None
    max_items: int | None = None  # e.g. finetune: one item describes the whole run
    # Soft time limit (seconds) of one chunk of this kind, instead of MEDASSIST_CHUNK_SOFT_TIME_LIMIT:
    # a training run takes far longer than a chunk of abstracts.
    time_limit: int | None = None
    # The handler takes a ``context`` keyword (a ``medassist.jobs.services.JobContext``) to report
    # live progress into the job and to notice a cancellation while it runs.
    wants_context: bool = False
    # Privacy (issue 13): the free-text item fields the ``redact`` param scrubs before storage (common/redaction.py).
    redact_fields: tuple[str, ...] = ()
    load: Callable[[], None] = lambda: None  # warm the kind's resources once per worker process
    normalize_item: Callable[[Any], Any] = lambda raw: raw  # e.g. a bare string -> {"text": ...}
    item_validator: Draft202012Validator = field(init=False, repr=False, compare=False)
    params_validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        Draft202012Validator.check_schema(self.item_schema)
        Draft202012Validator.check_schema(self.params_schema)
        object.__setattr__(self, "item_validator", Draft202012Validator(self.item_schema))
        object.__setattr__(self, "params_validator", Draft202012Validator(self.params_schema))

    def required_roles(self, params: dict, items: list[dict] = ()) -> tuple[str, ...]:
        """The model roles a batch needs: its params' and, for a kind that has them, its items'."""
        roles = self.roles_for(params) if self.roles_for else self.model_roles
        extra = [role for role in self.item_roles(params, list(items)) if role not in roles] if items else []
        return tuple(roles) + tuple(extra)

    def main_role(self, used_roles) -> str | None:
        """Of the roles a job used, the one its ``model_version`` names (None: it used no model)."""
        used = set(used_roles)
        return next((role for role in (self.main_roles or self.model_roles) if role in used), None)

    def params_with_defaults(self, params: dict) -> dict:
        """Params as the handler sees them: the user's values over the schema's defaults."""
        defaults = {k: spec["default"] for k, spec in self.params_schema.get("properties", {}).items()
                    if "default" in spec}
        return {**defaults, **params}


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in KINDS:
        raise ValueError(f"job kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind | None:
    return KINDS.get(name)


def available_kinds(*, user) -> list[str]:
    """The kinds ``user`` may submit: those without a permission, and those whose permission it holds."""
    return sorted(name for name, kind in KINDS.items() if kind.permission is None or user.has_perm(kind.permission))


# Each kind module registers itself on import.
from . import diagnosis, finetune, hypothesis, literature, noop  # noqa: E402,F401
