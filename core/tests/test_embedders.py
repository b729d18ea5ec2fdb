"""honing.embedders: the vector cache, batching and normalising, names through the registry, litellm."""

from __future__ import annotations

import sqlite3
from typing import Any

import honing as hn
import numpy as np
import pytest
from honing.embedders import (
    CachedEmbedder,
    CallableEmbedder,
    EmbeddingCache,
    LiteLLMEmbedder,
    get_default_embedding_cache,
    normalize,
)
from honing.lm.cache import DiskCache, get_default_cache
from honing.plugins import hookimpl, make_plugin_manager
from honing.plugins.lookup import resolve_embedder
from honing.plugins.registry import UnknownEntry


class Counting:
    """A tiny deterministic embedder: (length, vowels, 1) per text. Records what it was asked."""

    def __init__(self, name: str = "test/counting") -> None:
        self.name = name
        self.batches: list[list[str]] = []

    def embed(self, texts: list[str]) -> Any:
        self.batches.append(list(texts))
        return [[len(t), sum(c in "aeiou" for c in t), 1.0] for t in texts]


@pytest.fixture
def pm() -> Any:
    return make_plugin_manager(load_entrypoints=False)


# ----------------------------------------------------------------------------------------------------
# the cache file

def test_vectors_round_trip_as_raw_float32(tmp_path):
    cache = EmbeddingCache(tmp_path)
    assert cache.path == (tmp_path / "embeddings.sqlite3").resolve()
    cache.put_many("m", [("h1", np.array([0.5, -1.0], dtype=np.float32)), ("h2", [3.0, 4.0])])
    found = cache.get_many("m", ["h1", "h2", "h3", "h1"])
    assert set(found) == {"h1", "h2"} and found["h1"].tolist() == [0.5, -1.0]
    assert cache.get_many("other-model", ["h1"]) == {}
    [(blob,)] = sqlite3.connect(cache.path).execute("SELECT vector FROM vectors WHERE hash = 'h2'").fetchall()
    assert blob == np.array([3.0, 4.0], dtype="<f4").tobytes()
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_a_corrupt_row_is_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put_many("m", [("h1", np.ones(4, dtype=np.float32))])
    with sqlite3.connect(cache.path) as conn:
        conn.execute("UPDATE vectors SET vector = ? WHERE hash = 'h1'", (b"short",))
    assert cache.get_many("m", ["h1"]) == {}


def test_an_unreadable_file_is_a_miss_not_an_error(tmp_path, caplog):
    (tmp_path / "embeddings.sqlite3").write_bytes(b"this is not a database" * 100)
    cache = EmbeddingCache(tmp_path)
    assert cache.get_many("m", ["h1"]) == {}
    cache.put_many("m", [("h1", [1.0])])  # logged, not raised
    assert "could not be" in caplog.text


def test_the_default_cache_follows_the_cache_directory_beside_the_lm_cache(honing_cache_dir, tmp_path,
                                                                          monkeypatch):
    first = get_default_embedding_cache()
    assert first is get_default_embedding_cache()
    assert first.path == (honing_cache_dir / "embeddings.sqlite3").resolve()
    assert get_default_cache().path.parent == first.path.parent
    assert not isinstance(get_default_cache(), EmbeddingCache) and not isinstance(first, DiskCache)
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert get_default_embedding_cache().path == (tmp_path / "elsewhere" / "embeddings.sqlite3").resolve()


# ----------------------------------------------------------------------------------------------------
# batching, normalising, caching

def test_batches_normalises_and_embeds_a_repeated_text_once(tmp_path):
    inner = Counting()
    cached = CachedEmbedder(inner, cache=EmbeddingCache(tmp_path), batch_size=2)
    out = cached.embed(["ab", "abcde", "ab", "xyz"])
    assert out.shape == (4, 3) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert inner.batches == [["ab", "abcde"], ["xyz"]]
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    assert np.array_equal(out[0], out[2])
    assert (cached.calls, cached.embedded, cached.dim) == (2, 3, 3)


def test_a_second_embedding_of_the_same_texts_reads_the_cache(tmp_path):
    inner = Counting()
    first = CachedEmbedder(inner, cache=EmbeddingCache(tmp_path)).embed(["one", "two"])
    again = CachedEmbedder(inner, cache=EmbeddingCache(tmp_path)).embed(["two", "one", "three"])
    assert inner.batches == [["one", "two"], ["three"]]
    assert np.array_equal(again[:2], first[::-1])


