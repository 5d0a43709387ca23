"""Input limits that hold before memory is spent (issue 13): uploads are read in blocks, decompressed
within the upload byte budget, and parsed one record at a time, so a hostile file is refused early."""
import gzip
import io
import json

import pytest
from django.test import override_settings

from medassist.common import parsers
from medassist.common.parsers import UploadError, UploadTooLarge, parse_upload
from medassist.jobs.models import Job, JobItem


class CountingFile(io.BytesIO):
    """A file object that remembers the largest single read: the parser must never read it whole."""

    largest = 0

    def read(self, size=-1):
        data = super().read(size)
        self.largest = max(self.largest, len(data))
        return data


def test_decompressed_size_counts_against_the_byte_budget():
    bomb = gzip.compress(b" " * (3 * 1024 * 1024) + b'"x"\n')  # ~3 KB that inflates to 3 MB
    assert len(bomb) < 10_000
    with pytest.raises(UploadTooLarge) as info:
        parse_upload(bomb, "x.jsonl.gz", max_bytes=1024 * 1024)
    assert str(info.value).startswith("file decompresses to more than 1 MB; the limit is 1 MB per job")
    assert parse_upload(bomb, "x.jsonl.gz", max_bytes=4 * 1024 * 1024).items == [{"text": "x"}]


def test_a_plain_file_over_the_budget_is_refused_too():
    with pytest.raises(UploadTooLarge, match="file is more than 1,000 bytes"):
        parse_upload(b'"x"\n' * 300, "x.jsonl", max_bytes=1000)


def test_the_file_is_read_in_blocks_never_whole():
    body = b"".join(b'{"text": "abstract %d"}\n' % i for i in range(20_000))
    for data in (body, gzip.compress(body)):
        upload = CountingFile(data)
        result = parse_upload(upload, "a.jsonl")
        assert len(result.items) == 20_000 and result.items[-1] == {"text": "abstract 19999"}
        assert upload.largest <= parsers.READ_SIZE < len(body) // 4


@pytest.mark.parametrize("name, data", [
    ("a.jsonl", b'\xef\xbb\xbf{"text": "caf\xc3\xa9 one", "n": 123456789}\r\n\n"two \xe2\x82\xac"\n{"text": "3"}'),
    ("a.json", b'[\n {"text": "First \xe2\x82\xac abstract."},\n "Second abstract.", {"text": "x", "n": 1234567}\n]\n'),
    ("p.json", json.dumps({str(i): {"QUESTION": f"Q{i}?", "CONTEXTS": ["Text \u20ac."], "YEAR": "2001"}
                           for i in range(5)}, indent=2, ensure_ascii=False).encode()),
    ("a.csv", b'pmid,title,abstract\r\n1,"A, title","line one\r\nline two"\r\n2,T2,"caf\xc3\xa9"\r\n3,T3,plain\r'),
    ("a.tsv", b"pmid\ttext\n1\tone\n2\ttwo\n"),
    # multi-member gzip: a finished member must hand its leftover input to the next (this looped for ever)
    ("m.jsonl.gz", gzip.compress(b'{"text": "a"}\n') + gzip.compress(b'{"text": "b"}\n' * 50)),
])
def test_small_blocks_give_the_same_records(monkeypatch, name, data):
    # Every block boundary (inside a CRLF, a UTF-8 character, a number, a record) must be invisible.
    expected = parse_upload(data, name)
    assert expected.items
    for size in (1, 2, 3, 7):
        monkeypatch.setattr(parsers, "READ_SIZE", size)
        got = parse_upload(data, name)
        assert (got.items, got.format, got.records) == (expected.items, expected.format, expected.records), size


def test_encoding_error_position_is_exact_across_blocks(monkeypatch):
    data = "text\nabc\ncaf\u00e9\n".encode("latin-1")
    monkeypatch.setattr(parsers, "READ_SIZE", 3)
    with pytest.raises(UploadError, match=r"invalid byte 0xe9 at position 12\)"):
        parse_upload(data, "a.csv")


def test_one_huge_record_is_refused_before_it_is_built(monkeypatch):
    monkeypatch.setattr(parsers, "MAX_RECORD_CHARS", 10_000)
    hostile_line = b'{"text": "x", "junk": [' + b"[]," * 20_000 + b"[]]}\n"
    with pytest.raises(UploadTooLarge, match="file line 1 is longer than 10,000 characters"):
        parse_upload(hostile_line, "a.jsonl")
    with pytest.raises(UploadTooLarge, match="record longer than 10,000 characters"):
        parse_upload(b"[" + hostile_line + b"]", "a.json")
    with pytest.raises(UploadTooLarge, match="file line 2 is longer than 10,000 characters"):
        parse_upload(b"text\n" + b"a," * 20_000 + b"\n", "a.csv")


def test_a_json_array_of_non_records_stops_at_the_first():
    with pytest.raises(UploadError, match="record 1: expected a JSON object or string, found an array"):
        parse_upload(b"[" + b"[]," * 100_000 + b"[]]", "a.json")


def test_an_xml_record_with_endless_elements_is_refused(monkeypatch):
    monkeypatch.setattr(parsers, "MAX_XML_ELEMENTS_PER_RECORD", 1_000)
    xml = b"<PubmedArticleSet><PubmedArticle>" + b"<x/>" * 5_000 + b"</PubmedArticle></PubmedArticleSet>"
    with pytest.raises(UploadError, match="more than 1,000 elements"):
        parse_upload(xml, "a.xml")
    deep = b"<PubmedArticleSet>" + b"<a>" * 100 + b"</a>" * 100 + b"</PubmedArticleSet>"
    with pytest.raises(UploadError, match="64 levels"):
        parse_upload(deep, "a.xml")


def test_api_applies_the_upload_limit_to_the_decompressed_size(api):
    bomb = gzip.compress((b'{"text": "' + b"x" * 200 + b'"}\n') * 10_000)  # 2.1 MB of records in ~10 KB
    payload = {"kind": "literature", "file": io.BytesIO(bomb)}
    payload["file"].name = "small.jsonl.gz"
    with override_settings(MEDASSIST_MAX_UPLOAD_BYTES=1024 * 1024):
        response = api.post("/api/v1/jobs/", payload, format="multipart")
    assert response.status_code == 413, response.content
    assert "decompresses to more than 1 MB" in response.json()["errors"]["file"][0]
    assert Job.objects.count() == 0 and JobItem.objects.count() == 0
