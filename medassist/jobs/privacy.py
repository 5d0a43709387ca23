"""Privacy checks of a submission (issue 13), called by ``services.job_validate`` before anything is stored.

- ``submission_privacy_errors``: documents every user sees (``corpus_visibility: shared``) need the
  ``knowledge.share_document`` permission;
- ``submission_redact``: with the kind's ``redact`` param on (default for diagnosis), its free-text fields
  (``Kind.redact_fields``) are scrubbed of direct identifiers (``common.redaction``); each redacted item
  keeps the spans (``redactions``), which the worker copies into its result.
"""
from __future__ import annotations

from medassist.common.redaction import redact_item
from medassist.kinds import Kind
from medassist.knowledge.visibility import may_share

__all__ = ["submission_privacy_errors", "submission_redact"]


def submission_privacy_errors(*, user, params) -> dict[str, list[str]]:
    if isinstance(params, dict) and params.get("corpus_visibility") == "shared" and not may_share(user):
        return {"params.corpus_visibility": ["shared corpus documents need the knowledge.share_document "
                                             "permission; use private"]}
    return {}


def submission_redact(*, kind: Kind, items: list[dict], params: dict) -> list[dict]:
    if not (kind.redact_fields and params.get("redact")):
        return items
    return [redact_item(item, kind.redact_fields) if isinstance(item, dict) else item for item in items]
