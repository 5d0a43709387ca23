"""Match HTTP requests the client really sent against the OpenAPI schema the server publishes."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit


def operation(spec: dict, method: str, url: str) -> tuple[str, dict]:
    """The (path template, operation) of the schema that ``method url`` calls; AssertionError if none."""
    path = urlsplit(url).path
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            assert method.lower() in item, f"{method} {template} is not in the schema (it has {sorted(item)})"
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path}: no such path in the schema")


def mismatches(spec: dict, request) -> list[str]:
    """What in one sent ``requests.PreparedRequest`` the schema does not declare: the path and method,
    query parameters, headers of our own (Idempotency-Key), the body's media type."""
    template, op = operation(spec, request.method, request.url)
    where = f"{request.method} {template}"
    declared = {(p["in"], p["name"].lower()) for p in op.get("parameters", [])}
    problems = [f"{where}: query parameter {name!r} is not declared"
                for name, _ in parse_qsl(urlsplit(request.url).query) if ("query", name.lower()) not in declared]
    if "Idempotency-Key" in request.headers and ("header", "idempotency-key") not in declared:
        problems.append(f"{where}: header Idempotency-Key is not declared")
    if request.body is not None:
        media = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        content = op.get("requestBody", {}).get("content", {})
        if media not in content:
            problems.append(f"{where}: request body {media!r} is not one of {sorted(content)}")
    return problems