def test_the_cache_is_keyed_by_the_embedders_cache_key(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b = Counting("test/a"), Counting("test/b")
    CachedEmbedder(a, cache=cache).embed(["same text"])
    CachedEmbedder(b, cache=cache).embed(["same text"])
    assert len(a.batches) == len(b.batches) == 1
    narrow = LiteLLMEmbedder("openai/e", dimensions=8)
    assert narrow.cache_key == "openai/e#dimensions=8" != LiteLLMEmbedder("openai/e").cache_key


def test_an_unnamed_callable_is_never_cached_on_disk(honing_cache_dir):
    inner = Counting()
    unnamed = CachedEmbedder(resolve_embedder(inner.embed))
    assert unnamed.cache is None and unnamed.name.startswith("callable:")
    unnamed.embed(["x"])
    unnamed.embed(["x"])
    assert len(inner.batches) == 2
    named = CachedEmbedder(CallableEmbedder(inner.embed, name="test/named"))
    named.embed(["x"])
    named.embed(["x"])
    assert len(inner.batches) == 3
    assert not (honing_cache_dir / "embeddings.sqlite3").exists() or len(get_default_embedding_cache()) == 1


def test_normalize_keeps_zero_rows_zero():
    out = normalize([[3.0, 4.0], [0.0, 0.0]])
    assert out.tolist() == [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]


@pytest.mark.parametrize(("fn", "message"), [
    (lambda texts: [[1.0, 2.0, 3.0]], r"returned shape \(1, 3\) for 2 texts"),
    (lambda texts: [[]] * len(texts), r"returned shape \(2, 0\)"),
    (lambda texts: [[float("nan")]] * len(texts), "NaN or infinite"),
    (lambda texts: [["x"]] * len(texts), "not a numeric array"),
])
def test_bad_embedder_output_names_the_embedder(fn, message):
    with pytest.raises(ValueError, match=message) as info:
        CachedEmbedder(CallableEmbedder(fn, name="test/broken"), cache=False).embed(["a", "b"])
    assert "'test/broken'" in str(info.value)


def test_a_changing_dimension_is_an_error():
    sizes = iter([2, 3])
    broken = CallableEmbedder(lambda texts: np.ones((len(texts), next(sizes))), name="test/changing")
    embedder = CachedEmbedder(broken, cache=False, batch_size=1)
    with pytest.raises(ValueError, match="dimension 3, earlier ones had 2"):
        embedder.embed(["a", "b"])


def test_non_text_input_is_refused():
    with pytest.raises(TypeError, match="text 1 is a int"):
        CachedEmbedder(Counting(), cache=False).embed(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        CachedEmbedder(Counting(), batch_size=0)


# ----------------------------------------------------------------------------------------------------
# resolving: names through the register_embedders hook, callables, objects

def test_litellm_providers_are_core_name_prefixes(pm):
    embedder = resolve_embedder("openai/text-embedding-3-small", pm=pm)
    assert isinstance(embedder, LiteLLMEmbedder) and embedder.model == "openai/text-embedding-3-small"
    assert resolve_embedder("litellm/someprovider/model", pm=pm).model == "someprovider/model"


def test_callables_and_objects_are_used_as_they_are(pm):
    counting = Counting()
    assert resolve_embedder(counting, pm=pm) is counting
    assert isinstance(resolve_embedder(lambda texts: texts, pm=pm), CallableEmbedder)
    with pytest.raises(TypeError, match="an embedder is a name"):
        resolve_embedder(42, pm=pm)
    with pytest.raises(TypeError, match="apply only to embedders given by name"):
        resolve_embedder(counting, pm=pm, api_base="http://x")


def test_a_plugin_registers_embedders_by_name_and_prefix(pm):
    made: list[tuple[str, dict[str, Any]]] = []

    class Plugin:
        @hookimpl
        def register_embedders(self, register):
            register("mine/", lambda name, **options: made.append((name, options)) or Counting(name))

    pm.register(Plugin(), name="mine")
    embedder = resolve_embedder("mine/model-a", pm=pm, device="cpu")
    assert embedder.name == "mine/model-a" and made == [("mine/model-a", {"device": "cpu"})]


def test_unknown_names_say_what_to_do(pm):
    with pytest.raises(UnknownEntry, match="no embedder named 'nope'"):
        resolve_embedder("nope", pm=pm)
    with pytest.raises(UnknownEntry, match="use 'litellm/someprovider/model'"):
        resolve_embedder("someprovider/model", pm=pm)


def test_the_default_and_sentence_transformers_name_the_plugin_to_install(pm, monkeypatch):
    from honing.plugins import registry

    monkeypatch.setattr(registry, "distribution_installed", lambda name: False)
    with pytest.raises(UnknownEntry, match="comes with the honing-knn plugin: pip install honing-knn"):
        resolve_embedder(None, pm=pm)
    with pytest.raises(UnknownEntry, match="pip install honing-knn"):
        resolve_embedder("sentence-transformers/all-MiniLM-L6-v2", pm=pm)
    monkeypatch.setattr(registry, "distribution_installed", lambda name: True)
    with pytest.raises(UnknownEntry, match="installed but did not register it"):
        resolve_embedder(None, pm=pm)


# ----------------------------------------------------------------------------------------------------
# litellm, against the loopback server

def test_litellm_embedder_through_a_loopback_server(openai_server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    embedder = resolve_embedder("openai/test-embedding", api_base=openai_server.url)
    assert embedder.to_state() == {"name": "openai/test-embedding", "api_base": openai_server.url}
    cached = CachedEmbedder(embedder, cache=EmbeddingCache(tmp_path), batch_size=2)
    out = cached.embed(["a", "b", "c"])
    assert out.shape == (3, 16) and openai_server.count == 2
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    CachedEmbedder(embedder, cache=EmbeddingCache(tmp_path)).embed(["c", "a"])
    assert openai_server.count == 2, "cached"


def test_litellm_errors_never_show_the_key(make_openai_server):
    server = make_openai_server(api_key="right-key-123456")
    embedder = LiteLLMEmbedder("openai/test-embedding", api_base=server.url, api_key="wrong-key-987654",
                               num_retries=0)
    assert "wrong-key" not in repr(embedder) and "wrong-key" not in str(embedder.to_state())
    with pytest.raises(hn.LMError, match="embedding with 'openai/test-embedding' failed") as info:
        embedder.embed(["hello"])
    assert "wrong-key-987654" not in str(info.value)
