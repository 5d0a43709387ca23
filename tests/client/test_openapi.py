"""/api/v1/schema/: valid OpenAPI, with every job kind's params and item schemas as a ``oneOf``
discriminated by ``kind``, each with its description and an example the kind itself accepts."""
from __future__ import annotations

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from medassist.jobs.openapi import component_prefix, kind_example, openapi_schema
from medassist.kinds import KINDS


@pytest.fixture
def spec(api):
    response = api.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_published_schema_is_valid_openapi(spec):
    validate(spec)  # raises OpenAPIValidationError with the offending path


def test_every_kind_is_a_branch_of_the_submission_oneof_discriminated_by_kind(spec):
    body = spec["paths"]["/api/v1/jobs/"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/JobSubmission"}
    components = spec["components"]["schemas"]
    submission = components["JobSubmission"]
    expected = {name: f"#/components/schemas/{component_prefix(name)}JobSubmit" for name in KINDS}
    assert submission["discriminator"] == {"propertyName": "kind", "mapping": expected}
    assert sorted(branch["$ref"] for branch in submission["oneOf"]) == sorted(expected.values())
    assert sorted(body["examples"]) == sorted(component_prefix(name) for name in KINDS)

    for name, kind in KINDS.items():
        prefix = component_prefix(name)
        branch = components[f"{prefix}JobSubmit"]
        assert branch["description"] == kind.description and set(branch["required"]) == {"kind", "items"}
        assert branch["properties"]["items"]["items"] == {"$ref": f"#/components/schemas/{prefix}Item"}
        assert branch["properties"]["params"] == {"$ref": f"#/components/schemas/{prefix}Params"}
        params, item = components[f"{prefix}Params"], components[f"{prefix}Item"]
        assert set(params["properties"]) == set(kind.params_schema.get("properties", {}))
        assert set(item["properties"]) == set(kind.item_schema.get("properties", {}))
        for field, field_schema in kind.params_schema.get("properties", {}).items():
            if field_schema.get("description"):
                assert params["properties"][field]["description"] == field_schema["description"], (name, field)
        assert params["example"] == kind_example(kind)["params"]


def test_each_example_is_accepted_by_its_kind_and_by_the_published_schema(spec):
    for name, kind in KINDS.items():
        example = kind_example(kind)
        assert example["kind"] == name
        kind.params_validator.validate(example["params"])
        for raw in example["items"]:
            kind.item_validator.validate(kind.normalize_item(raw))
        # ... and against the OpenAPI rendering of the same schema (resolving its $refs in the spec).
        document = {**spec["components"]["schemas"][f"{component_prefix(name)}JobSubmit"],
                    "components": spec["components"]}
        OAS30Validator(document).validate({**example, "items": [i for i in example["items"] if isinstance(i, dict)]})
    # Nulls where a kind allows them pass the OpenAPI rendering too (OpenAPI 3.0 has no null type).
    document = {**spec["components"]["schemas"]["DiagnosisJobSubmit"], "components": spec["components"]}
    OAS30Validator(document).validate({"kind": "diagnosis", "items": [{"symptoms": "cough", "age": None, "sex": None,
                                                                       "id": None}]})
    assert list(OAS30Validator(document).iter_errors({"kind": "diagnosis", "items": [{"symptoms": "x", "age": "old"}]}))


def test_json_schema_type_lists_become_openapi_3_0_nullable():
    assert openapi_schema({"type": ["string", "null"], "maxLength": 5}) == {"type": "string", "maxLength": 5,
                                                                            "nullable": True}
    assert openapi_schema({"type": ["string", "integer", "null"]}) == {
        "anyOf": [{"type": "string", "nullable": True}, {"type": "integer", "nullable": True}]}
    assert openapi_schema({"enum": ["f", "m", None]}) == {"enum": ["f", "m", None], "nullable": True}
    assert openapi_schema({"type": "object", "properties": {"a": {"const": 1, "examples": [1, 2]}}}) == {
        "type": "object", "properties": {"a": {"enum": [1], "example": 1}}}
