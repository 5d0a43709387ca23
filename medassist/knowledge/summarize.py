"""Extractive summary of a biomedical abstract: pick its most central sentences.

Deterministic, pure Python, no model and no corpus statistics, so every score
can be explained from the abstract alone:

    score = cosine(tf-idf(sentence), tf-idf centroid of the abstract)
            + TITLE_WEIGHT   * share of the title's content words in the sentence
            + SECTION_BONUS  for a CONCLUSION(S) / RESULTS / FINDINGS section
            + CUE_BONUS      for a sentence opening with "we conclude", "in
                             conclusion", "these findings", "our results", ...
            - SHORT_PENALTY  for a sentence of fewer than SHORT_WORDS words

IDF is computed over the abstract's own sentences (a word in every sentence
says nothing about any of them); words are lower-cased, English stopwords and
pure numbers dropped.  The ``max_sentences`` best are returned in their
original order.

Sentence splitting is rule based and tuned for PubMed abstracts: a newline
always ends a sentence; ``.``/``?``/``!`` end one only before whitespace and
an upper-case letter, digit or opening bracket, and not after "et al.",
"e.g.", "i.e.", "vs.", "Dr.", "Fig." and similar, so decimals ("p < 0.05",
"1.5 mg"), "n = 10" and "E. coli" survive.  MEDLINE structured abstracts
("BACKGROUND: ...\\nMETHODS: ...") have their "LABEL:" prefix kept out of the
sentence span and remembered as the sentence's ``section``.

Public interface::

    split_sentences(text) -> list[tuple[int, int]]
    conclusion_sentences(text, *, fallback=2) -> (list[tuple[int, int]], how)
    extractive_summary(text, *, max_sentences=3, title=None) -> dict
"""

from __future__ import annotations

import math
import re
from collections import Counter

__all__ = ["split_sentences", "conclusion_sentences", "extractive_summary", "evidence_input", "question_overlap"]

TITLE_WEIGHT = 0.10
CONCLUSION_BONUS = 0.20
RESULTS_BONUS = 0.10
CUE_BONUS = 0.15
SHORT_PENALTY = 0.15
SHORT_WORDS = 6

METHOD = (
    f"tf-idf cosine to the abstract centroid (idf over its own sentences, English stopwords)"
    f" + {TITLE_WEIGHT} x title-word overlap + {CONCLUSION_BONUS} conclusion-section"
    f" / {RESULTS_BONUS} results-section bonus + {CUE_BONUS} cue-phrase bonus"
    f" - {SHORT_PENALTY} if under {SHORT_WORDS} words"
)

# Words that end with "." without ending a sentence (compared lower-case,
# leading brackets/quotes removed).
_ABBREVIATIONS = frozenset(
    """
    al e.g eg i.e ie vs v cf ca approx dr drs prof mr mrs ms st jr sr fig figs
    tab tabs ref refs eq eqs vol vols suppl resp viz incl dept univ inc ltd co
    corp ed eds
    """.split()
)
# "No. 5", "Nos. 3-4" -- only before a number
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "nr", "pp", "p"})

# Sentence-final punctuation, then any closing quotes/brackets, then blanks.
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=[ \t\u00a0]+)")
_STARTS_SENTENCE_RE = re.compile(r"[ \t\u00a0]+([A-Z0-9(\[\"'\u201c\u2018])")
# Structured-abstract label at the start of a line/sentence: "RESULTS:",
# "MATERIALS AND METHODS:", "BACKGROUND AND PURPOSE:", "AIMS:".
_LABEL_RE = re.compile(r"([A-Z][A-Z0-9]*(?:[ ,&/\-]+[A-Z0-9]+)*)[ \t]*:[ \t]*")
_DOTTED_RE = re.compile(r"^(?:[a-z]\.)+[a-z]$")  # u.s, e.g, i.e
_INITIAL_RE = re.compile(r"[A-Z]\.[ \t\u00a0]")  # next token is an initial
_INITIAL_BEFORE_RE = re.compile(r"(?:^|[ \t\u00a0(])[A-Z]\.[ \t\u00a0]+$")  # previous one is

_WORD_RE = re.compile(r"[a-z][a-z0-9]*(?:['\-][a-z0-9]+)*")

_CUE_PHRASES = (
    "we conclude",
    "in conclusion",
    "to conclude",
    "in summary",
    "these findings",
    "these results",
    "these data",
    "our results",
    "our findings",
    "our data",
    "this study shows",
    "this study demonstrates",
    "this study suggests",
    "taken together",
    "overall,",
)

