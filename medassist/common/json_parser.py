"""The API's JSON body parser: DRF's, with the bounds of ``medassist.common.parsers.loads_strict``.

DRF's own parser refuses NaN/Infinity but lets 1e400 through as inf, and a deeply nested body raises
RecursionError out of the C decoder, which became a 500 (issue 12). Here both are a 400 with a sentence.
"""
from __future__ import annotations

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .parsers import JsonTooDeep, loads_strict


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads_strict(stream.read().decode(encoding))
        except JsonTooDeep:
            raise ParseError("JSON parse error - the body is nested too deeply; "
                             "items and params nest a few levels at most") from None
        except json.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except (ValueError, LookupError) as exc:  # NaN, 1e400, undecodable bytes, unknown charset
            raise ParseError(f"JSON parse error - {exc}") from None
