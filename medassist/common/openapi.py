"""OpenAPI post-processing: every operation documents the error responses it can give (issue 12).

The API answers bad input, a missing login, a missing permission, an unknown id and throttling with one
shape (``medassist.common.errors``: ``{"detail": ..., "errors": {field: [messages]}}``). Documenting
those codes once, here, keeps the schema honest for clients and lets schemathesis check every response
against it.
"""
from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "a sentence for the person who sent the request"},
        "errors": {"type": "object", "description": "field path -> list of messages",
                   "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
}
_EVERY_OPERATION = {
    "400": "invalid input: see errors for each field; nothing was stored",
    "401": "no valid credentials (Authorization: Token <key>)",
    "403": "authenticated, but not allowed to do this",
    "404": "no such object visible to you (or no such page)",
    "429": "throttled: retry after the number of seconds in Retry-After",
}
_WRITES = {
    "409": "the object's state does not allow this now",
    "413": "the request or its file is larger than the limits allow",
    "503": "a service the request needs is unreachable: retry after Retry-After seconds",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = dict(_EVERY_OPERATION)
            if method.lower() in ("post", "put", "patch", "delete"):
                codes.update(_WRITES)
            for code, description in codes.items():
                operation["responses"].setdefault(
                    code, {"description": description, "content": {"application/json": {"schema": ref}}})
    return result
