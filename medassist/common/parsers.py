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
import gzip
import io
import json
import os
import re
import zlib
from dataclasses import dataclass, field

from defusedxml import DefusedXmlException, EntitiesForbidden
from defusedxml.ElementTree import iterparse

__all__ = ["UploadError", "UploadTooLarge", "ParsedUpload", "parse_upload", "MAX_DECOMPRESSED_BYTES"]

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
    data: bytes, filename: str = "", *, max_items: int = 50_000, max_chars: int | None = None
) -> ParsedUpload:
    """Parse an uploaded file. ``max_chars`` is accepted for call-site symmetry but
    not enforced here: the job kind checks text length per item."""
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":  # by magic: browsers and users mislabel files
        data = _gunzip(data)
    if data[:4] == b"PK\x03\x04":
        raise UploadError(
            "file is a ZIP archive; upload the .jsonl, .csv or .xml file itself (optionally gzip-compressed)"
        )

    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    first = _NON_SPACE.search(data, bom)
    if first is None:
        raise UploadError("file is empty")

    kind = _format_for(filename, data[first.start() : first.start() + 1])
    out = _Collector(max_items)
    if kind == "xml":
        fmt = _parse_xml(data, out)
        return ParsedUpload(out.items, fmt, out.records, out.skipped)

    text = _decode_utf8(data)
    if kind == "jsonl":
        fmt = _parse_json_text(text, out)
        return ParsedUpload(out.items, fmt, out.records, out.skipped)
    _parse_csv(text, "\t" if kind == "tsv" else None, out)
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


# --- bytes -> text ---------------------------------------------------------


def _gunzip(data: bytes) -> bytes:
    chunks, total = [], 0
    try:
        # GzipFile (not zlib directly) handles multi-member files and checks the CRC.
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
                if total > MAX_DECOMPRESSED_BYTES:
                    mb = MAX_DECOMPRESSED_BYTES // (1024 * 1024)
                    raise UploadTooLarge(
                        f"file decompresses to more than {mb:,} MB; the limit is {mb:,} MB per job: "
                        "split it into several jobs"
                    )
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise UploadError(
            f"file looks gzip-compressed but cannot be decompressed ({e}); check the file and upload again"
        ) from e
    return b"".join(chunks)


def _decode_utf8(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UploadError("file is UTF-16 encoded; save it as UTF-8 and upload again")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return str(memoryview(data)[bom:], "utf-8")
    except UnicodeDecodeError as e:
        raise _encoding_error(data, bom + e.start, "UTF-8") from None


def _encoding_error(data: bytes, pos: int, encoding: str, declared: bool = False) -> UploadError:
    said = " as its XML declaration says" if declared else ""
    return UploadError(
        f"file is not {encoding} encoded{said} (invalid byte 0x{data[pos]:02x} at position {pos}); "
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


def _parse_json_text(text: str, out: _Collector) -> str:
    """JSON Lines, or one JSON document: PubMedQA's ``{id: {QUESTION, CONTEXTS, ...}}`` or an array
    of records. A one-line JSON Lines file is a JSON document too; it stays JSON Lines."""
    start = text.lstrip("\ufeff \t\r\n")[:1]
    if start in ("{", "["):
        try:
            document = json.loads(text.lstrip("\ufeff"))
        except json.JSONDecodeError:
            document = None  # several lines of JSON Lines, or broken JSON: the line parser says which
        if isinstance(document, dict) and document and all(
                isinstance(v, dict) and "QUESTION" in v and "CONTEXTS" in v for v in document.values()):
            for key, record in document.items():
                _add_pubmedqa(str(key), record, out)
            return "pubmedqa"
        if isinstance(document, list):
            for position, value in enumerate(document, 1):
                if isinstance(value, dict):
                    out.add(value)
                elif isinstance(value, str):
                    out.add({"text": value})
                else:
                    raise UploadError(f"file record {position}: expected a JSON object or string, "
                                      f"found {_json_type(value)}")
            return "json"
    _parse_jsonl(text, out)
    return "jsonl"


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


def _parse_jsonl(text: str, out: _Collector) -> None:
    loads = json.loads
    # split("\n"), not splitlines(): JSON strings may legally hold U+2028 etc.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        try:
            value = loads(line)
        except json.JSONDecodeError as e:
            # A pretty-printed .json file fails on its opening bracket; say why.
            hint = "; JSON Lines needs each record on a single line" if line.strip() in ("[", "{") else ""
            raise UploadError(f"file line {lineno}: invalid JSON ({e.msg} at column {e.colno}){hint}") from None
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


def _parse_csv(text: str, delimiter: str | None, out: _Collector) -> None:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    if delimiter is None:
        delimiter = _guess_delimiter(text)
    label = "TSV" if delimiter == "\t" else "CSV"
    # strict: an unclosed quote must fail loudly instead of swallowing the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)

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


def _parse_xml(data: bytes, out: _Collector) -> str:
    source, encoding = _xml_source(data)
    fmt = None
    root = None
    depth = 0
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
                continue
            depth -= 1
            tag = elem.tag
            if tag == "MedlineCitation":
                _add_citation(elem, out)
            elif tag == "PubmedBookArticle":
                out.skip("book record, not a journal citation", (elem.findtext("BookDocument/PMID") or "").strip())
            if depth == 1:
                root.clear()  # drop finished records so memory stays flat
    except SyntaxError as e:  # ParseError; defusedxml raises its own copy of the class
        if encoding is None:  # expat read the bytes as UTF-8: blame the encoding if that is the cause
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as ue:
                raise _encoding_error(data, ue.start, "UTF-8") from None
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


def _xml_source(data: bytes) -> tuple[io.IOBase, str | None]:
    """Return a stream for the parser and the non-UTF-8 encoding it was decoded from (None for UTF-8)."""
    if data.startswith(codecs.BOM_UTF8):
        return io.BytesIO(data), None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        declared = "UTF-16"
    else:
        m = _XML_DECL_ENCODING.match(data, 0, 1024)
        declared = m.group(1).decode("ascii") if m else None
    if declared is None or declared.lower() == "utf-8":
        return io.BytesIO(data), None  # expat's native path: fastest, no copy
    # Other encodings: decode here (Python knows more codecs than expat, and the
    # error is clearer) and hand the parser text, which overrides the declaration.
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        raise UploadError(
            f"file's XML declaration names an unknown encoding ({declared}); save it as UTF-8 and upload again"
        ) from None
    try:
        return io.StringIO(data.decode(codec)), declared
    except UnicodeDecodeError as e:
        raise _encoding_error(data, e.start, declared, declared=True) from None


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
