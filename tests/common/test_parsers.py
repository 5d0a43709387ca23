"""Tests for medassist.common.parsers (no Django needed)."""

import gzip
import json
import re
import time

import pytest

from medassist.common import parsers
from medassist.common.parsers import ParsedUpload, UploadError, UploadTooLarge, parse_upload
from tests.conftest import require_shared_data


def _sample(name: str) -> bytes:
    return require_shared_data("medline-sample", name).read_bytes()


def _error(data: bytes, filename: str = "", **kw) -> UploadError:
    with pytest.raises(UploadError) as info:
        parse_upload(data, filename, **kw)
    return info.value


def _citation(pmid: str, abstract: str = "", extra: str = "") -> str:
    return (
        f"<MedlineCitation><PMID>{pmid}</PMID><DateCreated><Year>2001</Year></DateCreated>"
        f"<Article><Journal><JournalIssue><PubDate><Year>2015</Year></PubDate></JournalIssue></Journal>"
        f"<ArticleTitle>Title {pmid}</ArticleTitle>{abstract}</Article>{extra}</MedlineCitation>"
    )


def _medline(*citations: str) -> bytes:
    return ("<MedlineCitationSet>" + "".join(citations) + "</MedlineCitationSet>").encode()


# --- real NLM samples --------------------------------------------------------


def test_medline_sample():
    result = parse_upload(_sample("medline16n0902.xml.gz"), "medline16n0902.xml.gz")
    assert isinstance(result, ParsedUpload)
    assert result.format == "medline-xml"
    assert len(result.items) == 526
    assert result.records == 604
    assert len(result.skipped) == 78
    assert all(s["reason"] == "no abstract" and s["pmid"] for s in result.skipped)
    assert sum("mesh" in item for item in result.items) == 94
    assert all(isinstance(item["year"], int) for item in result.items)

    first = result.items[0]
    assert first["pmid"] == "17942999"
    assert first["title"].startswith("Neuroplasticity in the processing of pitch dimensions")
    assert first["text"].startswith("PURPOSE: An auditory")
    assert first["year"] == 2007
    assert [s["label"] for s in first["sections"]] == ["PURPOSE", "METHODS", "RESULTS", "CONCLUSIONS"]
    assert first["sections"][0]["category"] == "OBJECTIVE"
    assert first["text"].split("\n")[1].startswith("METHODS: Mismatch negativity")
    assert {"ui": "D000328", "name": "Adult", "major": False} in first["mesh"]


def test_pubmed_article_set_sample():
    result = parse_upload(_sample("pubmed-29768149.xml"), "pubmed-29768149.xml")
    assert result.format == "pubmed-xml"
    assert result.records == 1 and result.skipped == []
    (item,) = result.items
    assert item["pmid"] == "29768149"
    assert item["title"].startswith("Inhaled Combined Budesonide-Formoterol")
    assert item["year"] == 2018
    # &#946; plus <sub>2</sub> across a line break, after whitespace collapse
    assert "fast-acting β 2-agonist may be" in item["text"]
    assert item["sections"][0]["label"] == "BACKGROUND"
    assert item["text"].startswith("BACKGROUND: In patients with mild asthma")
    assert "mesh" in item


def test_gzip_detected_by_magic_despite_name():
    raw = _sample("pubmed-29768149.xml")
    result = parse_upload(gzip.compress(raw), "citations.xml")
    assert result.items[0]["pmid"] == "29768149"

    lines = b'{"text": "a"}\n{"text": "b"}\n'
    result = parse_upload(gzip.compress(lines), "upload.bin")
    assert result.format == "jsonl" and len(result.items) == 2


def test_gz_name_without_gzip_content_is_read_plain():
    result = parse_upload(b'{"text": "a"}\n', "x.jsonl.gz")
    assert result.items == [{"text": "a"}]


def test_corrupt_gzip():
    broken = gzip.compress(b'{"text": "a"}\n' * 1000)[:-20]
    err = _error(broken, "x.jsonl.gz")
    assert str(err).startswith("file looks gzip-compressed but cannot be decompressed")
    assert err.status_code == 400 and err.field == "file"


