"""The FAISS index: auto choice, IVF nprobe tuning and recall, factory strings, files; and the CLI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from honing.errors import LoadError, OptimizerError
from honing_knn.index import (
    MIN_NPROBE,
    auto_factory,
    auto_nlist,
    build_index,
    read_index,
    recall_at_k,
    set_params,
    write_index,
)


def clustered(n: int, d: int = 32, clusters: int = 50, seed: int = 0) -> Any:
    """Unit vectors around random centres: structure like real embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def exact(x: Any, q: Any, k: int) -> Any:
    return np.argsort(-(q @ x.T), axis=1)[:, :k]


def test_auto_is_exact_below_100k_and_ivf_from_there():
    assert auto_factory(10) == "Flat"
    assert auto_factory(99_999) == "Flat"
    assert auto_factory(100_000) == "IVF512,Flat"
    assert auto_factory(1_000_000) == "IVF2048,Flat"
    assert auto_nlist(1) == 2


def test_exact_index_finds_the_true_neighbours():
    x = clustered(2000)
    index, info = build_index(x, "auto")
    assert info.factory == "Flat" and info.nprobe is None
    q = clustered(20, seed=1)  # other centres: any queries
    _, ids = index.search(q, 8)
    assert recall_at_k(ids, exact(x, q, 8)) == 1.0


def test_ivf_nprobe_is_tuned_to_the_target_recall():
    data = clustered(20_200)
    x, q = data[:20_000], data[20_000:]  # q: fresh queries from the same distribution
    index, info = build_index(x, "IVF128,Flat", k=8, seed=0)
    assert info.nlist == 128 and MIN_NPROBE <= info.nprobe < 128 and info.recall >= 0.99
    _, ids = index.search(q, 8)
    assert recall_at_k(ids, exact(x, q, 8)) >= 0.95


def test_nprobe_is_twice_the_tuned_value_at_least_the_floor_at_most_nlist():
    x = clustered(3000)
    _, easy = build_index(x, "IVF32,Flat", target_recall=0.0)  # reached at nprobe 1
    assert easy.nprobe == max(2, MIN_NPROBE)
    _, impossible = build_index(x, "IVF32,Flat", target_recall=1.01)
    assert impossible.nprobe == 32 and impossible.recall == 1.0


def test_factory_strings_with_parameters():
    x = clustered(3000)
    _, info = build_index(x, "IVF16,Flat|nprobe=4")
    assert (info.params, info.nprobe, info.recall) == ("nprobe=4", 4, None)
    hnsw, info = build_index(x, "HNSW16|efSearch=64")
    _, ids = hnsw.search(x[:10], 1)
    assert list(ids[:, 0]) == list(range(10))
    with pytest.raises(OptimizerError, match="bad index parameters"):
        build_index(x, "IVF16,Flat|notaparam=3")
    with pytest.raises(OptimizerError, match="FAISS cannot build"):
        build_index(x, "IVF16,Nonsense")


def test_building_is_deterministic_for_a_seed(tmp_path):
    x = clustered(5000)
    a = write_index(build_index(x, "IVF32,Flat", seed=3)[0], tmp_path / "a.faiss")
    b = write_index(build_index(x, "IVF32,Flat", seed=3)[0], tmp_path / "b.faiss")
    assert a == b


def test_files_are_checked_before_faiss_reads_them(tmp_path):
    x = clustered(500)
    index, info = build_index(x, "IVF8,Flat|nprobe=2")
    digest = write_index(index, tmp_path / "i.faiss")
    loaded = read_index(tmp_path / "i.faiss", sha256=digest, ntotal=500, dim=32)
    set_params(loaded, info)
    assert np.array_equal(loaded.search(x[:5], 3)[1], index.search(x[:5], 3)[1])
    with pytest.raises(LoadError, match="does not match"):
        read_index(tmp_path / "i.faiss", sha256="0" * 64, ntotal=500, dim=32)
    with pytest.raises(LoadError, match="holds 500 vectors of dimension 32"):
        read_index(tmp_path / "i.faiss", sha256=digest, ntotal=500, dim=384)
    (tmp_path / "bad.faiss").write_bytes(b"garbage")
    import hashlib

    with pytest.raises(LoadError, match=r"not a FAISS index.*bad\.faiss"):
        read_index(tmp_path / "bad.faiss", sha256=hashlib.sha256(b"garbage").hexdigest(), ntotal=1, dim=1)


# ----------------------------------------------------------------------------------------------------
# the command line

PROGRAM = '''
import honing as hn
from honing.testing.contract import ContractClassify


def make():
    return hn.Predict(ContractClassify)


def make_knn():
    from honing_knn import KNNProgram

    return KNNProgram(hn.Predict(ContractClassify))
'''


def test_compile_from_the_command_line(tmp_path, monkeypatch, capsys):
    import honing as hn
    from honing import cli
    from honing.testing.contract import ContractClassify, contract_examples
    from honing.testing.fake import FakeLM, nearest_demo_responder
    from honing_knn import KNNFewShot

    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(e.toDict()) + "\n" for e in contract_examples()))
    fake = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    monkeypatch.setattr(cli, "_configure_lm", lambda model: hn.configure(lm=fake))
    code = cli.main(["compile", f"{tmp_path / 'prog.py'}:make", "--optimizer", "KNNFewShot", "--param", "k=3",
                     "--trainset", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "out.json")])
    assert code == 0, capsys.readouterr().err
    assert "compiled with KNNFewShot" in capsys.readouterr().out
    assert (tmp_path / "out.knn.faiss").is_file()
    loaded = KNNFewShot.load_program(tmp_path / "out.json", hn.Predict(ContractClassify))
    assert loaded.k == 3
    with hn.context(lm=fake):
        assert loaded(text="my pin is blocked").intent == "pin_blocked"
    # evaluating the saved program: PROGRAM is the (uncompiled) wrapper it loads into
    code = cli.main(["evaluate", f"{tmp_path / 'prog.py'}:make_knn", "--load", str(tmp_path / "out.json"),
                     "--devset", str(tmp_path / "train.jsonl"), "--metric", "exact_match", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("score 1.000 on 12 examples")
