"""Turning what a prompt model wrote into a usable instruction, or saying why it is not one.

A small model (the embedded 135M one) often answers a "write a better instruction" request with a
label and quotes around the text, markdown, a copy of the prompt, a run-on list, or one word. Every
proposal goes through `clean_proposal`: strip labels ("Proposed instruction:"), quotes and markdown,
keep the first paragraph, cut it at a sentence end within `MAX_CHARS`; then reject it when it is empty,
not a sentence, repetitive, an echo of the prompt, or a duplicate of an instruction already held.
`Tally` counts accepted and rejected proposals by reason, for the compiled program's record.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

#: The longest instruction kept (characters); longer text is cut at the last sentence end before it.
MAX_CHARS = 400
#: Fewer words than this is not an instruction ("unknown", "Classify.").
MIN_WORDS = 4

#: Why a proposal was rejected (the keys of `Tally.rejected`).
REASONS = ("empty", "not_a_sentence", "repetitive", "off_topic", "echo", "duplicate", "error")

# A leading label: a few words ending in a colon, at least one of which says "this is the instruction".
_LABEL_WORDS = {"instruction", "instructions", "prompt", "proposed", "proposal", "new", "improved", "better",
                "answer", "output", "response", "here", "revised", "rewritten", "updated", "suggested",
                "final", "task"}
_LABEL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 #'\-]{0,60}?)\s*:\s*")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "`": "`"}
_MARKDOWN = re.compile(r"(\*\*|__|`+|~~)")
_BULLET = re.compile(r"^\s*(?:#+\s+|[-*+\u2022]\s+|\d+[.)]\s+|>\s*)")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")


def normalize(text: str) -> str:
    """Lower case, words only: what decides whether two instructions are the same."""
    return " ".join(w.lower() for w in _WORD.findall(text))


def _strip_label(text: str) -> str:
    for _ in range(3):  # "**Proposed instruction:** Instruction: ..." has two
        m = _LABEL.match(text)
        if not m:
            break
        words = m.group(1).lower().replace("-", " ").split()
        if not words or len(words) > 6 or not (_LABEL_WORDS & set(words)):
            break
        text = text[m.end():]
    return text


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]:
        text = text[1:-1].strip()
    if text[:1] in _QUOTES and _QUOTES[text[0]] not in text[1:]:  # an opening quote never closed
        text = text[1:].strip()
    return text


def _first_line(text: str, stop_labels: Iterable[str]) -> str:
    """The first non-empty line, without bullets and labels: a small model follows a good first line with
    examples, other fields or a repeat of the prompt, so the rest is never kept. Empty when the first
    line starts a prompt field."""
    stops = tuple(f"{s.lower()}:" for s in stop_labels)
    for raw in text.splitlines():
        line = _strip_label(_BULLET.sub("", raw)).strip()
        if not line:
            continue
        if stops and line.lower().startswith(stops):
            return ""
        return line
    return ""


def _cut(text: str, limit: int = MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and len(_WORD.findall(head[:ends[-1]])) >= MIN_WORDS:
        return head[:ends[-1]].strip()
    return head.rsplit(" ", 1)[0].rstrip(",;:-") + "."


def tidy(text: str, *, stop_labels: Iterable[str] = ()) -> str:
    """Labels, quotes, markdown and extra paragraphs removed; cut to `MAX_CHARS`. May return ""."""
    text = _MARKDOWN.sub("", str(text or "")).replace("\r", "")
    text = _strip_quotes(_strip_label(text.strip()))
    text = _first_line(text, stop_labels)
    text = text.split(" | ", 1)[0]  # the rest copies the demo layout ("... | Intent: x") the proposer was shown
    text = _strip_quotes(_strip_label(text))
    text = re.sub(r"\s+", " ", text).strip()
    return _cut(text)


def _is_repetitive(words: list[str]) -> bool:
    if len(words) >= 10 and len(set(words)) / len(words) < 0.45:
        return True
    trigrams = Counter(zip(words, words[1:], words[2:]))
    return bool(trigrams) and max(trigrams.values()) >= 3


def _echoes(text: str, context: Iterable[str], labels: Iterable[str]) -> bool:
    """Copies a prompt field: names a field label, or is mostly a copy of one of the inputs."""
    lowered = text.lower()
    if any(re.search(rf"(^|\s){re.escape(label.lower())}\s*:", lowered) for label in labels):
        return True
    mine = normalize(text)
    words = mine.split()
    grams = set(zip(words, words[1:], words[2:]))
    for source in context:
        theirs = normalize(source)
        if not theirs:
            continue
        if len(mine) >= 20 and mine in theirs:
            return True
        if grams:
            src = theirs.split()
            shared = grams & set(zip(src, src[1:], src[2:]))
            if len(shared) / len(grams) >= 0.8:
                return True
    return False


def _stems(text: str) -> set[str]:
    return {w[:4] for w in normalize(text).split() if len(w) >= 4 and w not in _STOPWORDS}


_STOPWORDS = {"this", "that", "with", "from", "into", "your", "their", "what", "which", "when", "where", "will",
              "have", "each", "only", "then", "than", "them", "they", "there", "these", "those", "about", "must",
              "should", "would", "could", "given", "produce", "write", "answer", "output", "input", "inputs",
              "outputs", "field", "fields", "following", "please", "make", "sure", "based"}


def clean_proposal(raw: Any, *, context: Iterable[str] = (), labels: Iterable[str] = (),
                   taken: Iterable[str] = (), topic: str = "") -> tuple[str | None, str]:
    """``(instruction, "ok")`` or ``(None, reason)``; reason is one of `REASONS`.

    `context`: the prompt's inputs other than the current instruction (an echo of one is rejected);
    `labels`: the prompt's field labels ("Dataset Summary"), which must not appear in an instruction;
    `taken`: instructions already held (the current one included): a repeat is a duplicate;
    `topic`: what the task is about (its instruction, field names, label values): a proposal sharing
    no content word with it (compared by their first four letters) is off topic.
    """
    labels = list(labels)
    text = tidy(raw, stop_labels=labels)
    if not text:
        return None, "empty"
    words = [w.lower() for w in _WORD.findall(text)]
    tokens = text.split()
    if len(words) < MIN_WORDS or len(words) / max(len(tokens), 1) < 0.6:
        return None, "not_a_sentence"
    if _is_repetitive(words):
        return None, "repetitive"
    if topic and not (_stems(text) & _stems(topic)):
        return None, "off_topic"
    if _echoes(text, context, labels):
        return None, "echo"
    if normalize(text) in {normalize(t) for t in taken}:
        return None, "duplicate"
    if text[-1] not in ".!?":
        text += "."
    return text[0].upper() + text[1:], "ok"


@attrs.define
class Tally:
    """Proposals accepted and rejected (by reason), and slots that fell back to nothing new."""

    accepted: int = 0
    rejected: Counter[str] = attrs.Factory(Counter)
    fallbacks: int = 0

    def add(self, reason: str) -> None:
        if reason == "ok":
            self.accepted += 1
        else:
            self.rejected[reason] += 1

    @property
    def garbage(self) -> int:
        """Rejected proposals other than duplicates (which are fine text, only not new)."""
        return sum(n for reason, n in self.rejected.items() if reason != "duplicate")

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": dict(sorted(self.rejected.items())),
                "garbage": self.garbage, "fallbacks": self.fallbacks}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Tally:
        return cls(int(raw.get("accepted", 0)), Counter(raw.get("rejected", {})), int(raw.get("fallbacks", 0)))

    def merge(self, other: Tally) -> None:
        self.accepted += other.accepted
        self.rejected.update(other.rejected)
        self.fallbacks += other.fallbacks

    def describe(self) -> str:
        rejected = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(self.rejected.items()))
        total = self.accepted + sum(self.rejected.values())
        text = f"prompt model: {self.accepted} of {total} proposals usable"
        if rejected:
            text += f"; rejected: {rejected} ({self.garbage} garbage)"
        if self.fallbacks:
            text += f"; {self.fallbacks} slot(s) got no usable proposal and were dropped (the original " \
                    "instruction stays a candidate)"
        return text