def test_gzip_bomb_is_capped(monkeypatch):
    monkeypatch.setattr(parsers, "MAX_DECOMPRESSED_BYTES", 1024 * 1024)
    with pytest.raises(UploadTooLarge) as info:
        parse_upload(gzip.compress(b" " * (3 * 1024 * 1024)), "x.jsonl.gz")
    assert "decompresses to more than 1 MB" in str(info.value)


# --- JSON Lines ---------------------------------------------------------------


def test_jsonl_blank_lines_and_bare_string():
    data = b'\n{"text": "one", "pmid": "1"}\n\n   \n"two"\r\n{"text": "three", "extra": [1, 2]}\n'
    result = parse_upload(data, "a.jsonl")
    assert result.format == "jsonl"
    assert result.items == [
        {"text": "one", "pmid": "1"},
        {"text": "two"},
        {"text": "three", "extra": [1, 2]},
    ]
    assert result.records == 3 and result.skipped == []


def test_jsonl_invalid_json_names_line():
    data = b'{"text": "a"}\n\n{"text": "b"}\n{"text": "c"}\n\n\n{"text": "d" "e"}\n'
    err = _error(data, "a.ndjson")
    assert str(err) == "file line 7: invalid JSON (Expecting ',' delimiter at column 14)"


def test_jsonl_rejects_other_json_types():
    err = _error(b'{"text": "a"}\n[1, 2]\n', "a.json")
    assert str(err).startswith("file line 2: expected a JSON object or string, found an array")


def test_pretty_printed_json_gets_a_hint():
    # One pretty-printed record (not an array, not PubMedQA): JSON Lines, broken over lines.
    err = _error(b'{\n  "text": "a"\n}\n', "a.json")
    assert str(err) == (
        "file line 1: invalid JSON (Expecting property name enclosed in double quotes at column 2); "
        "JSON Lines needs each record on a single line"
    )


def test_jsonl_keeps_unicode_line_separator_inside_strings():
    data = json.dumps({"text": "a\u2028b"}, ensure_ascii=False).encode() + b"\n"
    assert parse_upload(data, "a.jsonl").items == [{"text": "a\u2028b"}]


# --- CSV / TSV ---------------------------------------------------------------


def test_csv_quoted_multiline_field_and_mapped_columns():
    data = (
        b"PMID,ArticleTitle,Abstract,Year,id,notes\r\n"
        b'123,"A, title","First line\nsecond ""quoted"" line",2019,r1,ignored\r\n'
        b"456,Other,plain text,n/a,,\r\n"
        b",,,,,\r\n"
        b"789,No text,,2020,r3,\r\n"
    )
    result = parse_upload(data, "export.csv")
    assert result.format == "csv"
    assert result.items == [
        {"pmid": "123", "title": "A, title", "year": 2019, "id": "r1", "text": 'First line\nsecond "quoted" line'},
        {"pmid": "456", "title": "Other", "text": "plain text"},
    ]
    assert result.records == 3
    assert result.skipped == [{"record": 3, "pmid": "789", "reason": "no text"}]


def test_csv_long_field():
    long_text = "x" * 200_000
    result = parse_upload(f"text\n{long_text}\n".encode(), "a.csv")
    assert result.items[0]["text"] == long_text


def test_csv_without_text_column():
    err = _error(b"id,title\n1,hello\n", "a.csv")
    assert str(err) == "CSV has no text column: expected one of text, abstract; found columns: id, title"


def test_csv_unclosed_quote():
    err = _error(b'text\n"ok"\n"never closed\nmore\n', "a.csv")
    assert str(err).startswith("file line 3: a quoted field starting on this line is never closed")


def test_tsv():
    data = b"pmid\ttitle\tabstract_text\n1\tT, one\tText, with commas\n"
    result = parse_upload(data, "a.tsv.gz")
    assert result.format == "csv"
    assert result.items == [{"pmid": "1", "title": "T, one", "text": "Text, with commas"}]


def test_semicolon_csv_from_spreadsheet():
    result = parse_upload(b"Title;Text\nT;hello, world\n", "a.csv")
    assert result.items == [{"title": "T", "text": "hello, world"}]


