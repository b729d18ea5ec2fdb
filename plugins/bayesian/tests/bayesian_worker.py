"""One BayesianSignatureOptimizer worker, run as a subprocess by the storage tests.

    python bayesian_worker.py '{"server": URL, "storage": ..., "study": ..., "out": PATH, ...}'

The LM is the loopback OpenAI-compatible server of the test process (`server_responder` answers it:
deterministic, and right when the instruction names the key words), so the test counts every request
every worker sends. HONING_CACHE_DIR comes from the environment (shared by the workers of a test). With
"go" and "ready" paths, the worker touches "ready" once imported and starts compiling when "go" exists,
so that workers whose imports take different times still start together.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bayesian_helpers import GOOD, keyword_intent

#: What the scripted prompt model proposes, chosen by the tip it was given.
PROPOSALS = (GOOD, "Pick the single intent that best fits the customer's banking query.",
             "Read the banking question and answer with the one intent it is about.")


def _tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(.*?)</{name}>", text, re.DOTALL)
    return m.group(1).strip() if m else None


def server_responder(body: dict[str, Any]) -> str:
    """The server's answer to a chat request from honing's chat adapter."""
    messages = body["messages"]
    system, last = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You improve instructions"):
        tip = _tag(last, "tip") or ""
        return PROPOSALS[sum(map(ord, tip)) % len(PROPOSALS)]
    if system.startswith(("Here are examples", "Summarize these observations")):
        return "The queries are short banking questions about cards, exchange rates and pins."
    text = _tag(last, "text") or ""
    if "key words" in system.split("\n", 1)[0]:
        return keyword_intent(text)
    best, overlap = "unknown", 0
    words = set(re.findall(r"[a-z]+", text.lower()))
    for user, assistant in zip(messages[1:-1:2], messages[2:-1:2]):
        shared = len(words & set(re.findall(r"[a-z]+", (_tag(user["content"], "text") or "").lower())))
        if shared > overlap:
            best, overlap = _tag(assistant["content"], "intent") or best, shared
    return best


def main(config: dict[str, Any]) -> None:
    import honing as hn
    from bayesian_helpers import many
    from honing.testing.contract import ContractClassify, contract_examples, intent_match
    from honing_bayesian import BayesianSignatureOptimizer

    # the key tells the test's server which worker sent a request
    hn.configure(lm=hn.LM("openai/test", api_base=config["server"], api_key=config.get("api_key", "x"), num_retries=0,
                          timeout=60))
    optimizer = BayesianSignatureOptimizer(
        intent_match, auto=None, num_candidates=config.get("num_candidates", 3),
        num_trials=config.get("num_trials", 8), minibatch_size=config.get("minibatch_size", 6),
        minibatch_full_eval_steps=config.get("full_eval_steps", 3), seed=config.get("seed", 0))
    kwargs = {k: config[k] for k in ("run_dir", "resume") if config.get(k)}
    if config.get("storage"):
        kwargs["storage"] = config["storage"]
    if config.get("study"):
        kwargs["study_name"] = config["study"]
    if config.get("go"):  # imported and ready: start together with the other workers
        import litellm  # noqa: F401 - the LM client imports it at the first call: slow, and not the same for all
        Path(config["ready"]).touch()
        while not Path(config["go"]).exists():
            time.sleep(0.05)
    compiled = optimizer.compile(hn.Predict(ContractClassify), trainset=contract_examples(),
                                 valset=many(config.get("val", 14)), **kwargs)
    record = compiled.compile_record
    chosen = next(c for c in record.candidates if c.get("chosen"))
    Path(config["out"]).write_text(json.dumps({
        "score": record.score, "chosen": chosen["key"], "trial": chosen["trial"],
        "instruction": compiled.signature.instructions, "calls": record.calls, "notes": list(record.notes),
        "trials": record.candidates}, default=str))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