# A compact English stopword list (function words plus the commonest
# reporting verbs); kept here so the scoring has no external dependency.
_STOPWORDS = frozenset(
    """
    a about above after again against all almost also although am among an and
    any are aren't as at be because been before being below between both but by
    can cannot could did do does doing done down during each either else etc
    few for from further had has have having he her here hers herself him
    himself his how however i if in into is isn't it it's its itself just less
    may me might more most much must my myself neither no nor not now of off on
    once one only or other our ours ourselves out over own per rather same she
    should since so some such than that that's the their theirs them themselves
    then there therefore these they this those though through thus to too under
    until up upon us very via was we were what when where whether which while
    who whom whose why will with within without would yet you your yours
    yourself yourselves
    """.split()
)


# --------------------------------------------------------------------------
# sentence splitting
# --------------------------------------------------------------------------


def _previous_word(line: str, end: int) -> str:
    start = max(line.rfind(" ", 0, end), line.rfind("\t", 0, end), line.rfind("\u00a0", 0, end)) + 1
    return line[start:end].lstrip("([{\"'\u201c\u2018").lower()


def _is_boundary(line: str, punct_start: int, punct_end: int) -> bool:
    after = _STARTS_SENTENCE_RE.match(line, punct_end)
    if after is None:  # next word starts lower-case: "e.g. the", "E. coli", "vs. placebo"
        return False
    if line[punct_start] != ".":
        return True
    word = _previous_word(line, punct_start)
    if word in _ABBREVIATIONS or _DOTTED_RE.match(word):
        return False
    nxt = after.group(1)
    if nxt.isdigit() and (word in _NUMBER_ABBREVIATIONS or line[punct_start - 1 : punct_start].isdigit()):
        return False  # "No. 5"; "<0. 05" (a broken decimal, seen in PubMed)
    # Runs of initials, "M. D. Anderson", "J. R. R. Tolkien" -- but a lone
    # capital ends a sentence: "... vitamin D. The ..."
    if len(word) == 1 and word.isalpha() and line[punct_start - 1].isupper():
        if _INITIAL_RE.match(line, after.start(1)) or _INITIAL_BEFORE_RE.search(line, 0, punct_start - 1):
            return False
    return True


def _segments(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, section) for every sentence; section is the last label seen."""
    out: list[tuple[int, int, str | None]] = []
    section: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        line_start = offset
        offset += len(line)
        body = line.rstrip("\r\n")
        cut = 0
        pieces: list[tuple[int, int]] = []
        for m in _BOUNDARY_RE.finditer(body):
            if _is_boundary(body, m.start(), m.end()):
                pieces.append((cut, m.end()))
                cut = m.end()
        pieces.append((cut, len(body)))
        for s, e in pieces:
            # strip blanks, then a leading "LABEL:" (remembered as section)
            while s < e and body[s].isspace():
                s += 1
            label = _LABEL_RE.match(body, s, e)
            if label and sum(ch.isalpha() for ch in label.group(1)) >= 3:
                section = label.group(1)
                s = label.end()
            while e > s and body[e - 1].isspace():
                e -= 1
            if any(ch.isalnum() for ch in body[s:e]):
                out.append((line_start + s, line_start + e, section))
    return out


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences; ``text[s:e]`` is one sentence, stripped
    and without a structured-abstract "LABEL:" prefix."""
    if not text:
        return []
    return [(s, e) for s, e, _section in _segments(text)]


def conclusion_sentences(text: str, *, fallback: int = 2) -> tuple[list[tuple[int, int]], str]:
    """Spans of the abstract's conclusion, and how they were found.

    - ``"section"``: the sentences under a CONCLUSION(S) label ("CONCLUSIONS: ..." lines, as the
      upload parser writes structured abstracts);
    - ``"cue phrase"``: unlabelled text, from the last sentence that opens with a concluding cue
      ("In conclusion", "These findings", ...) to the end;
    - ``"last sentences"``: otherwise the last ``fallback`` sentences, where abstracts conclude.
    """
    segments = _segments(text) if text and text.strip() else []
    labelled = [(s, e) for s, e, section in segments if section and "CONCLU" in section.upper()]
    if labelled:
        return labelled, "section"
    for i in range(len(segments) - 1, max(len(segments) - 4, 0) - 1, -1):
        s, e, _ = segments[i]
        if text[s:e].lower().startswith(_CUE_PHRASES):
            return [(s, e) for s, e, _ in segments[i:]], "cue phrase"
    return [(s, e) for s, e, _ in segments[-fallback:]], "last sentences"


