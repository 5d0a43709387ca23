"""Scrubbing direct identifiers from free text before it is stored (issue 13, privacy).

:func:`redact_text` replaces, in one left-to-right pass:

- ``email``: ``name@host.tld``;
- ``phone``: digit groups with separators, 9 to 15 digits in all (``(555) 123-4567``, ``+44 20 7946 0958``);
- ``id``: a medical record, patient, NHS or social security number after its label (``MRN: 00123456``,
  ``MR# A-99812``) or a US SSN (``123-45-6789``); bare numbers stay (``n=1234567``, ``150000`` platelets);
- ``date``: an exact (day-precise) date: ``03/14/2024``, ``2024-03-14``, ``14.3.24``, ``14 March 2024``,
  ``March 14, 2024``, ``14-Mar-2024``. A year alone, a month and year, ages (``58 y/o``, ``58-year-old``),
  durations (``3 days``), blood pressures (``120/80``) and fractions stay: they are clinical content,
  not identifiers;
- ``name``: the one to three capitalised words after a title (Mr, Mrs, Ms, Miss, Dr, Prof; the title stays).

Each is replaced by a placeholder (``[EMAIL]``, ``[PHONE]``, ``[ID]``, ``[DATE]``, ``[NAME]``). What was
redacted is reported as spans of the original text (type, start, end), never the values. Patterns are
conservative on purpose (clinical numbers must survive); they are no substitute for de-identified data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PLACEHOLDERS", "Redaction", "redact_text", "redact_item", "redact_param", "with_redactions"]

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "id": "[ID]", "date": "[DATE]", "name": "[NAME]"}

_MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
           r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_ID_LABELLED = re.compile(
    r"\b(?:MRN|MR\s?#|MR\s?No\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|patient\s+(?:id|number|no\.?)|"
    r"pt\.?\s+id|hospital\s+(?:id|number|no\.?)|NHS(?:\s+(?:number|no\.?))?|SSN|social\s+security(?:\s+number)?)"
    r"\s*(?:[:#=]|is|no\.?)?\s*(?P<value>[A-Z]{0,3}[-\s]?\d[\d-]{3,}[A-Z0-9]*)", re.IGNORECASE)
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_PHONE = re.compile(r"(?<![\w/.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,5}\)\s?|\d{2,5}[\s.-])(?:\d{2,4}[\s.-]){0,3}\d{3,4}"
                    r"(?![\w/]|\.\d)")
_DATE_NUMERIC = re.compile(r"(?<![\d/.-])(?P<a>\d{1,4})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<c>\d{2,4})(?![\d/.-]*\d)")
_DATE_WORDS = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?[\s-]+{_MONTHS}\.?,?[\s-]+\d{{2,4}}"
    rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b", re.IGNORECASE)
_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+(?P<value>(?:[A-Z]\.\s?)?[A-Z][a-zA-Z'’-]+"
                   r"(?:\s+[A-Z][a-zA-Z'’-]+){0,2})")


@dataclass(frozen=True)
class Redaction:
    type: str
    start: int  # offsets in the original text
    end: int

    def as_dict(self, field: str) -> dict:
        return {"field": field, "type": self.type, "start": self.start, "end": self.end}


def _plausible_date(a: str, b: str, c: str) -> bool:
    if len(a) == 4:  # ISO: year-month-day
        year, month, day = int(a), int(b), int(c)
        return len(c) <= 2 and 1 <= month <= 12 and 1 <= day <= 31 and 1800 <= year <= 2200
    if len(a) > 2:
        return False
    x, y = int(a), int(b)  # day/month or month/day: either reading must be a calendar date
    return ((1 <= x <= 31 and 1 <= y <= 12) or (1 <= x <= 12 and 1 <= y <= 31)) and len(c) in (2, 4)


def _candidates(text: str) -> list[Redaction]:
    found = [Redaction("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    found += [Redaction("id", m.start("value"), m.end("value")) for m in _ID_LABELLED.finditer(text)]
    found += [Redaction("id", m.start(), m.end()) for m in _SSN.finditer(text)]
    found += [Redaction("date", m.start(), m.end()) for m in _DATE_NUMERIC.finditer(text)
              if _plausible_date(m["a"], m["b"], m["c"])]
    found += [Redaction("date", m.start(), m.end()) for m in _DATE_WORDS.finditer(text)]
    found += [Redaction("phone", m.start(), m.end()) for m in _PHONE.finditer(text)
              if 9 <= sum(ch.isdigit() for ch in m.group()) <= 15]
    found += [Redaction("name", m.start("value"), m.end("value")) for m in _NAME.finditer(text)]
    return found


def redact_text(text: str) -> tuple[str, list[Redaction]]:
    """``text`` with identifiers replaced by placeholders, and the original spans replaced."""
    if not text:
        return text, []
    # Earliest first; at the same start the longest (a labelled id over the bare digits inside it).
    chosen: list[Redaction] = []
    for r in sorted(_candidates(text), key=lambda r: (r.start, -(r.end - r.start))):
        if not chosen or r.start >= chosen[-1].end:
            chosen.append(r)
    out, last = [], 0
    for r in chosen:
        out += [text[last:r.start], PLACEHOLDERS[r.type]]
        last = r.end
    out.append(text[last:])
    return "".join(out), chosen


def redact_item(item: dict, fields: tuple[str, ...]) -> dict:
    """A copy of ``item`` with its string ``fields`` redacted and, when anything was, ``redactions``:
    [{field, type, start, end}] (offsets in the text as sent)."""
    out = dict(item)
    spans: list[dict] = []
    for name in fields:
        value = item.get(name)
        if isinstance(value, str):
            out[name], found = redact_text(value)
            spans += [r.as_dict(name) for r in found]
    if spans:
        out["redactions"] = spans
    return out


def redact_param(*, default: bool) -> dict:
    """The ``redact`` job param of a kind whose free text may hold identifiers (JSON Schema)."""
    return {"type": "boolean", "default": default,
            "description": "replace emails, phone numbers, record numbers, exact dates and names after titles "
                           "(Mr/Mrs/Ms/Dr) in the free text with placeholders before anything is stored; each "
                           "result lists what was replaced as spans (field, type, start, end), never the values"}


def with_redactions(inputs: list[dict], results: list) -> list:
    """``results`` with each successful (dict) result carrying its input's ``redactions`` (if any)."""
    out = []
    for item, result in zip(inputs, results, strict=True):
        spans = item.get("redactions") if isinstance(item, dict) else None
        out.append({**result, "redactions": spans} if spans and isinstance(result, dict) else result)
    return out