def test_sniffing_without_extension():
    assert parse_upload(b'  {"text": "a"}\n', "").format == "jsonl"
    assert parse_upload(b'"just text"\n', "upload").format == "jsonl"
    assert parse_upload(b"text\nhello\n", "upload.txt").items == [{"text": "hello"}]
    assert parse_upload(b"\n<MedlineCitationSet></MedlineCitationSet>", "").format == "medline-xml"


# --- encodings ----------------------------------------------------------------


def test_non_utf8_csv():
    data = "text\nabc\ncaf\u00e9\n".encode("latin-1")
    err = _error(data, "a.csv")
    assert str(err) == (
        "file is not UTF-8 encoded (invalid byte 0xe9 at position 12); save it as UTF-8 and upload again"
    )


def test_non_utf8_jsonl():
    data = '{"text": "caf\u00e9"}\n'.encode("latin-1")
    err = _error(data, "a.jsonl")
    assert str(err) == (
        "file is not UTF-8 encoded (invalid byte 0xe9 at position 13); save it as UTF-8 and upload again"
    )


def test_utf16_csv_is_named():
    err = _error("text\nhello\n".encode("utf-16"), "a.csv")
    assert str(err) == "file is UTF-16 encoded; save it as UTF-8 and upload again"


def test_bom_is_handled():
    bom = b"\xef\xbb\xbf"
    assert parse_upload(bom + b"Text,PMID\nhello,1\n", "a.csv").items == [{"text": "hello", "pmid": "1"}]
    assert parse_upload(bom + b'{"text": "a"}\n', "").items == [{"text": "a"}]
    xml = bom + _medline(_citation("1", "<Abstract><AbstractText>x</AbstractText></Abstract>"))
    assert parse_upload(xml, "a.xml").items[0]["text"] == "x"
    # position counts the BOM bytes, so it matches what a hex editor shows
    assert "at position 11" in str(_error(bom + b"text\ncaf\xe9\n", "a.csv"))


def test_xml_declared_encoding_is_respected():
    body = _medline(_citation("1", "<Abstract><AbstractText>caf\u00e9 \u20ac</AbstractText></Abstract>"))
    xml = b'<?xml version="1.0" encoding="windows-1252"?>\n' + body.decode().encode("cp1252")
    assert parse_upload(xml, "a.xml").items[0]["text"] == "caf\u00e9 \u20ac"
    latin = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + body.decode().replace(" \u20ac", "").encode("latin-1")
    assert parse_upload(latin, "a.xml").items[0]["text"] == "caf\u00e9"


def test_xml_wrong_encoding():
    body = _medline(_citation("1", "<Abstract><AbstractText>caf\u00e9</AbstractText></Abstract>"))
    latin_as_utf8 = b'<?xml version="1.0" encoding="UTF-8"?>' + body.decode().encode("latin-1")
    err = _error(latin_as_utf8, "a.xml")
    assert str(err).startswith("file is not UTF-8 encoded (invalid byte 0xe9 at position ")
    assert str(err).endswith("; save it as UTF-8 and upload again")

    undecodable = b'<?xml version="1.0" encoding="ascii"?>' + body.decode().encode("latin-1")
    err = _error(undecodable, "a.xml")
    assert str(err).startswith("file is not ascii encoded as its XML declaration says (invalid byte 0xe9")

    unknown = b'<?xml version="1.0" encoding="x-made-up"?>' + body
    assert "unknown encoding (x-made-up)" in str(_error(unknown, "a.xml"))


# --- XML structure -----------------------------------------------------------


