"""A scripted fake LM for tests of program and optimizer logic (no model, no network).

`FakeLM` answers from a queue of replies or from a function of the request, records every request,
and reports usage like the real client, so optimizer records and budgets can be checked exactly.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from honing.lm.types import Completion, LMRequest, Usage
from honing.lm.usage import report_usage

Responder = Callable[[LMRequest], "str | dict[str, float]"]


class FakeLM:
    """``FakeLM(["8", "9"])`` answers "8" then "9"; ``FakeLM(responder=fn)`` answers ``fn(request)``.

    A responder returns text, or for a `choices` request a dict of choice → log-likelihood.
    `scoring=True` makes the fake claim choice scoring and grammar support, like the local model,
    so the transcript adapter's scoring path can be tested. `context_window` (tokens, counted as
    whitespace-separated words) makes it a model with a bounded context, for code that sizes prompts.
    """

    def __init__(self, replies: Iterable[str] | None = None, *, responder: Responder | None = None,
                 scoring: bool = False, default_adapter: str = "transcript", model: str = "fake/scripted",
                 context_window: int | None = None) -> None:
        self._replies = list(replies or [])
        self._responder = responder
        self.model = model
        self.provider = model.split("/", 1)[0]
        self.supports_choice_scoring = scoring
        self.supports_grammar = scoring
        self.supports_response_schema = False
        self.default_adapter = default_adapter
        self.context_window = context_window
        self.exact_token_counts = True
        self.requests: list[LMRequest] = []
        self._lock = threading.Lock()
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        with self._lock:
            return self._usage

    def __call__(self, request: LMRequest) -> Completion:
        with self._lock:
            self.requests.append(request)
            if self._responder is None:
                if not self._replies:
                    raise AssertionError(f"FakeLM ran out of scripted replies at request {len(self.requests)}")
                reply: Any = self._replies.pop(0)
        if self._responder is not None:
            reply = self._responder(request)
        prompt_tokens = len(request.text().split())
        if isinstance(reply, dict):
            text, logprobs = max(reply, key=reply.get).strip(), {k: float(v) for k, v in reply.items()}
        else:
            text, logprobs = str(reply), None
        usage = Usage(calls=1, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))
        with self._lock:
            self._usage = self._usage + usage
        report_usage(usage)
        return Completion(text=text, model=self.model, usage=usage, choice_logprobs=logprobs, finish_reason="stop")

    complete = __call__

    def count_tokens(self, request: LMRequest | str) -> int:
        """Whitespace-separated words: the fake's tokens (as in its usage)."""
        return len((request if isinstance(request, str) else request.text()).split())

    def __deepcopy__(self, memo: dict[int, Any]) -> FakeLM:
        return self  # like the real LM: programs are copied, the model they call is shared

    def to_state(self) -> dict[str, Any]:
        return {"model": self.model}


# ----------------------------------------------------------------------------------------------------
# Responders that behave like a model that learns from demos, so optimizers have something to improve.

_LINE = re.compile(r"^(?P<prefix>[A-Z][\w ]*): ?(?P<value>.*)$")


def transcript_blocks(prompt: str) -> list[dict[str, str]]:
    """Split a transcript prompt into blocks of ``{prefix: value}`` (the header block included)."""
    blocks = []
    for block in prompt.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            m = _LINE.match(line)
            if m:
                fields[m.group("prefix")] = m.group("value").strip()
        blocks.append(fields)
    return blocks


def nearest_demo_responder(input_prefix: str, output_prefix: str, *, default: str = "unknown") -> Responder:
    """Answer with the output of the demo whose input shares the most words with the query.

    With no demos it answers `default`, so a program's accuracy rises with good demos, like a real LM.
    Choice requests get log-likelihood 0 for that answer and -5 for the others.
    """

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", text.lower()))

    def respond(request: LMRequest) -> str | dict[str, float]:
        blocks = transcript_blocks(request.text())
        query = blocks[-1].get(input_prefix, "")
        demos = [b for b in blocks[:-1] if input_prefix in b and output_prefix in b and b[output_prefix]]
        answer = default
        if demos:
            best = max(demos, key=lambda b: len(words(b[input_prefix]) & words(query)))
            if words(best[input_prefix]) & words(query):
                answer = best[output_prefix]
        if request.choices:
            return {c: (0.0 if c.strip() == answer else -5.0) for c in request.choices}
        return answer

    return respond
