"""The OpenAPI description of job submissions, built from the job-kind registry.

``POST /api/v1/jobs/`` takes a different ``items`` and ``params`` shape for every kind. So that
generated clients know them, the JSON request body (component ``JobSubmission``) is documented as a
``oneOf`` discriminated by ``kind``: one ``<Kind>JobSubmit`` component per registered kind, whose
``items`` and ``params`` are the kind's own JSON schemas (components ``<Kind>Item`` and
``<Kind>Params``), with the kind's description and an example submission. Nothing here is kept by
hand per kind except the examples: a new kind appears in the schema by registering itself.

The kinds' schemas are JSON Schema 2020-12; the API schema is OpenAPI 3.0, whose schema dialect has no
type lists and no null type. ``openapi_schema`` rewrites those forms (``["string", "null"]`` ->
``nullable``), leaving the validation itself to the kind's own validator in the services.
"""
from __future__ import annotations

import copy
from functools import cache

from drf_spectacular.utils import OpenApiExample, PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from medassist.kinds import KINDS, Kind

# One example submission per kind (each is checked against the kind's schemas by tests/client/test_openapi.py).
# A kind without one gets an example built from its params' defaults.
EXAMPLES: dict[str, dict] = {
    "literature": {
        "kind": "literature",
        "items": [{"id": "a1", "pmid": "17942999", "title": "Aspirin and migraine",
                   "text": "Aspirin relieved migraine headache in 52% of patients compared with 34% on placebo."}],
        "params": {"question": "Does aspirin relieve migraine?", "summary_sentences": 2},
    },
    "diagnosis": {
        "kind": "diagnosis",
        "items": [{"id": "case-1", "symptoms": "58M chest pain, SOB, denies fever", "age": 58, "sex": "male"}],
        "params": {"top_k": 5},
    },
    "hypothesis": {
        "kind": "hypothesis",
        "items": [{"start": "Migraine Disorders", "target_group": "Chemicals and Drugs"}],
        "params": {"measure": "adamic_adar", "top_k": 10},
    },
    "noop": {"kind": "noop", "items": ["a short text", {"text": "another one", "id": 2}], "params": {}},
    "finetune": {"kind": "finetune", "items": [{"sources": ["pubmedqa"], "name": "smollm2-qa-lora"}],
                 "params": {"tasks": ["qa"]}},
}


def openapi_schema(schema):
    """A JSON Schema 2020-12 fragment in OpenAPI 3.0's dialect (type lists and null -> ``nullable``)."""
    if isinstance(schema, list):
        return [openapi_schema(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: openapi_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "oneOf", "allOf"):
            out[key] = openapi_schema(value)
        elif key == "const":
            out["enum"] = [value]
        elif key == "examples":  # 2020-12 keeps a list; OpenAPI 3.0 one value
            if value:
                out["example"] = value[0]
        else:
            out[key] = copy.deepcopy(value)
    types = out.get("type")
    if isinstance(types, list):
        concrete = [t for t in types if t != "null"]
        nullable = {"nullable": True} if len(concrete) < len(types) else {}
        if len(concrete) == 1:
            out.update(type=concrete[0], **nullable)
        else:  # each branch says nullable: a nullable beside anyOf does not let null through the anyOf
            del out["type"]
            out["anyOf"] = [{"type": t, **nullable} for t in concrete] + out.get("anyOf", [])
    if "enum" in out and None in out["enum"]:
        out["nullable"] = True  # null stays in the enum too: OpenAPI 3.0.3 wants it listed there
    return out


def component_prefix(kind_name: str) -> str:
    return "".join(part.capitalize() for part in kind_name.replace("-", "_").split("_"))


def kind_example(kind: Kind) -> dict:
    if kind.name in EXAMPLES:
        return EXAMPLES[kind.name]
    return {"kind": kind.name, "items": [], "params": kind.params_with_defaults({})}


def _accepts_plain_strings(kind: Kind) -> bool:
    return kind.normalize_item is not Kind.__dataclass_fields__["normalize_item"].default


@cache  # one class per kind: the schema generator must see the same component class every time
def _submit_serializer(kind_name: str) -> type[serializers.Serializer]:
    """``<Kind>JobSubmitSerializer``: kind, items and params of one kind, for the schema only."""
    kind = KINDS[kind_name]
    prefix = component_prefix(kind.name)
    example = kind_example(kind)
    item_schema = openapi_schema(kind.item_schema)
    if example.get("items"):
        item_schema.setdefault("example", next((i for i in example["items"] if isinstance(i, dict)), example["items"][0]))
    params_schema = {"description": f"parameters of a {kind.name} job; omitted ones take their defaults",
                     **openapi_schema(kind.params_schema), "example": example.get("params", {})}
    item_field = extend_schema_field(item_schema, component_name=f"{prefix}Item")(
        type(f"{prefix}ItemField", (serializers.JSONField,), {}))
    params_field = extend_schema_field(params_schema, component_name=f"{prefix}Params")(
        type(f"{prefix}ParamsField", (serializers.JSONField,), {}))
    if _accepts_plain_strings(kind):
        item_help = f"the inputs: {prefix}Item objects, or plain strings (taken as the item's main text)"
    else:
        item_help = f"the inputs: {prefix}Item objects"
    if kind.max_items:
        item_help += f"; at most {kind.max_items}"
    fields = {
        "kind": serializers.ChoiceField(choices=[kind.name], help_text="the job kind; selects this schema"),
        "items": serializers.ListField(child=item_field(), help_text=item_help),
        "params": params_field(required=False),
        "__doc__": kind.description,
        "__module__": __name__,
    }
    return type(f"{prefix}JobSubmitSerializer", (serializers.Serializer,), fields)


def job_submit_request() -> PolymorphicProxySerializer:
    """The JSON submission body: ``oneOf`` the kinds' submit components, discriminated by ``kind``."""
    return PolymorphicProxySerializer(
        component_name="JobSubmission",
        # An explicit mapping: the kind field is an enum component, from which the mapping cannot be read.
        serializers=lambda: {name: _submit_serializer(name) for name in sorted(KINDS)},
        resource_type_field_name="kind",
    )


def job_submit_examples() -> list[OpenApiExample]:
    return [OpenApiExample(name, value=kind_example(KINDS[name]), request_only=True,
                           summary=KINDS[name].description, media_type="application/json")
            for name in sorted(KINDS)]
