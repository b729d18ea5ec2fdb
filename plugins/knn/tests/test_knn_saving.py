"""Saving and loading compiled KNN programs: the index file beside the JSON, its checksum, tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import honing as hn
import pytest
from honing.embedders import CallableEmbedder
from honing.errors import LoadError
from honing.testing.contract import ContractClassify, contract_examples
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_knn import KNNFewShot, KNNProgram
from knn_helpers import BagOfWords

QUERIES = [{"text": "pin blocked again"}, {"text": "when does my card come"}, {"text": "rate for dollars"}]


@pytest.fixture
def lm() -> Any:
    lm = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    with hn.context(lm=lm):
        yield lm


def compiled(embedder: Any = None, trainset: list[hn.Example] | None = None, **options: Any) -> KNNProgram:
    return KNNFewShot(k=3, embedder=embedder, **options).compile(hn.Predict(ContractClassify),
                                                                 trainset=trainset or contract_examples())


def neighbours(program: KNNProgram) -> list[list[tuple[int, float]]]:
    return [[(n.example, round(n.score, 5)) for n in ns] for ns in program.retrieve(QUERIES)]


def state_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["extra_state"]["self"]


def rewrite(path: Path, change: Any) -> None:
    raw = json.loads(path.read_text())
    change(raw["extra_state"]["self"])
    path.write_text(json.dumps(raw))


def test_save_writes_the_index_beside_the_json_with_its_checksum(tmp_path, lm):
    program = compiled()
    path = tmp_path / "prog.json"
    program.save(path)
    index = state_of(path)["index"]
    assert index["file"] == "prog.knn.faiss" and index["factory"] == "Flat" and index["ntotal"] == 12
    assert index["sha256"] == hashlib.sha256((tmp_path / "prog.knn.faiss").read_bytes()).hexdigest()
    state = state_of(path)
    assert state["embedder"] == {"name": "sentence-transformers/all-MiniLM-L6-v2"}
    assert state["dim"] == 384 and state["input_fields"] == ["text"]
    assert state["examples"][0] == {"source": 0, "inputs": {"text": contract_examples()[0].text},
                                    "demos": {"self": [{**contract_examples()[0].toDict(), "_source": "labeled",
                                                        "_example": 0}]}}
    loaded = KNNFewShot.load_program(path, hn.Predict(ContractClassify))
    assert neighbours(loaded) == neighbours(program)
    assert [loaded(**q) for q in QUERIES] == [program(**q) for q in QUERIES]


def test_loaded_program_moves_with_its_index(tmp_path, lm):
    program = compiled()
    program.save(tmp_path / "a" / "prog.json")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    loaded = KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "b" / "prog.json")
    assert neighbours(loaded) == neighbours(program)


def test_a_tampered_index_is_refused_naming_the_file(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    index_file = tmp_path / "prog.knn.faiss"
    data = bytearray(index_file.read_bytes())
    data[-5] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(LoadError, match=r"does not match its program file.*prog\.knn\.faiss"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")


def test_the_index_of_another_save_is_refused(tmp_path, lm):
    compiled().save(tmp_path / "a" / "prog.json")
    compiled(trainset=contract_examples()[:8]).save(tmp_path / "b" / "prog.json")
    shutil.copy(tmp_path / "b" / "prog.knn.faiss", tmp_path / "a" / "prog.knn.faiss")
    with pytest.raises(LoadError, match="does not match"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "a" / "prog.json")


def test_an_index_with_the_wrong_shape_is_refused_even_with_a_matching_checksum(tmp_path, lm):
    compiled().save(tmp_path / "a" / "prog.json")
    compiled(trainset=contract_examples()[:8]).save(tmp_path / "b" / "prog.json")
    shutil.copy(tmp_path / "b" / "prog.knn.faiss", tmp_path / "a" / "prog.knn.faiss")
    rewrite(tmp_path / "a" / "prog.json", lambda s: s["index"].update(sha256=state_of(tmp_path / "b" / "prog.json")
                                                                      ["index"]["sha256"]))
    with pytest.raises(LoadError, match="holds 8 vectors.*12 examples"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "a" / "prog.json")


def test_a_missing_index_file_is_an_error(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    (tmp_path / "prog.knn.faiss").unlink()
    with pytest.raises(LoadError, match=r"missing.*prog\.knn\.faiss"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")


def test_the_index_file_must_sit_beside_the_json(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    rewrite(tmp_path / "prog.json", lambda s: s["index"].update(file="../elsewhere.faiss"))
    with pytest.raises(LoadError, match="plain file name"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")


def test_without_an_index_file_the_index_is_rebuilt_from_the_examples(tmp_path, lm, caplog):
    from honing.serialization import save_program

    program = compiled()
    save_program(program, tmp_path / "prog.json")  # not KNNProgram.save: no index file
    assert "file" not in state_of(tmp_path / "prog.json")["index"]
    loaded = KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")
    assert neighbours(loaded) == neighbours(program)
    assert "rebuilding" in caplog.text


def test_a_malformed_state_is_a_load_error(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    rewrite(tmp_path / "prog.json", lambda s: s["examples"][2].update(inputs={"question": "x"}))
    with pytest.raises(LoadError, match=r"examples\[2\]\.inputs"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")
    compiled().save(tmp_path / "prog.json")
    rewrite(tmp_path / "prog.json", lambda s: s.update(format=99))
    with pytest.raises(LoadError, match="upgrade honing-knn"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")


def test_load_is_all_or_nothing(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    (tmp_path / "prog.knn.faiss").write_bytes(b"not an index")
    target = KNNProgram(hn.Predict(ContractClassify))
    with pytest.raises(LoadError):
        target.load(tmp_path / "prog.json")
    with pytest.raises(hn.ConfigurationError, match="compile it with"):
        target.state  # noqa: B018


def test_a_plain_program_cannot_load_a_knn_file(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    with pytest.raises(LoadError, match="different program"):
        hn.Predict(ContractClassify).load(tmp_path / "prog.json")


def test_an_embedder_not_found_by_name_must_be_passed_again(tmp_path, lm):
    embedder = BagOfWords()
    program = compiled(embedder)
    program.save(tmp_path / "prog.json")
    assert state_of(tmp_path / "prog.json")["embedder"] == {"name": "test/bag-of-words"}
    with pytest.raises(LoadError, match="cannot find the embedder.*KNNProgram\\(program, embedder=...\\)"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")
    loaded = KNNProgram(hn.Predict(ContractClassify), embedder=embedder).load(tmp_path / "prog.json")
    assert neighbours(loaded) == neighbours(program)
    with pytest.raises(LoadError, match="was given 'test/other'"):
        KNNProgram(hn.Predict(ContractClassify), embedder=BagOfWords("test/other")).load(tmp_path / "prog.json")


def test_ivf_settings_survive_the_round_trip(tmp_path, lm, bow):
    import numpy as np

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    trainset = [hn.Example(text=" ".join(rng.choice(words, 6)), intent="unknown").with_inputs("text")
                for _ in range(600)]
    program = KNNFewShot(k=3, embedder=bow, index="IVF8,Flat|nprobe=3").compile(
        hn.Predict(ContractClassify), trainset=trainset)
    program.save(tmp_path / "prog.json")
    index = state_of(tmp_path / "prog.json")["index"]
    assert (index["factory"], index["params"], index["nlist"], index["nprobe"]) == ("IVF8,Flat", "nprobe=3", 8, 3)
    loaded = KNNProgram(hn.Predict(ContractClassify), embedder=bow).load(tmp_path / "prog.json")
    import faiss

    assert faiss.extract_index_ivf(loaded.state.index).nprobe == 3
    assert neighbours(loaded) == neighbours(program)


class Narrow(BagOfWords):
    """The bag-of-words embedder's name with fewer dimensions: a different model under the same name."""

    dim = 16


