"""Form fields generated from a job kind's params JSON schema, and the params a submitted form means.

The conversion is deliberately thin: values are only cast to the schema's type where that is
unambiguous, and everything else goes to ``job_validate`` as typed, so the messages next to the fields
are the API's own (``SubmissionInvalid``), word for word.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParamField:
    name: str
    label: str
    widget: str  # number | checkbox | select | multi | text
    description: str = ""
    default: object = None
    value: object = None  # what the form shows now (the default, or what was submitted)
    choices: list = field(default_factory=list)
    minimum: object = None
    maximum: object = None
    step: str = "any"
    max_length: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def html_id(self) -> str:
        return f"param-{self.name}"

    @property
    def default_display(self) -> str:
        """The default as a person reads it: on/off, a comma-separated list, or the value."""
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, list):
            return ", ".join(str(v) for v in self.default) or "none"
        return str(self.default)


ACRONYMS = {"hpo": "HPO", "k": "k", "id": "id"}


def _label(name: str) -> str:
    words = [ACRONYMS.get(word, word) for word in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _types(spec: dict) -> list[str]:
    kind = spec.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def param_fields(schema: dict) -> list[ParamField]:
    """One field per property of the params schema, in the schema's order, showing its default."""
    fields = []
    for name, spec in (schema.get("properties") or {}).items():
        types = _types(spec)
        common = {"name": name, "label": _label(name), "description": spec.get("description", ""),
                  "default": spec.get("default"), "value": spec.get("default")}
        if "enum" in spec:
            fields.append(ParamField(widget="select", choices=[c for c in spec["enum"] if c is not None], **common))
        elif "boolean" in types:
            fields.append(ParamField(widget="checkbox", **common))
        elif "integer" in types or "number" in types:
            fields.append(ParamField(widget="number", minimum=spec.get("minimum"), maximum=spec.get("maximum"),
                                     step="1" if "integer" in types else "any", **common))
        elif "array" in types and "enum" in (spec.get("items") or {}):
            fields.append(ParamField(widget="multi", choices=list(spec["items"]["enum"]), **common))
        else:
            fields.append(ParamField(widget="text", max_length=spec.get("maxLength"), **common))
    return fields


def _number(raw: str):
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw  # not a number: job_validate says "must be of type ..."


def params_from_form(fields: list[ParamField], data) -> dict:
    """The params a submitted form means (``data``: request.POST). Empty text/number inputs are left out,
    so the schema's default applies; an unchecked box is ``false``. Updates each field's shown value."""
    params: dict = {}
    for f in fields:
        key = f.html_id
        if f.widget == "checkbox":
            params[f.name] = f.value = key in data
        elif f.widget == "multi":
            params[f.name] = f.value = [c for c in f.choices if c in data.getlist(key)]
        else:
            raw = (data.get(key) or "").strip()
            f.value = raw
            if raw:
                params[f.name] = _number(raw) if f.widget == "number" else raw
    return params


def attach_errors(fields: list[ParamField], errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Put ``params.<name>`` errors on their fields; return the errors that belong to no param field."""
    by_name = {f.name: f for f in fields}
    rest: dict[str, list[str]] = {}
    for path, messages in errors.items():
        name = path.removeprefix("params.").split(".")[0].split("[")[0] if path.startswith("params.") else None
        if name in by_name:
            by_name[name].errors.extend(messages)
        else:
            rest[path] = messages
    return rest


def pasted_items(text: str) -> list[str]:
    """Pasted text as items: blocks separated by blank lines, one item each (a bare string per item,
    which each kind's ``normalize_item`` reads as its main field)."""
    blocks = [block.strip() for block in text.replace("\r\n", "\n").split("\n\n")]
    return [block for block in blocks if block]
