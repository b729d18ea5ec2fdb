"""The vector index behind KNNFewShot: FAISS, inner product over unit vectors (= cosine similarity).

``"auto"`` picks exact search (``IndexFlatIP``) below `AUTO_IVF_THRESHOLD` vectors and an inverted-file
index (``IVF<nlist>,Flat``, k-means centroids trained on a sample) from there on, with `nprobe` tuned at
build time: twice the smallest power of two whose leave-one-out recall@k against exact search, on a
sample of the stored vectors, reaches `target_recall`, and at least `MIN_NPROBE`. Any FAISS factory
string works too (``"HNSW32"``, ``"IVF1024,SQ8"``); search parameters may follow a ``|``:
``"IVF1024,Flat|nprobe=32"`` (else an IVF's nprobe is tuned the same way).

Files: `write_index` writes FAISS's own binary format (no pickle) atomically and returns its sha256;
`read_index` checks the sha256 before handing the file to FAISS and checks the index against what the
program file says (count, dimension, metric), raising `LoadError` naming the file otherwise.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
from honing.plugin_api import LoadError, OptimizerError

#: At or above this many vectors, "auto" builds an IVF index instead of exact search.
AUTO_IVF_THRESHOLD = 100_000
#: Leave-one-out recall@k that nprobe tuning aims for.
DEFAULT_TARGET_RECALL = 0.99
#: Stored vectors used as queries when tuning nprobe.
TUNING_QUERIES = 256
#: nprobe is this many times the smallest that reaches the target on the tuning queries, and at least
#: `MIN_NPROBE`: stored vectors sit where the data is dense, so their leave-one-out recall overstates
#: a new query's (bench/knn.py, 100k synthetic vectors, held-out real queries: leave-one-out 0.977 at
#: nprobe 2 where the queries get 0.927, and 0.997 at 4 where they get 0.974; on 9k real vectors the
#: two agree). A larger nprobe costs little: the lists are short.
NPROBE_MARGIN = 2
MIN_NPROBE = 8
#: k-means settings for an IVF's centroids: a sample of this many vectors per list (faiss warns below
#: 39) and this many iterations train centroids as good for search as the full set, in a fraction of
#: the time (training, not adding, dominates an IVF build on a 2-core CPU).
POINTS_PER_CENTROID = 40
KMEANS_ITERATIONS = 10


@attrs.frozen
class IndexInfo:
    """How an index was built: the factory string, IVF settings and the recall measured when tuning."""

    factory: str
    params: str = ""
    nlist: int | None = None
    nprobe: int | None = None
    recall: float | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def auto_nlist(n: int) -> int:
    """Inverted lists for `n` vectors: the power of two nearest 2·√n (1M → 2048, 100k → 512). Fewer
    lists than faiss's usual 4-16·√n: training and adding cost O(n·nlist), searching O(nprobe·n/nlist),
    and on a CPU build time is the scarcer one (1M vectors: about 1 ms per query at nprobe 16)."""
    return max(1, 2 ** round(math.log2(2 * math.sqrt(max(n, 1)))))


def auto_factory(n: int) -> str:
    return "Flat" if n < AUTO_IVF_THRESHOLD else f"IVF{auto_nlist(n)},Flat"


def build_index(vectors: Any, spec: str = "auto", *, k: int = 8, seed: int = 0,
                target_recall: float = DEFAULT_TARGET_RECALL) -> tuple[Any, IndexInfo]:
    """An inner-product FAISS index over `vectors` (float32, unit rows; position = id)."""
    import faiss
    import numpy as np

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if not isinstance(spec, str) or not spec.strip():
        raise OptimizerError(f"KNNFewShot: index must be 'auto' or a FAISS factory string, got {spec!r}")
    factory, _, params = spec.partition("|")
    factory, params = factory.strip(), params.strip()
    if factory == "auto":
        factory = auto_factory(n)
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise OptimizerError(f"KNNFewShot: FAISS cannot build index {factory!r}: "
                             f"{_faiss_message(exc)}") from None
    ivf = _ivf(index)
    if ivf is not None:
        if n < ivf.nlist:
            raise OptimizerError(f"KNNFewShot: index {factory!r} has {ivf.nlist} lists but there are only "
                                 f"{n} training vectors; use index='auto' or fewer lists")
        ivf.cp.seed = seed
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.max_points_per_centroid = POINTS_PER_CENTROID
    if not index.is_trained:
        try:
            index.train(_training_sample(x, index, seed))
        except RuntimeError as exc:
            raise OptimizerError(f"KNNFewShot: training index {factory!r} failed: "
                                 f"{_faiss_message(exc)}") from None
    index.add(x)
    info = IndexInfo(factory=factory, params=params, nlist=ivf.nlist if ivf is not None else None)
    if params:
        try:
            faiss.ParameterSpace().set_index_parameters(index, params)
        except RuntimeError as exc:
            raise OptimizerError(f"KNNFewShot: bad index parameters {params!r}: "
                                 f"{_faiss_message(exc)}") from None
        if ivf is not None:
            info = attrs.evolve(info, nprobe=int(ivf.nprobe))
    elif ivf is not None:
        nprobe, recall = tune_nprobe(index, x, k=k, seed=seed, target=target_recall)
        info = attrs.evolve(info, nprobe=nprobe, recall=round(recall, 4))
    return index, info


#: Searches of fewer queries than this run on the calling thread alone: for a handful of queries
#: OpenMP's threads cost more than they save, and far more on a busy machine (measured: 100k exact,
#: one query, 2 cores under load: 31 ms on one thread, 96 ms on two).
SINGLE_THREAD_BELOW = 20


def search(index: Any, queries: Any, k: int) -> tuple[Any, Any]:
    """`index.search`, on the calling thread only for small batches (OpenMP's thread count is a
    per-thread setting, so this never changes other threads' searches)."""
    import faiss

    if len(queries) >= SINGLE_THREAD_BELOW:
        return index.search(queries, k)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(previous)


def _training_sample(x: Any, index: Any, seed: int) -> Any:
    import numpy as np

    ivf = _ivf(index)
    want = ivf.nlist * ivf.cp.max_points_per_centroid if ivf is not None else 100_000
    if x.shape[0] <= want:
        return x
    rows = np.random.default_rng(seed).choice(x.shape[0], size=want, replace=False)
    return np.ascontiguousarray(x[np.sort(rows)])


def _ivf(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _faiss_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def recall_at_k(found: Any, truth: Any) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (ids; -1 entries ignored)."""
    total = hits = 0
    for f, t in zip(found, truth):
        want = {int(i) for i in t if i >= 0}
        hits += len(want & {int(i) for i in f if i >= 0})
        total += len(want)
    return hits / total if total else 1.0


def tune_nprobe(index: Any, x: Any, *, k: int, seed: int, target: float) -> tuple[int, float]:
    """`NPROBE_MARGIN` times the smallest power-of-two nprobe whose leave-one-out recall@k on sampled
    stored vectors reaches `target` (each query is a stored vector; itself is dropped from both result
    lists), at least `MIN_NPROBE`; returns it with its measured recall."""
    import faiss
    import numpy as np

    ivf = _ivf(index)
    n = x.shape[0]
    rows = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(TUNING_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(x[rows])
    kk = min(k + 1, n)

    def others(ids: Any) -> list[list[int]]:
        return [[i for i in found if i != row][:kk - 1] for found, row in zip(ids, rows)]

    truth = others(faiss.knn(queries, x, kk, metric=faiss.METRIC_INNER_PRODUCT)[1])

    def recall(nprobe: int) -> float:
        ivf.nprobe = nprobe
        return recall_at_k(others(index.search(queries, kk)[1]), truth)

    nprobe = 1
    while recall(nprobe) < target and nprobe < ivf.nlist:
        nprobe = min(nprobe * 2, ivf.nlist)
    nprobe = min(max(nprobe * NPROBE_MARGIN, MIN_NPROBE), ivf.nlist)
    return nprobe, recall(nprobe)


def set_params(index: Any, info: IndexInfo) -> None:
    """Apply the saved search settings to an index read from disk."""
    import faiss

    if info.params:
        faiss.ParameterSpace().set_index_parameters(index, info.params)
    ivf = _ivf(index)
    if ivf is not None and info.nprobe is not None:
        ivf.nprobe = info.nprobe


# ----------------------------------------------------------------------------------------------------
# files

def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_index(index: Any, path: str | os.PathLike[str]) -> str:
    """Write atomically (temp file renamed over the target) with `faiss.write_index`; return the sha256."""
    import faiss

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        digest = sha256_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def read_index(path: str | os.PathLike[str], *, sha256: str, ntotal: int, dim: int) -> Any:
    """Read an index written by `write_index`, refusing one whose checksum or shape does not match."""
    import faiss

    file = str(path)
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise LoadError("the FAISS index file is missing", file=file) from None
    except OSError as exc:
        raise LoadError(f"cannot read the FAISS index: {exc.strerror}", file=file) from None
    if actual != sha256:
        raise LoadError(f"the FAISS index does not match its program file (sha256 {actual[:12]}…, the "
                        f"program file expects {sha256[:12]}…): it was changed, or belongs to another save",
                        file=file)
    try:
        index = faiss.read_index(file)
    except RuntimeError as exc:
        raise LoadError(f"not a FAISS index: {_faiss_message(exc)}", file=file) from None
    if index.ntotal != ntotal or index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise LoadError(f"the FAISS index holds {index.ntotal} vectors of dimension {index.d}, the program "
                        f"file has {ntotal} examples of dimension {dim} (inner product)", file=file)
    return index
