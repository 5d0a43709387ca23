"""The ``finetune`` kind (``jobs.run_finetune`` permission, ``training`` queue): one LoRA fine-tuning run -> candidate versions.

A job has exactly one item, the data: ``{"sources": ["pubmedqa", ...], "name": optional run name}``;
its params are the recipe (``training.config.FinetuneConfig``; anything left out takes the
measured default). The handler runs ``training.run.finetune``: live progress (stage, step, loss,
tokens/s, epsilon under DP) goes into the job's ``status_detail``; cancelling the job stops the
run at the next step and deletes its artifacts; a failed run registers nothing and its item says
why. The result names the candidate versions and their metrics; promoting one is a separate,
audited action of a user with ``registry.promote_modelversion`` (``POST /api/v1/models/<id>/promote/`` or Django admin).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from django.conf import settings

from training.config import ConfigError, FinetuneConfig, confined_resume_dir

from . import ItemFailure, Kind, register

NAMED_SOURCES = ("pubmedqa", "medline", "corpus")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"


def _field_schema(f: dataclasses.Field, default) -> dict:
    docs = FinetuneConfig().field_docs()
    description = docs.get(f.name, "")
    if isinstance(default, bool):
        schema = {"type": "boolean"}
    elif isinstance(default, int) or f.name == "base_version":
        schema = {"type": ["integer", "null"] if f.name == "base_version" else "integer", "minimum": 0}
    elif isinstance(default, float):
        schema = {"type": "number", "minimum": 0}
    elif isinstance(default, list):
        schema = {"type": "array", "items": {"type": "string", "minLength": 1}}
    else:
        schema = {"type": "string"}
    return {**schema, "default": default, "description": description}


def _params_schema() -> dict:
    defaults = FinetuneConfig()
    properties = {f.name: _field_schema(f, getattr(defaults, f.name)) for f in dataclasses.fields(FinetuneConfig)
                  if f.name != "sources"}  # the sources are the job's item
    # federated (issue 15): the same recipe trained across centres with Flower; see training.federated.
    properties["mode"] = {"type": "string", "enum": ["centralised", "federated"], "default": "centralised",
                          "description": "centralised (one Ray Train run) or federated (Flower: centres train locally, "
                                         "only adapter weights travel)"}
    properties["federated"] = _federated_schema()
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _federated_schema() -> dict:
    from training.federated.config import FederatedConfig

    types = {bool: "boolean", int: "integer", float: "number", str: "string"}
    defaults = FederatedConfig()
    return {"type": "object", "additionalProperties": False, "description": "with mode federated: centres, rounds, "
            "local steps, strategy, min_centres, central DP, engine (ray / inprocess simulation, or deployment: the "
            "server's configured Flower SuperLink and its centres' SuperNodes) (training.federated.config)",
            "properties": {f.name: {"type": types[type(getattr(defaults, f.name))], "default": getattr(defaults, f.name)}
                           for f in dataclasses.fields(FederatedConfig)}}


def _split_mode(params: dict) -> tuple[dict, dict | None]:
    """(the recipe's own params, the federated settings or None for a centralised run)."""
    params = dict(params)
    mode = params.pop("mode", "centralised")
    federated = params.pop("federated", None)
    if mode != "federated" and federated is not None:
        raise ConfigError("federated", 'only with mode "federated"')
    return params, (federated or {}) if mode == "federated" else None


ITEM_SCHEMA = {
    "type": "object",
    "title": "Training data",
    "required": ["sources"],
    "additionalProperties": False,
    "properties": {
        "sources": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                    "description": "pubmedqa, medline, corpus, or a data file under MEDASSIST_TRAINING_DATA_DIRS"},
        "name": {"type": "string", "pattern": _NAME, "description": "run / model version name (default: generated)"},
    },
}

RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "candidates": {"type": "array", "items": {"type": "string"}},
        "candidate_ids": {"type": "array", "items": {"type": "integer"}}, "parent": {"type": "string"},
        "dataset_hash": {"type": "string"}, "evaluation": {"type": "string"},
        "before": {"type": "object"}, "after": {"type": "object"}, "training": {"type": "object"},
        "timings": {"type": "object"},
    },
}


def _allowed_roots() -> list[Path]:
    return [Path(p).resolve() for p in settings.MEDASSIST_TRAINING_DATA_DIRS]


def check_item(item: dict) -> list[tuple[str, str]]:
    """Sources must be a named data set or a file inside an allowed directory (never any server path)."""
    errors = []
    for index, source in enumerate(item.get("sources", [])):
        if source in NAMED_SOURCES:
            continue
        raw = source.split(":", 1)[1] if re.match(r"^(pubmedqa|medline|jsonl):", source) else source
        path = Path(raw).resolve()
        if not any(path.is_relative_to(root) for root in _allowed_roots()):
            errors.append((f"sources[{index}]", f"{source!r} is neither {', '.join(NAMED_SOURCES)} nor a file under "
                                                "the training data directories (MEDASSIST_TRAINING_DATA_DIRS)"))
        elif not path.is_file():
            errors.append((f"sources[{index}]", f"{source!r}: no such file"))
    return errors


def run(batch: list[dict], params: dict, runtime, *, context=None) -> list:
    from training.run import RunCancelled, finetune

    results = []
    for item in batch:
        try:
            recipe, federated = _split_mode(params)
            config = FinetuneConfig.from_dict({**recipe, "sources": item["sources"]})
            if federated is not None:
                from training.federated.config import FederatedConfig
                from training.federated.run import federated_finetune

                results.append(federated_finetune(config, FederatedConfig.from_dict(federated), name=item.get("name"),
                                                  progress=context.report if context else None,
                                                  should_stop=context.cancelled if context else None,
                                                  time_limit_s=settings.MEDASSIST_TRAINING_TIME_LIMIT))
                continue
            result = finetune(config, name=item.get("name"),
                              progress=context.report if context else None,
                              should_stop=context.cancelled if context else None,
                              time_limit_s=settings.MEDASSIST_TRAINING_TIME_LIMIT)
            results.append(result)
        except RunCancelled as exc:
            results.append(ItemFailure(f"cancelled: {exc}; nothing was registered"))
        except ConfigError as exc:
            results.append(ItemFailure(f"params.{exc.field}: {exc.message}"))
        except Exception as exc:  # the run's own failure: the item says why, the worker lives on
            results.append(ItemFailure(f"training failed, nothing was registered: {type(exc).__name__}: {exc}"[:2000]))
    return results


def check_params(params: dict) -> list[tuple[str, str]]:
    try:
        recipe, federated = _split_mode(params)
        config = FinetuneConfig.from_dict({**recipe, "sources": ["pubmedqa"]})
        if federated is not None:
            from training.federated.config import FederatedConfig

            if FederatedConfig.from_dict(federated).engine == "deployment":
                from training.federated.deployment import SuperLink

                SuperLink.from_settings(check_files=False)  # refused at submission when no SuperLink is configured
            if config.resume_from:
                raise ConfigError("resume_from", "a federated run does not resume: leave it empty")
        if config.resume_from:  # refused at submission too, not only when the run starts
            confined_resume_dir(config.resume_from, settings.MEDASSIST_MODEL_DIR)
    except ConfigError as exc:
        return [(exc.field, exc.message)]
    return []


KIND = register(Kind(
    name="finetune",
    description="LoRA fine-tuning of the generator on Ray (run_finetune permission) -> candidate model versions with metrics.",
    queue="training",
    item_schema=ITEM_SCHEMA,
    params_schema=_params_schema(),
    result_schema=RESULT_SCHEMA,
    run=run,
    text_field=None,
    permission="jobs.run_finetune",
    max_items=1,
    time_limit=settings.MEDASSIST_TRAINING_TIME_LIMIT,
    wants_context=True,
    check_item=check_item,
    check_params=check_params,
))
