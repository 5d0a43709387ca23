"""Turn an uploaded job file into a list of item dicts.

``parse_upload`` takes the raw bytes sent to ``POST /api/v1/jobs/`` and returns
one dict per usable record, or raises ``UploadError`` whose ``str()`` is a
sentence meant for the user. Supported: JSON Lines, CSV/TSV, NLM
PubMed/MEDLINE XML, PubMedQA JSON (``{id: {QUESTION, CONTEXTS, LABELS, ...}}``:
one item per question, with its own ``question``) and a JSON array of records,
each optionally gzip-compressed. Validation of item
contents (required keys, text length) is the job kind's business, not ours.

Kept free of Django so it can be used and tested anywhere.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
import re
import zlib
from dataclasses import dataclass, field

from defusedxml import DefusedXmlException, EntitiesForbidden
from defusedxml.ElementTree import iterparse

__all__ = ["UploadError", "UploadTooLarge", "ParsedUpload", "parse_upload", "MAX_DECOMPRESSED_BYTES",
           "JsonLimits", "JsonTooDeep", "json_problems", "loads_strict"]

# A small .gz can inflate to gigabytes; stop before that eats the worker's memory.
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024
MAX_SKIPPED_ENTRIES = 100
# Above the csv default (128 KiB) so long abstracts fit, yet still catches a
# runaway unclosed quote long before it swallows a huge file.
CSV_FIELD_LIMIT = 10 * 1024 * 1024

TEXT_COLUMNS = ("text", "abstract", "abstracttext", "abstract_text")
_CSV_OPTIONAL = {"title": "title", "articletitle": "title", "pmid": "pmid", "id": "id", "year": "year"}
_EXT_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".xml": "xml",
}
_XML_ROOTS = {"MedlineCitationSet": "medline-xml", "PubmedArticleSet": "pubmed-xml"}
_XML_DECL_ENCODING = re.compile(rb"""[ \t\r\n]*<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_NON_SPACE = re.compile(rb"\S")
_EXPAT_POSITION = re.compile(r":\s*line \d+, column \d+\s*$")
_FOUR_DIGITS = re.compile(r"\d{4}")


# --- strict JSON and bounded values (issue 12 fuzzing, issue 13 input limits) -------------------------
# What json.loads accepts but nothing downstream can hold: NaN/Infinity (and 1e400, which parses as
# inf) are not JSON and jsonb refuses them; a NUL cannot go into Postgres text/jsonb; a lone surrogate
# cannot be encoded as UTF-8; deep nesting exhausts the C parser's recursion (RecursionError) and,
# short of that, every recursive walk after it.