# --------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------


def _content_words(sentence: str) -> list[str]:
    return [w for w in _WORD_RE.findall(sentence.lower()) if w not in _STOPWORDS and len(w) > 1]


def _section_bonus(section: str | None) -> float:
    if not section:
        return 0.0
    if "CONCLU" in section:
        return CONCLUSION_BONUS
    if "RESULT" in section or "FINDING" in section:
        return RESULTS_BONUS
    return 0.0


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def extractive_summary(text: str, *, max_sentences: int = 3, title: str | None = None) -> dict:
    """The ``max_sentences`` highest-scoring sentences, in original order.

    Returns ``{"text", "sentences": [{index, start, end, score, text,
    section}], "method"}``; ``index`` is the sentence's position among all
    sentences of ``text``.  With no more sentences than ``max_sentences`` all
    are returned.
    """
    if max_sentences < 1:
        raise ValueError("max_sentences must be >= 1")
    segments = _segments(text) if text and text.strip() else []
    if not segments:
        return {"text": "", "sentences": [], "method": METHOD}

    sentences = [text[s:e] for s, e, _ in segments]
    words = [_content_words(s) for s in sentences]
    n = len(sentences)
    df = Counter(w for ws in words for w in set(ws))
    # smoothed idf over the abstract's own sentences
    idf = {w: math.log((1 + n) / (1 + d)) + 1.0 for w, d in df.items()}
    vectors = [{w: c * idf[w] for w, c in Counter(ws).items()} for ws in words]
    centroid: Counter[str] = Counter()
    for vec in vectors:
        centroid.update(vec)

    title_words = set(_content_words(title)) if title else set()

    scores: list[float] = []
    for i, sentence in enumerate(sentences):
        score = _cosine(vectors[i], centroid)
        if title_words:
            score += TITLE_WEIGHT * len(title_words.intersection(words[i])) / len(title_words)
        score += _section_bonus(segments[i][2])
        if sentence.lower().startswith(_CUE_PHRASES):
            score += CUE_BONUS
        if len(sentence.split()) < SHORT_WORDS:
            score -= SHORT_PENALTY
        scores.append(score)

    # best first; ties go to the earlier sentence (deterministic)
    ranked = sorted(range(n), key=lambda i: (-scores[i], i))
    chosen = sorted(ranked[:max_sentences])
    return {
        "text": " ".join(sentences[i] for i in chosen),
        "sentences": [
            {
                "index": i,
                "start": segments[i][0],
                "end": segments[i][1],
                "score": round(scores[i], 4),
                "text": sentences[i],
                "section": segments[i][2],
            }
            for i in chosen
        ],
        "method": METHOD,
    }


def evidence_input(text: str) -> dict:
    """What the answer-evidence model reads of an abstract: its conclusion (``conclusion_sentences``), how
    it was found, and the other sentences (``context``: the results). Training builds its examples here
    too, so the model is trained on what it is served."""
    spans, found_by = conclusion_sentences(text)
    inside = set(spans)
    return {"conclusion": " ".join(text[s:e] for s, e in spans), "spans": spans, "found_by": found_by,
            "context": [text[s:e] for s, e in split_sentences(text) if (s, e) not in inside]}


# Words every clinical question and abstract share: no sign that an abstract is about this question.
_GENERIC_QUESTION_WORDS = frozenset(
    "patient patients study studies effect effects use used using associated association yes result results "
    "outcome outcomes treatment group groups".split())


def content_stems(text: str, *, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The content words of ``text`` (stopwords, words of under 3 letters and ``ignore`` left out) by their first
    5 letters, so that "reduce" and "reduction" meet."""
    return [w[:5] for w in _content_words(text) if len(w) > 2 and w not in ignore]


def question_overlap(question: str, text: str) -> float:
    """The share of the question's content words (stopwords and words every clinical question has left out,
    compared by their first 5 letters so "reduce"/"reduction" meet) that ``text`` also has: 1.0 for a question
    with none. Whether an abstract is about the question at all: on the 500 PubMedQA questions, each
    question's own abstract scores >= 0.35 in 495 of 500 cases, a randomly paired other abstract in 9."""
    asked = set(content_stems(question, ignore=_GENERIC_QUESTION_WORDS))
    if not asked:
        return 1.0
    present = set(content_stems(text))  # (words of 1-2 letters could not match a stem of 3 or more)
    return len(asked & present) / len(asked)