def test_truncated_xml():
    raw = _medline(_citation("1", "<Abstract><AbstractText>x</AbstractText></Abstract>"))
    err = _error(raw[: -len("</MedlineCitationSet>")], "a.xml")
    assert str(err) == f"file is not well-formed XML: no element found (line 1, column {len(raw) - 20})"

    # an upload cut off mid-way (real file, cut inside a tag)
    sample = gzip.decompress(_sample("medline16n0902.xml.gz"))
    err = _error(sample[: len(sample) // 2], "medline.xml")
    assert re.fullmatch(r"file is not well-formed XML: [a-z ()-]+ \(line \d+, column \d+\)", str(err)), str(err)


def test_malformed_xml_position():
    err = _error(b"<MedlineCitationSet>\n<MedlineCitation>\n<PMID>1</pmid>", "a.xml")
    assert str(err) == "file is not well-formed XML: mismatched tag (line 3, column 10)"


def test_unknown_xml_root():
    err = _error(b"<?xml version='1.0'?><html><body/></html>", "page.xml")
    assert str(err) == (
        "file's XML root element is <html>, not a PubMed/MEDLINE citation set "
        "(expected <PubmedArticleSet> or <MedlineCitationSet>)"
    )


def test_xml_entity_expansion_refused():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE MedlineCitationSet ['
        b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<MedlineCitationSet>&b;</MedlineCitationSet>"
    )
    assert "refused for safety" in str(_error(bomb, "a.xml"))


def test_xml_external_dtd_is_not_fetched():
    xml = b'<!DOCTYPE MedlineCitationSet PUBLIC "-//x//EN" "http://127.0.0.1:9/never.dtd">' + _medline(
        _citation("5", "<Abstract><AbstractText>x</AbstractText></Abstract>")
    )
    assert parse_upload(xml, "a.xml").items[0]["pmid"] == "5"


def test_xml_citation_details():
    xml = _medline(
        _citation(
            "1",
            "<Abstract><AbstractText>First <i>in vivo</i>\n   CO<sub>2</sub> part.</AbstractText>"
            "<AbstractText>Second part x<sup>2</sup>.</AbstractText></Abstract>",
            '<MeshHeadingList><MeshHeading><DescriptorName UI="D1" MajorTopicYN="N">Lung</DescriptorName>'
            '<QualifierName UI="Q1" MajorTopicYN="Y">physiology</QualifierName></MeshHeading>'
            '<MeshHeading><DescriptorName UI="D2" MajorTopicYN="Y">Humans</DescriptorName></MeshHeading>'
            "</MeshHeadingList>",
        ),
        _citation("2"),
        _citation(
            "3", "<Abstract><AbstractText Label='AIM'>a</AbstractText><AbstractText>b</AbstractText></Abstract>"
        ).replace("<Year>2015</Year>", "<MedlineDate>1998 Dec-1999 Jan</MedlineDate>"),
        _citation("4", "<Abstract><AbstractText>t</AbstractText></Abstract>").replace(
            "<PubDate><Year>2015</Year></PubDate>", "<PubDate/>"
        ),
    )
    result = parse_upload(xml, "a.xml")
    assert result.records == 4
    assert result.skipped == [{"record": 2, "pmid": "2", "reason": "no abstract"}]
    first, third, fourth = result.items
    assert first == {
        "pmid": "1",
        "title": "Title 1",
        "text": "First in vivo CO2 part. Second part x2.",
        "year": 2015,
        "mesh": [
            {"ui": "D1", "name": "Lung", "major": True},  # starred qualifier makes the heading major
            {"ui": "D2", "name": "Humans", "major": True},
        ],
    }
    assert third["text"] == "AIM: a\nb"
    assert third["sections"] == [
        {"label": "AIM", "category": None, "text": "a"},
        {"label": None, "category": None, "text": "b"},
    ]
    assert third["year"] == 1998
    assert fourth["year"] == 2001  # DateCreated fallback
    assert "sections" not in fourth and "mesh" not in fourth


def test_pubmed_book_articles_are_skipped():
    xml = (
        b"<PubmedArticleSet><PubmedBookArticle><BookDocument><PMID>99</PMID></BookDocument>"
        b"</PubmedBookArticle><PubmedArticle>"
        + _citation("7", "<Abstract><AbstractText>x</AbstractText></Abstract>").encode()
        + b"<PubmedData/></PubmedArticle></PubmedArticleSet>"
    )
    result = parse_upload(xml, "a.xml")
    assert [i["pmid"] for i in result.items] == ["7"]
    assert result.records == 2 and result.skipped[0]["pmid"] == "99"


def test_skipped_entries_are_capped():
    xml = _medline(*(_citation(str(i)) for i in range(150)))
    result = parse_upload(xml, "a.xml")
    assert result.items == [] and result.records == 150
    assert len(result.skipped) == 100 and result.skipped[-1]["record"] == 100


# --- empty / limits ------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"  \n\t\n", b"\xef\xbb\xbf\n", gzip.compress(b"")])
def test_empty_file(data):
    assert str(_error(data, "a.csv")) == "file is empty"


def test_too_many_items_jsonl():
    lines = b"".join(b'{"text": "t%d"}\n' % i for i in range(1001))
    assert len(parse_upload(lines, "a.jsonl", max_items=1001).items) == 1001
    with pytest.raises(UploadTooLarge) as info:
        parse_upload(lines, "a.jsonl", max_items=1000)
    assert info.value.status_code == 413 and info.value.field == "file"
    assert str(info.value) == (
        "file holds more than 1,000 records; the limit is 1,000 per job: split it into several jobs"
    )


def test_too_many_items_stops_early():
    # A broken line after the limit is never reached: parsing stops at the limit.
    lines = b'{"text": "a"}\n{"text": "b"}\nnot json\n'
    with pytest.raises(UploadTooLarge):
        parse_upload(lines, "a.jsonl", max_items=1)


def test_too_many_items_xml():
    with pytest.raises(UploadTooLarge) as info:
        parse_upload(_sample("medline16n0902.xml.gz"), "m.xml.gz", max_items=100)
    assert info.value.status_code == 413
    assert "more than 100 records" in str(info.value)


def test_too_many_items_default_message():
    assert issubclass(UploadTooLarge, UploadError) and issubclass(UploadError, ValueError)
    assert UploadError.status_code == 400
    with pytest.raises(UploadTooLarge) as info:
        parse_upload(b'"x"\n' * 50_001, "a.jsonl")
    assert str(info.value).startswith("file holds more than 50,000 records; the limit is 50,000 per job")


def test_max_chars_is_accepted_and_ignored():
    assert parse_upload(b'"abcdef"\n', "a.jsonl", max_chars=3).items == [{"text": "abcdef"}]


# --- speed -----------------------------------------------------------------------


def test_speed_10k_jsonl_and_csv():
    abstract = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20
    jsonl = "\n".join(json.dumps({"pmid": str(i), "text": abstract}) for i in range(10_000)).encode()
    csv_data = ("pmid,abstract\n" + "".join(f'{i},"{abstract}"\n' for i in range(10_000))).encode()
    for data, name in ((jsonl, "a.jsonl"), (csv_data, "a.csv")):
        start = time.perf_counter()
        assert len(parse_upload(data, name).items) == 10_000
        assert time.perf_counter() - start < 0.5


def test_speed_medline_sample():
    data = _sample("medline16n0902.xml.gz")
    start = time.perf_counter()
    parse_upload(data, "m.xml.gz")
    assert time.perf_counter() - start < 1.0


def test_pubmedqa_json_skips_records_without_text_or_question_and_says_why():
    records = {"1": {"QUESTION": "Q?", "CONTEXTS": ["Text."], "LABELS": ["RESULTS"]},
               "2": {"QUESTION": "", "CONTEXTS": ["Text."]},
               "3": {"QUESTION": "Q?", "CONTEXTS": []}}
    parsed = parse_upload(json.dumps(records, indent=1).encode(), "pqa.json")
    assert parsed.format == "pubmedqa" and [i["id"] for i in parsed.items] == ["1"]
    assert [(s["pmid"], s["reason"]) for s in parsed.skipped] == [("2", "no QUESTION"), ("3", "no CONTEXTS text")]
    assert parsed.items[0]["sections"] == [{"label": "RESULTS", "text": "Text."}]


def test_a_json_array_of_records_is_read_like_json_lines():
    parsed = parse_upload(b'[\n {"text": "First abstract."},\n "Second abstract."\n]', "batch.json")
    assert parsed.format == "json" and parsed.items == [{"text": "First abstract."}, {"text": "Second abstract."}]
    with pytest.raises(UploadError, match="record 2: expected a JSON object or string, found a number"):
        parse_upload(b'[{"text": "a"}, 3]', "batch.json")
    one_line = parse_upload(b'{"text": "Only one record."}\n', "one.jsonl")
    assert one_line.format == "jsonl" and one_line.items == [{"text": "Only one record."}]