def test_an_embedder_of_another_dimension_is_refused_at_load_and_at_query_time(tmp_path, lm):
    program = compiled(BagOfWords())
    program.save(tmp_path / "prog.json")
    with pytest.raises(LoadError, match=r"dimension 16, the saved index has dimension 64 "
                                        r"\(.*prog\.json @ \$\.extra_state\.self\.dim\)"):
        KNNProgram(hn.Predict(ContractClassify), embedder=Narrow()).load(tmp_path / "prog.json")
    # an embedder that does not say its dimension is found out by the first query
    unsaid = CallableEmbedder(Narrow().embed, name="test/bag-of-words")
    loaded = KNNProgram(hn.Predict(ContractClassify), embedder=unsaid).load(tmp_path / "prog.json")
    with pytest.raises(hn.ConfigurationError, match="dimension 16, the index holds dimension 64"):
        loaded(text="pin blocked")


def test_a_malformed_state_names_the_file_and_the_place(tmp_path, lm):
    compiled().save(tmp_path / "prog.json")
    rewrite(tmp_path / "prog.json", lambda s: s.update(k=0))
    with pytest.raises(LoadError, match=r"bad k 0 \(.*prog\.json @ \$\.extra_state\.self\.k\)"):
        KNNProgram(hn.Predict(ContractClassify)).load(tmp_path / "prog.json")
