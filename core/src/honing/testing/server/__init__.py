"""A loopback OpenAI-compatible HTTP server for tests, with fault injection.

    with OpenAICompatServer(responder=lambda body: "hello", faults=FaultPlan(rate=0.2)) as srv:
        lm = LM("openai/test-model", api_base=srv.url, api_key="test")
        ...
        assert srv.count == 1

One concern a module; each imports only those listed above it:

- `messages`: `RecordedRequest` and `Reply`, what a route handler takes and returns;
- `faults`: `FAULT_KINDS`, `FaultPlan` and what each fault does to a reply;
- `httpserver`: the threaded loopback HTTP plumbing (start, stop, lifetime, parsing, sending);
- `openai_routes`: chat completions, completions, embeddings and models (`ROUTES`);
- `finetuning`: the files and fine-tuning jobs emulator (`FineTuneScript`, `FINE_TUNING_ROUTES`);
- `compat`: `OpenAICompatServer`, which composes them (`add_route` adds more routes).
"""

from honing.testing.server.compat import OpenAICompatServer, RouteHandler
from honing.testing.server.faults import FAULT_KINDS, FaultPlan
from honing.testing.server.finetuning import (
    FINAL_STATUSES,
    FINE_TUNE_STATUSES,
    FINE_TUNING_ROUTES,
    FineTuneScript,
)
from honing.testing.server.messages import RecordedRequest, Reply
from honing.testing.server.openai_routes import (
    EMBEDDING_DIM,
    FAULTABLE_PATHS,
    ROUTES,
    default_responder,
    embedding_vector,
    prompt_text,
)

__all__ = [
    "EMBEDDING_DIM",
    "FAULTABLE_PATHS",
    "FAULT_KINDS",
    "FINAL_STATUSES",
    "FINE_TUNE_STATUSES",
    "FINE_TUNING_ROUTES",
    "ROUTES",
    "FaultPlan",
    "FineTuneScript",
    "OpenAICompatServer",
    "RecordedRequest",
    "Reply",
    "RouteHandler",
    "default_responder",
    "embedding_vector",
    "prompt_text",
]