class JsonTooDeep(ValueError):
    pass


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use null or a finite number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is too large (not a finite 64-bit float)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_strict(text: str | bytes):
    """json.loads without NaN/Infinity/overflowing numbers; RecursionError becomes ``JsonTooDeep``.

    Raises ``json.JSONDecodeError`` for malformed JSON and ``ValueError`` for the rest."""
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text))
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise JsonTooDeep("JSON is nested too deeply") from None


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on one JSON value (an item, a job's params): every string, list, object and level."""

    max_depth: int = 10  # levels of arrays/objects inside the value itself
    max_string: int = 20_000  # characters of any one string
    max_list: int = 1_000  # entries of any one array
    max_keys: int = 100  # keys of any one object
    max_key: int = 200  # characters of a key
    max_total: int = 100_000  # characters of all strings and keys together
    skip_length: frozenset = frozenset()  # top-level keys whose string length the caller checks itself


_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def _char_problem(text: str) -> str | None:
    m = _BAD_CHARS.search(text)
    if m is None:
        return None
    if m.group() == "\x00":
        return f"contains a NUL character (\\u0000) at position {m.start()}, which cannot be stored; remove it"
    return (f"contains a lone surrogate (U+{ord(m.group()):04X}) at position {m.start()}, which is not valid "
            "Unicode; save the text as UTF-8 and send it again")


_PLAIN = (int, bool, type(None))  # nothing to check in these


def _unchain(chain) -> list:
    parts = []
    while chain is not None:
        chain, key = chain
        parts.append(key)
    return parts[::-1]


def json_problems(value, limits: JsonLimits = JsonLimits()) -> list[tuple[list, str]]:
    """(path, message) for each bound ``value`` breaks; [] when it is fine. Paths are lists of keys and
    indexes, relative to ``value``. Stops descending at ``max_depth``, so it never recurses deeply.
    Runs on every item of a 50,000-item job: paths are built only for a problem (a (parent, key) chain)."""
    problems: list[tuple[list, str]] = []
    total = 0
    inf = float("inf")

    def string(text: str, chain) -> None:
        problem = _char_problem(text)
        if problem:
            problems.append((_unchain(chain), problem))
        elif len(text) > limits.max_string and not (chain is not None and chain[0] is None
                                                     and chain[1] in limits.skip_length):
            problems.append((_unchain(chain), f"is {len(text):,} characters long; the limit is {limits.max_string:,}"))

    def walk(node, chain, depth: int) -> None:
        nonlocal total
        kind = type(node)
        if kind is str:
            total += len(node)
            if len(node) > limits.max_string or _BAD_CHARS.search(node):
                string(node, chain)
        elif kind is float:
            if node != node or node == inf or node == -inf:
                problems.append((_unchain(chain), "must be a finite number (NaN and Infinity are not valid JSON)"))
        elif kind is dict or kind is list:
            if depth >= limits.max_depth:
                problems.append((_unchain(chain), f"is nested too deeply: at most {limits.max_depth} levels of "
                                                  "arrays and objects"))
                return
            if kind is list:
                if len(node) > limits.max_list:
                    problems.append((_unchain(chain), f"has {len(node):,} entries; the limit is {limits.max_list:,}"))
                    return
                for i, child in enumerate(node):
                    if type(child) not in _PLAIN:
                        walk(child, (chain, i), depth + 1)
                return
            if len(node) > limits.max_keys:
                problems.append((_unchain(chain), f"has {len(node):,} keys; the limit is {limits.max_keys:,}"))
                return
            for key, child in node.items():
                key = key if type(key) is str else str(key)
                total += len(key)
                if len(key) > limits.max_key or _BAD_CHARS.search(key):
                    problem = _char_problem(key)
                    if problem:
                        problems.append((_unchain(chain) + [key.replace("\x00", "\\u0000")], f"key {problem}"))
                    else:
                        problems.append((_unchain(chain) + [key[:40] + "…"],
                                         f"key is {len(key):,} characters long; the limit is {limits.max_key:,}"))
                    continue
                if type(child) not in _PLAIN:
                    walk(child, (chain, key), depth + 1)
        elif isinstance(node, str | float | dict | list):  # subclasses: rare, same rules
            walk(str(node) if isinstance(node, str) else float(node) if isinstance(node, float)
                 else dict(node) if isinstance(node, dict) else list(node), chain, depth)

    walk(value, None, 0)
    if not problems and total > limits.max_total:
        problems.append(([], f"holds {total:,} characters in all; the limit is {limits.max_total:,}"))
    return problems


class UploadError(ValueError):
    """A file the user sent cannot be used. str(e) is a complete sentence for the user; .field is "file"."""

    field = "file"
    status_code = 400


class UploadTooLarge(UploadError):
    status_code = 413


@dataclass
class ParsedUpload:
    items: list[dict]  # one dict per usable record, in file order
    format: str  # "jsonl" | "json" | "pubmedqa" | "csv" | "medline-xml" | "pubmed-xml"
    records: int  # records seen in the file (usable + skipped)
    skipped: list[dict] = field(default_factory=list)  # first MAX_SKIPPED_ENTRIES only


def parse_upload(
    data, filename: str = "", *, max_items: int = 50_000, max_chars: int | None = None, max_bytes: int | None = None
) -> ParsedUpload:
    """Parse an uploaded file: ``data`` is bytes or a binary file object (read in chunks, never whole).

    ``max_bytes`` bounds the bytes read *after* decompression (default ``MAX_DECOMPRESSED_BYTES``): the
    API passes ``MEDASSIST_MAX_UPLOAD_BYTES``, so a small .gz cannot inflate past the upload limit.
    Records are parsed as they stream in, one at a time, so memory holds the items, not the file.
    ``max_chars`` is accepted for call-site symmetry but not enforced here: the job kind checks text
    length per item."""
    budget = MAX_DECOMPRESSED_BYTES if max_bytes is None else max_bytes
    source = _Source(data)
    stream = source.open(budget)
    head = _read_head(stream)
    if head[:4] == b"PK\x03\x04":
        raise UploadError(
            "file is a ZIP archive; upload the .jsonl, .csv or .xml file itself (optionally gzip-compressed)"
        )
    bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    first = _NON_SPACE.search(head, bom)
    if first is None:
        raise UploadError("file is empty")

    kind = _format_for(filename, head[first.start() : first.start() + 1])
    out = _Collector(max_items)
    if kind == "xml":
        fmt = _parse_xml(head, stream, out, lambda: source.open(budget))
        return ParsedUpload(out.items, fmt, out.records, out.skipped)

    chunks = _utf8_chunks(_Chain(head, stream))
    if kind == "jsonl":
        fmt = _parse_json_stream(chunks, out, lambda: _utf8_chunks(source.open(budget)))
        return ParsedUpload(out.items, fmt, out.records, out.skipped)
    _parse_csv(chunks, "\t" if kind == "tsv" else None, out)
    return ParsedUpload(out.items, "csv", out.records, out.skipped)


class _Collector:
    """Counts records and stops the moment the item limit is crossed."""

    def __init__(self, max_items: int):
        self.max_items = max_items
        self.items: list[dict] = []
        self.records = 0
        self.skipped: list[dict] = []

    def add(self, item: dict) -> None:
        self.records += 1
        if len(self.items) >= self.max_items:
            n = f"{self.max_items:,}"
            raise UploadTooLarge(
                f"file holds more than {n} records; the limit is {n} per job: split it into several jobs"
            )
        self.items.append(item)

    def skip(self, reason: str, pmid: str | None = None) -> None:
        self.records += 1
        if len(self.skipped) < MAX_SKIPPED_ENTRIES:
            entry: dict = {"record": self.records}
            if pmid:
                entry["pmid"] = pmid
            entry["reason"] = reason
            self.skipped.append(entry)


# --- bytes -> text (streamed, within a byte budget) ------------------------------------------------

READ_SIZE = 1 << 16
# One record (a JSON line, an array element, a CSV line, an XML citation) above this is refused: it
# bounds what a single hostile record can make the parser build, e.g. millions of empty arrays.
MAX_RECORD_CHARS = 4 * 1024 * 1024
MAX_XML_ELEMENTS_PER_RECORD = 100_000
MAX_XML_DEPTH = 64


def _too_large(budget: int, compressed: bool) -> UploadTooLarge:
    mb = budget / (1024 * 1024)
    size = f"{mb:,.0f} MB" if mb >= 1 else f"{budget:,} bytes"
    what = "decompresses to" if compressed else "is"
    return UploadTooLarge(f"file {what} more than {size}; the limit is {size} per job: split it into several jobs")


class _Source:
    """The upload, re-readable from its start (the XML encoding check and JSON sniffing look twice)."""

    def __init__(self, data):
        self.file = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data

    def open(self, budget: int):
        if hasattr(self.file, "seek"):
            self.file.seek(0)
        magic = self.file.read(2)
        raw = _Chain(magic, self.file)
        if magic == b"\x1f\x8b":  # by magic: browsers and users mislabel files
            return _Gunzip(raw, budget)
        return _Budget(raw, budget)


class _Chain(io.RawIOBase):
    """``head`` then the rest of ``stream``: bytes read ahead to sniff the format are not lost."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = memoryview(bytes(head)), stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = READ_SIZE if size is None or size < 0 else size
        if self.head:
            out, self.head = bytes(self.head[:size]), self.head[size:]
            if len(out) < size:  # a full block: sniffing needs more than the two magic bytes
                out += self.stream.read(size - len(out))
            return out
        return self.stream.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Budget(io.RawIOBase):
    """A plain stream that stops with 413 once more than ``budget`` bytes were read."""

    def __init__(self, raw, budget: int):
        self.raw, self.budget, self.total = raw, budget, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(READ_SIZE if size is None or size < 0 else size)
        self.total += len(data)
        if self.total > self.budget:
            raise _too_large(self.budget, False)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Gunzip(io.RawIOBase):
    """Stream-decompress gzip (multi-member, CRC checked by zlib) with a running budget on the output."""

    def __init__(self, raw, budget: int):
        self.raw, self.budget, self.total = raw, budget, 0
        self.inflater = zlib.decompressobj(wbits=31)
        self.pending = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def _fail(self, reason) -> UploadError:
        return UploadError(
            f"file looks gzip-compressed but cannot be decompressed ({reason}); check the file and upload again"
        )

    def read(self, size: int = -1) -> bytes:
        size = READ_SIZE if size is None or size < 0 else size
        while not self.pending and not self.done:
            if self.inflater.eof:  # first: a finished member returns b"" for ever, whatever it is fed
                rest = self.inflater.unused_data or self.inflater.unconsumed_tail or self.raw.read(READ_SIZE)
                if not rest:
                    self.done = True
                    break
                self.inflater = zlib.decompressobj(wbits=31)  # the next member
                compressed = rest
            elif self.inflater.unconsumed_tail:
                compressed = self.inflater.unconsumed_tail
            else:
                compressed = self.raw.read(READ_SIZE)
                if not compressed:
                    raise self._fail("Compressed file ended before the end-of-stream marker was reached")
            try:
                # max_length: a bomb inflates at most READ_SIZE at a time, whatever its ratio.
                self.pending = self.inflater.decompress(compressed, READ_SIZE)
            except zlib.error as e:
                raise self._fail(e) from None
            self.total += len(self.pending)
            if self.total > self.budget:
                raise _too_large(self.budget, True)
        out, self.pending = self.pending[:size], self.pending[size:]
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read_head(stream) -> bytes:
    """The first block, and more until a non-space byte shows (the format is decided by it)."""
    blocks = [stream.read(READ_SIZE)]
    size = len(blocks[0])
    while blocks[-1] and _NON_SPACE.search(blocks[-1]) is None or blocks[-1] == codecs.BOM_UTF8:
        more = stream.read(READ_SIZE)
        if not more:
            break
        blocks.append(more)
        size += len(more)
        if size > MAX_RECORD_CHARS:
            raise UploadError(f"file starts with more than {MAX_RECORD_CHARS:,} bytes of blank space; "
                              "is it the right file?")
    return b"".join(blocks)


def _utf8_chunks(stream):
    """Decoded text, block by block; the position in an encoding error counts bytes from the file's start."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    block = stream.read(READ_SIZE)
    while 0 < len(block) < 3 and (more := stream.read(READ_SIZE)):  # a whole BOM to look at
        block += more
    if block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UploadError("file is UTF-16 encoded; save it as UTF-8 and upload again")
    offset = 0
    if block.startswith(codecs.BOM_UTF8):
        block, offset = block[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    while True:
        pending = len(decoder.getstate()[0])  # bytes of a character split across blocks, held back
        try:
            text = decoder.decode(block, final=False)
        except UnicodeDecodeError as e:
            raise _encoding_error(e.object[e.start], offset - pending + e.start, "UTF-8") from None
        offset += len(block)
        if text:
            yield text
        block = stream.read(READ_SIZE)
        if not block:
            break
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)  # a character cut off by the end of the file
    except UnicodeDecodeError as e:
        raise _encoding_error(e.object[e.start], offset - pending + e.start, "UTF-8") from None


def _encoding_error(byte: int, pos: int, encoding: str, declared: bool = False) -> UploadError:
    said = " as its XML declaration says" if declared else ""
    return UploadError(
        f"file is not {encoding} encoded{said} (invalid byte 0x{byte:02x} at position {pos}); "
        "save it as UTF-8 and upload again"
    )


def _format_for(filename: str, first_byte: bytes) -> str:
    name = os.path.basename((filename or "").strip().replace("\\", "/")).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    kind = _EXT_FORMATS.get(os.path.splitext(name)[1])
    if kind:
        return kind
    if first_byte == b"<":
        return "xml"
    if first_byte in (b"{", b'"'):
        return "jsonl"
    return "csv"


# --- JSON Lines, JSON documents, PubMedQA ------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")


class _JsonStream:
    """A text buffer over decoded chunks for reading one JSON value at a time (``raw_decode``), so a
    document of 50,000 records is never one string nor one parsed tree."""

    def __init__(self, chunks):
        self.chunks, self.buf, self.pos, self.eof, self.consumed = chunks, "", 0, False, 0

    def _more(self, want: int = READ_SIZE) -> bool:
        if self.eof:
            return False
        if self.pos > READ_SIZE:  # drop what was read: memory holds about one record
            self.consumed += self.pos
            self.buf, self.pos = self.buf[self.pos:], 0
        if len(self.buf) - self.pos > MAX_RECORD_CHARS:
            raise UploadTooLarge(f"file has a record longer than {MAX_RECORD_CHARS:,} characters "
                                 f"(at character {self.consumed + self.pos:,}); records are far smaller")
        got = []
        size = 0
        for chunk in self.chunks:
            got.append(chunk)
            size += len(chunk)
            if size >= want:
                break
        else:
            self.eof = True
        self.buf += "".join(got)
        return bool(got)

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def take(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.buf[self.pos]) if self.pos < len(self.buf) else "the end of the file"
            raise UploadError(f"file is not valid JSON: expected {char!r} at character "
                              f"{self.consumed + self.pos:,}, found {found}")
        self.pos += 1

    def value(self):
        self.peek()
        want = READ_SIZE
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if self._more(want):
                    want *= 2  # a long record: read ahead in growing steps, not one block per retry
                    continue
                raise UploadError(f"file is not valid JSON ({e.msg} at character {self.consumed + e.pos:,})") from None
            except RecursionError:
                raise UploadError("file is JSON nested too deeply to read; records nest a few levels at most") from None
            except ValueError as e:  # NaN, 1e400
                raise UploadError(f"file is not valid JSON: {e}") from None
            if end == len(self.buf) and self._more(want):  # a number may go on in the next block
                continue
            if end - self.pos > MAX_RECORD_CHARS:
                raise UploadTooLarge(f"file has a record longer than {MAX_RECORD_CHARS:,} characters "
                                     f"(at character {self.consumed + self.pos:,}); records are far smaller")
            self.pos = end
            return value


def _parse_json_stream(chunks, out: _Collector, reopen) -> str:
    """JSON Lines, or one JSON document: an array of records, or PubMedQA's ``{id: {QUESTION,
    CONTEXTS, ...}}``. A file starting with "{" whose first member is not a PubMedQA record is JSON
    Lines (read again from the start); a one-line JSON Lines file is a JSON document too, and stays
    JSON Lines."""
    doc = _JsonStream(chunks)
    start = doc.peek()
    if start == "[":
        doc.take("[")
        position = 0
        if doc.peek() == "]":
            doc.take("]")
        else:
            while True:
                position += 1
                value = doc.value()
                if isinstance(value, dict):
                    out.add(value)
                elif isinstance(value, str):
                    out.add({"text": value})
                else:
                    raise UploadError(f"file record {position}: expected a JSON object or string, "
                                      f"found {_json_type(value)}")
                if doc.peek() == "]":
                    doc.take("]")
                    break
                doc.take(",")
        if doc.peek():
            raise UploadError("file is not valid JSON: more data after the closing ] of the array")
        return "json"
    if start == "{" and _pubmedqa_members(doc, out):
        return "pubmedqa"
    _parse_jsonl(_lines(reopen() if start == "{" else _Replay(doc), "\n"), out)
    return "jsonl"


class _Replay:
    """The chunks a _JsonStream has not consumed yet, from its very start (nothing was consumed)."""

    def __init__(self, doc: _JsonStream):
        self.doc = doc

    def __iter__(self):
        yield self.doc.buf
        yield from self.doc.chunks


def _pubmedqa_members(doc: _JsonStream, out: _Collector) -> bool:
    """Read ``{id: record, ...}`` member by member if its first record is PubMedQA's; False (nothing
    added) when it is not, e.g. a JSON Lines file's first record."""
    try:
        doc.take("{")
        if doc.peek() != '"':
            return False
        first = True
        while True:
            key = doc.value()
            doc.take(":")
            record = doc.value()
            if first:
                if not (isinstance(record, dict) and "QUESTION" in record and "CONTEXTS" in record):
                    return False
                first = False
            elif not isinstance(record, dict):
                raise UploadError(f"file record {key!r}: expected a PubMedQA record (an object with QUESTION "
                                  f"and CONTEXTS), found {_json_type(record)}")
            _add_pubmedqa(str(key), record, out)
            if doc.peek() == "}":
                doc.take("}")
                break
            doc.take(",")
    except UploadTooLarge:
        raise
    except UploadError:
        if out.records:
            raise
        return False  # not a JSON document at all (JSON Lines): the line parser says what is wrong
    if doc.peek():
        if out.records == 1:  # a one-record object followed by more lines: JSON Lines after all
            out.items.clear()
            out.records = 0
            out.skipped.clear()
            return False
        raise UploadError("file is not valid JSON: more data after the closing } of the document")
    return True


def _add_pubmedqa(key: str, record: dict, out: _Collector) -> None:
    """One PubMedQA question as an item: the contexts as the abstract (PubMedQA's own setting: the
    conclusion, ``LONG_ANSWER``, is not part of it), the question, and the expert label as
    ``reference_answer`` (kept with the item, never read by the answer)."""
    contexts = record.get("CONTEXTS")
    question = record.get("QUESTION")
    if isinstance(contexts, str):
        contexts = [contexts]
    if not isinstance(contexts, list) or not any(isinstance(c, str) and c.strip() for c in contexts):
        out.skip("no CONTEXTS text", key)
        return
    if not isinstance(question, str) or not question.strip():
        out.skip("no QUESTION", key)
        return
    contexts = [c for c in contexts if isinstance(c, str) and c.strip()]
    labels = record.get("LABELS") if isinstance(record.get("LABELS"), list) else []
    item: dict = {"id": key, "text": " ".join(c.strip() for c in contexts), "question": question.strip(),
                  "sections": [{"label": str(label), "text": c} for label, c in zip(labels, contexts, strict=False)]}
    if key.isdigit():
        item["pmid"] = key
    year = str(record.get("YEAR") or "")
    if year.isdigit():
        item["year"] = int(year)
    if isinstance(record.get("MESHES"), list):
        item["mesh"] = [{"name": str(m)} for m in record["MESHES"]]
    if record.get("final_decision") in ("yes", "no", "maybe"):
        item["reference_answer"] = record["final_decision"]
    out.add(item)


# --- JSON Lines --------------------------------------------------------------


_LINE_WITH_END = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")


def _lines(chunks, newline: str | None = None):
    """(line number, line) from text chunks. ``newline="\\n"``: split on LF only, line without it (JSON
    strings may legally hold U+2028 and CR); None: split on LF, CRLF and CR and keep the ending, as
    csv needs. A line longer than MAX_RECORD_CHARS is refused before it is built."""
    carry = ""
    number = 0
    for chunk in chunks:
        text = carry + chunk if carry else chunk
        if newline == "\n" or "\r" not in text:
            parts = text.split("\n")
            carry = parts.pop()
            if newline is None:
                parts = [part + "\n" for part in parts]
        else:
            parts = _LINE_WITH_END.findall(text)
            consumed = sum(map(len, parts))
            carry = text[consumed:]
            if not carry and parts[-1].endswith("\r"):  # maybe the first half of a CRLF split across chunks
                carry = parts.pop()
        if len(carry) > MAX_RECORD_CHARS:
            raise UploadTooLarge(f"file line {number + len(parts) + 1} is longer than {MAX_RECORD_CHARS:,} "
                                 "characters; records are far smaller")
        for part in parts:
            number += 1
            if len(part) > MAX_RECORD_CHARS:
                raise UploadTooLarge(f"file line {number} is longer than {MAX_RECORD_CHARS:,} characters; "
                                     "records are far smaller")
            yield number, part
    if carry:
        yield number + 1, carry


def _parse_jsonl(lines, out: _Collector) -> None:
    loads = loads_strict
    for lineno, line in lines:
        if not line or line.isspace():
            continue
        try:
            value = loads(line)
        except json.JSONDecodeError as e:
            # A pretty-printed .json file fails on its opening bracket; say why.
            hint = "; JSON Lines needs each record on a single line" if line.strip() in ("[", "{") else ""
            raise UploadError(f"file line {lineno}: invalid JSON ({e.msg} at column {e.colno}){hint}") from None
        except JsonTooDeep:
            raise UploadError(f"file line {lineno}: JSON nested too deeply to read; records nest a few levels "
                              "at most") from None
        except ValueError as e:
            raise UploadError(f"file line {lineno}: {e}") from None
        if isinstance(value, dict):
            out.add(value)
        elif isinstance(value, str):
            out.add({"text": value})
        else:
            raise UploadError(
                f"file line {lineno}: expected a JSON object or string, found {_json_type(value)} "
                "(the file must hold one record per line)"
            )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    return "a number"


# --- CSV / TSV ---------------------------------------------------------------


def _parse_csv(chunks, delimiter: str | None, out: _Collector) -> None:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    lines = _lines(chunks)
    first = next(lines, None)
    if delimiter is None:
        delimiter = _guess_delimiter(first[1] if first else "")
    label = "TSV" if delimiter == "\t" else "CSV"
    # strict: an unclosed quote must fail loudly instead of swallowing the rest of the file.
    stream = itertools.chain([first] if first else [], lines)
    reader = csv.reader((line for _, line in stream), delimiter=delimiter, strict=True)

    def rows():
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if "unexpected end of data" in str(e):
                    raise UploadError(
                        f"file line {start}: a quoted field starting on this line is never closed; "
                        'check for a stray " character'
                    ) from None
                raise UploadError(f"file line {start}: malformed {label} ({e})") from None
            # Spreadsheets export trailing all-empty rows; they are not records.
            if row and any(cell.strip() for cell in row):
                yield row

    it = rows()
    header = next(it, None)
    if header is None:
        raise UploadError("file is empty")
    names = [h.strip().lstrip("\ufeff").lower() for h in header]

    text_col = next((i for i, n in enumerate(names) if n in TEXT_COLUMNS), None)
    if text_col is None:
        found = ", ".join(h.strip() or "(blank)" for h in header[:30]) + (", …" if len(header) > 30 else "")
        raise UploadError(f"{label} has no text column: expected one of text, abstract; found columns: {found}")
    optional: dict[str, int] = {}
    for i, n in enumerate(names):
        key = _CSV_OPTIONAL.get(n)
        if key and key not in optional:
            optional[key] = i

    for row in it:
        width = len(row)
        text_value = row[text_col].strip() if text_col < width else ""
        item: dict = {}
        for key, i in optional.items():
            value = row[i].strip() if i < width else ""
            if not value:
                continue
            if key == "year":
                try:
                    item["year"] = int(value)
                except ValueError:
                    pass
            else:
                item[key] = value
        if not text_value:
            out.skip("no text", item.get("pmid") or item.get("id"))
            continue
        item["text"] = text_value
        out.add(item)


def _guess_delimiter(text: str) -> str:
    # Excel in many locales writes ";" or tabs into a ".csv"; decide from the header line.
    header = text[: text.find("\n")] if "\n" in text else text
    if "," in header:
        return ","
    if "\t" in header:
        return "\t"
    if ";" in header:
        return ";"
    return ","


# --- PubMed / MEDLINE XML ----------------------------------------------------


def _parse_xml(head: bytes, stream, out: _Collector, reopen) -> str:
    source, encoding = _xml_source(head, stream)
    fmt = None
    root = None
    depth = 0
    elements = 0  # in the record being read: a hostile record could otherwise grow without bound
    try:
        # defusedxml refuses entity declarations (billion laughs) and external
        # references; the DOCTYPE's external DTD is never fetched.
        for event, elem in iterparse(source, events=("start", "end"), forbid_dtd=False):
            if event == "start":
                if root is None:
                    root = elem
                    fmt = _XML_ROOTS.get(elem.tag)
                    if fmt is None:
                        raise UploadError(
                            f"file's XML root element is <{elem.tag}>, not a PubMed/MEDLINE citation set "
                            "(expected <PubmedArticleSet> or <MedlineCitationSet>)"
                        )
                depth += 1
                elements += 1
                if depth > MAX_XML_DEPTH or elements > MAX_XML_ELEMENTS_PER_RECORD:
                    raise UploadError(f"file has an XML record with more than {MAX_XML_ELEMENTS_PER_RECORD:,} "
                                      f"elements or {MAX_XML_DEPTH} levels; a citation has a few hundred")
                continue
            depth -= 1
            tag = elem.tag
            if tag == "MedlineCitation":
                _add_citation(elem, out)
            elif tag == "PubmedBookArticle":
                out.skip("book record, not a journal citation", (elem.findtext("BookDocument/PMID") or "").strip())
            if depth == 1:
                root.clear()  # drop finished records so memory stays flat
                elements = 0
    except SyntaxError as e:  # ParseError; defusedxml raises its own copy of the class
        if encoding is None:  # expat read the bytes as UTF-8: blame the encoding if that is the cause
            for _ in _utf8_chunks(reopen()):  # raises the encoding error, with its byte position
                pass
        line, column = getattr(e, "position", (None, None))
        message = _EXPAT_POSITION.sub("", str(e))
        where = f" (line {line}, column {column + 1})" if line is not None else ""
        raise UploadError(f"file is not well-formed XML: {message}{where}") from None
    except EntitiesForbidden:
        raise UploadError(
            "file declares XML entities (<!ENTITY>), which are refused for safety; remove them and upload again"
        ) from None
    except DefusedXmlException:
        raise UploadError("file refers to external XML resources, which are refused for safety") from None
    return fmt


def _read_all(stream) -> bytes:
    blocks = []
    while block := stream.read(READ_SIZE):
        blocks.append(block)
    return b"".join(blocks)


def _xml_source(head: bytes, stream) -> tuple[io.IOBase, str | None]:
    """Return a stream for the parser and the non-UTF-8 encoding it was decoded from (None for UTF-8)."""
    if head.startswith(codecs.BOM_UTF8):
        return _Chain(head, stream), None
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        declared = "UTF-16"
    else:
        m = _XML_DECL_ENCODING.match(head, 0, 1024)
        declared = m.group(1).decode("ascii") if m else None
    if declared is None or declared.lower() == "utf-8":
        return _Chain(head, stream), None  # expat's native path: streamed, fastest
    # Other encodings (rare): decode here, within the byte budget (Python knows more codecs than expat,
    # and the error is clearer) and hand the parser text, which overrides the declaration.
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        raise UploadError(
            f"file's XML declaration names an unknown encoding ({declared}); save it as UTF-8 and upload again"
        ) from None
    data = head + _read_all(stream)
    try:
        return io.StringIO(data.decode(codec)), declared
    except UnicodeDecodeError as e:
        raise _encoding_error(data[e.start], e.start, declared, declared=True) from None


def _text(elem) -> str:
    # itertext keeps inline markup (<i>, <sub>, <sup>); collapse the layout whitespace.
    return " ".join("".join(elem.itertext()).split())


def _add_citation(mc, out: _Collector) -> None:
    pmid = (mc.findtext("PMID") or "").strip()
    article = mc.find("Article")
    if article is None:
        out.skip("no abstract", pmid)
        return

    parts = []
    for node in article.iterfind("Abstract/AbstractText"):
        body = _text(node)
        if body:
            parts.append((node.get("Label") or None, node.get("NlmCategory") or None, body))
    if not parts:
        out.skip("no abstract", pmid)
        return

    title_node = article.find("ArticleTitle")
    title = _text(title_node) if title_node is not None else ""
    if not title:
        vernacular = article.find("VernacularTitle")
        title = _text(vernacular) if vernacular is not None else ""

    item: dict = {"pmid": pmid, "title": title}
    if any(label for label, _, _ in parts):
        item["text"] = "\n".join(f"{label}: {body}" if label else body for label, _, body in parts)
        item["sections"] = [{"label": label, "category": cat, "text": body} for label, cat, body in parts]
    else:
        item["text"] = " ".join(body for _, _, body in parts)

    year = _year(mc, article)
    if year is not None:
        item["year"] = year

    heading_list = mc.find("MeshHeadingList")
    if heading_list is not None:
        mesh = []
        for heading in heading_list.iterfind("MeshHeading"):
            descriptor = heading.find("DescriptorName")
            if descriptor is None:
                continue
            # NLM semantics: a heading is a major topic if its descriptor or any
            # of its qualifiers is starred (this is what PubMed's [majr] matches).
            major = descriptor.get("MajorTopicYN") == "Y" or any(
                q.get("MajorTopicYN") == "Y" for q in heading.iterfind("QualifierName")
            )
            mesh.append({"ui": descriptor.get("UI", ""), "name": _text(descriptor), "major": major})
        item["mesh"] = mesh

    out.add(item)


def _year(mc, article) -> int | None:
    pub_date = article.find("Journal/JournalIssue/PubDate")
    if pub_date is not None:
        year = (pub_date.findtext("Year") or "").strip()
        if year.isdecimal():
            return int(year)
        m = _FOUR_DIGITS.search(pub_date.findtext("MedlineDate") or "")
        if m:
            return int(m.group())
    year = (mc.findtext("DateCreated/Year") or "").strip()
    return int(year) if year.isdecimal() else None
