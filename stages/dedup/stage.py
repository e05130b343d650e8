"""`minhash_dedup`: remove near-duplicate samples by caption text and/or sampled frames.

Pipeline (through the executor: Ray Data under the runner, every shuffle its hash shuffle;
nothing row-sized on the driver):
1. per piece of the input (a Parquet file of the runner's segment), a slim table: per row a
   node id (piece index << 32 | row), the keep-policy value, and per signal (text: caption
   shingles; visual: window pHashes of `frames`) the LSH band keys of its MinHash signature
   plus the verification payload. Signatures themselves are never stored.
2. bucket exchange: (band key, node, kind) records hash-partitioned on the band key; each
   partition finds the candidate pairs of its buckets. A pair then goes to the piece of
   each endpoint in turn (a route on the piece of `lo`, then of `hi`), where a task holding
   that piece's features looks the payload up by row, and is verified at the second. Only
   pairs move: payloads are stored once per row and never shuffled.
3. connected components: large-star / small-star rounds, each an exchange of the edges on
   their source (components.py), until an order-free checksum of the edges stops changing.
4. decision: the star edges go to the piece of their source, where each member gets its
   root, policy value, key and payload; members are grouped by component root; the best
   row (highest value, then smallest key) is kept and represents the members verified
   similar to it; the best of the rest represents those similar to it, and so on (so
   `_duplicate_of` always names a verified match).
5. decisions (rows in clusters only) are routed by piece; each piece is read again and
   gets `_reject`, `_duplicate_of` and `dup_cluster`: the rows never move.

Modes: `text`, `visual`, or `both` (two independent signatures and LSH indexes whose
edges go into one graph: a pair that matches on either signal is a duplicate).
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from dataprep.columns import KEY
from dataprep.executor import Executor
from dataprep.stage import GlobalStage, StageParams

log = logging.getLogger(__name__)

CLUSTER = "dup_cluster"
_NODE, _SCORE, _TBANDS, _TPAY, _VBANDS, _VPAY = ("_dd_node", "_dd_score", "_dd_tbands", "_dd_tpay",
                                                "_dd_vbands", "_dd_vpay")


class MinHashDedupParams(StageParams):
    """Options of `minhash_dedup`."""

    mode: Literal["text", "visual", "both"] = Field(
        "both", description="Signals compared: caption text, sampled frames, or both (a match on either "
                            "is a duplicate). Both by default: re-uploads often change one of the two.")
    text_column: str = Field("caption", description="Column holding the caption text.")
    ngram: int = Field(2, description="Words per text shingle. 2: COCO-length captions (~10 words) keep "
                                      "enough shingles while word order still counts.")
    num_perm: int = Field(128, description="MinHash permutations per signature. 128: Jaccard error ~0.04 "
                                           "(1/sqrt(128)/2) at 512 bytes a signature.")
    seed: int = Field(42, description="Seed of the permutations; the same seed gives the same signatures.")
    threshold: float = Field(0.7, description="Caption Jaccard similarity (0-1) from which two captions are "
                                              "duplicates. 0.7: templated and lightly edited captions, not "
                                              "paraphrases.")
    bands: int | None = Field(None, description="Text LSH bands; with `rows`, overrides the choice from "
                                                "`threshold` (datasketch's optimal parameters).")
    rows: int | None = Field(None, description="Text LSH rows per band (see `bands`).")
    visual_threshold: float = Field(0.02, description="Jaccard (0-1) of frame-hash token sets from which two "
                                    "items become LSH candidates. Low, 0.02 (128 bands of 1 row): a 20% centre "
                                    "crop shares only the tokens of the few windows it matches (Jaccard 0.02-0.05 "
                                    "on the real photos); `verify` removes the false candidates.")
    visual_bands: int | None = Field(None, description="Visual LSH bands; with `visual_rows`, overrides "
                                                       "the choice from `visual_threshold`.")
    visual_rows: int | None = Field(None, description="Visual LSH rows per band (see `visual_bands`).")
    hash_bands: int = Field(4, description="Groups each 63-bit frame hash is cut into for tokens. 4 (about "
                                           "16 bits each): unrelated images share none, a hash a few bits "
                                           "off still shares some.")
    verify: bool = Field(True, description="Check every LSH candidate exactly (text: Jaccard of shingle "
                                           "sets; visual: frame hashes) before merging. On: precision.")
    max_hamming: int = Field(6, description="Bits (of 63) within which two frames match (see "
                                            "candidates.frame_distance). 6: crops of up to 20%, bars, colour and "
                                            "JPEG edits of the real photos measure <= 6 (tests/stages/dedup/"
                                            "test_visual_crops.py); at 8, 10 of 360 tiles cut from different "
                                            "photos (hard negatives) come within reach of another's, against 4 at "
                                            "6. Distances are even: each hash has 31 ones.")
    frame_match: float = Field(0.25, description="Fraction (0-1] of the shorter clip's frames that must have "
                                                 "a match for a visual duplicate. 0.25 (2 of 8): a 10% trim of "
                                                 "a fast-cut clip moves the sampled frames; measured 0.25-1.0 "
                                                 "on trims, 0 on distinct clips.")
    recall_weight: float = Field(0.8, description="Weight (0-1) of false negatives against false positives when "
                                                  "bands x rows are chosen from a threshold (datasketch's "
                                                  "method). 0.8: verification removes false candidates, missed "
                                                  "ones are lost; gives P(candidate | J=threshold+0.1) ~0.99.")
    keep: Literal["score", "duration", "resolution", "key"] = Field(
        "resolution", description="Which row of a cluster survives: highest `score_column`, longest "
                                  "duration, most pixels, or (`key`) the smallest key, which needs no "
                                  "column: text-only datasets have no sizes. Ties go to the smallest key.")
    score_column: str | None = Field(None, description="Column whose highest value wins when keep=score.")
    num_partitions: int = Field(8, description="Hash partitions of buckets, edges and decisions. 8 suits a "
                                               "laptop; use ~2-4x the cluster's cores.")
    max_bucket: int = Field(32, description="Bucket size up to which all pairs are candidates; above, a star "
                                            "from the smallest node (linear cost for mass duplicates).")
    max_rounds: int = Field(64, description="Cap on connected-component rounds (they converge in a few).")

    @field_validator("threshold", "visual_threshold", "recall_weight")
    @classmethod
    def _unit_open(cls, v: float, info) -> float:
        if not 0 < v < 1:
            raise ValueError(f"`{info.field_name}` must be in (0, 1), got {v}")
        return v

    @field_validator("frame_match")
    @classmethod
    def _unit_half_open(cls, v: float, info) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"`{info.field_name}` must be in (0, 1], got {v}")
        return v

    @field_validator("ngram")
    @classmethod
    def _ngram(cls, v: int) -> int:
        if not 1 <= v <= 8:
            raise ValueError(f"`ngram` must be in [1, 8], got {v}")
        return v

    @field_validator("num_perm", "num_partitions", "max_bucket", "max_rounds", "hash_bands")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1 or (info.field_name == "max_bucket" and v < 2):
            raise ValueError(f"`{info.field_name}` must be >= {2 if info.field_name == 'max_bucket' else 1}, got {v}")
        return v

    @field_validator("max_hamming")
    @classmethod
    def _hamming(cls, v: int) -> int:
        if not 0 <= v < 32:
            raise ValueError(f"`max_hamming` must be in [0, 32), got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> MinHashDedupParams:
        for b, r in (("bands", "rows"), ("visual_bands", "visual_rows")):
            bv, rv = getattr(self, b), getattr(self, r)
            if (bv is None) != (rv is None):
                raise ValueError(f"give both `{b}` and `{r}` or neither, got {b}={bv}, {r}={rv}")
            if bv is not None and (bv < 1 or rv < 1 or bv * rv > self.num_perm):
                raise ValueError(f"`{b}` x `{r}` must be >= 1 and <= num_perm ({self.num_perm}), got {bv} x {rv}")
        if self.keep == "score" and not self.score_column:
            raise ValueError("keep=score needs `score_column`, the column whose highest value wins")
        return self


def _policy_values(batch, params: MinHashDedupParams) -> np.ndarray:
    """(N,) float64: the value the keep policy maximizes (missing -> -inf)."""
    def col(name: str) -> np.ndarray:
        if name not in batch.column_names:
            raise KeyError(f"keep={params.keep} needs column {name!r}, which the rows do not have")
        return batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    if params.keep == "key":
        return np.zeros(batch.num_rows)  # every row ties: the smallest key wins
    if params.keep == "score":
        v = col(params.score_column)
    elif params.keep == "duration":
        v = col("duration")
    else:
        v = col("width") * col("height")
    return np.where(np.isnan(v), -np.inf, v)


class MinHashDedup(GlobalStage):
    """Near-duplicate removal with MinHash LSH on caption text and/or frame hashes."""

    name: ClassVar[str] = "minhash_dedup"
    # What every configuration reads. An instance's `reads` adds what its options need
    # (`frames` for visual/both, the keep-policy columns); `run` checks them first.
    reads: ClassVar[tuple[str, ...]] = (KEY, "caption")
    writes: ClassVar[tuple[str, ...]] = (CLUSTER,)
    Params: ClassVar[type[StageParams]] = MinHashDedupParams
    one_task_when_small: ClassVar[bool] = True  # `run` uses only the executor
    # module -> the pip requirement that provides it: numba compiles the shingle and
    # MinHash kernels.
    requires: ClassVar[dict[str, str]] = {"numba": "numba>=0.60"}

    def __init__(self, params: MinHashDedupParams | None = None, **options: Any) -> None:
        super().__init__(params, **options)
        _check_requirements(self.requires)
        self.stats: dict[str, Any] = {}  # filled by run(): how the work split over partitions
        p: MinHashDedupParams = self.params
        cols = [KEY]
        if p.mode in ("text", "both"):
            cols.append(p.text_column)
        if p.mode in ("visual", "both"):
            cols.append("frames")
        if p.keep == "score":
            cols.append(p.score_column)
        elif p.keep == "duration":
            cols.append("duration")
        elif p.keep == "resolution":
            cols += ["width", "height"]
        self.reads = tuple(cols)  # what this configuration needs (the class lists the defaults)
        self.text_lsh = (p.bands, p.rows) if p.bands else _optimal(p.threshold, p.num_perm, p.recall_weight)
        self.visual_lsh = ((p.visual_bands, p.visual_rows) if p.visual_bands
                           else _optimal(p.visual_threshold, p.num_perm, p.recall_weight))

    # -- step 1: per-row features (plain Python; runs in Ray Data tasks) --------------
    def features(self, batch, *, node_base: int = 0):
        """The slim table of a piece of the input: key, node id (node_base + row index), policy
        value, and per signal the LSH band keys and the verification payload. Input columns are
        not copied (the piece itself is read again and annotated at the end)."""
        import pyarrow as pa

        from dataprep.stages.dedup.lsh import band_keys
        from dataprep.stages.dedup.minhash import has_signature, signatures

        p: MinHashDedupParams = self.params
        n = batch.num_rows
        nodes = np.uint64(node_base) + np.arange(n, dtype=np.uint64)
        out = pa.table({KEY: batch.column(KEY), _NODE: nodes,
                        _SCORE: pa.array(_policy_values(batch, p), pa.float64())})
        empty = pa.array([[]] * n, pa.list_(pa.uint64()))
        tb, tp, vb, vp = empty, empty, empty, empty
        if p.mode in ("text", "both"):
            from dataprep.stages.dedup.shingles import shingle_hashes

            sh = shingle_hashes(batch.column(p.text_column).to_pylist(), ngram=p.ngram)
            sig = signatures(sh.hashes, sh.offsets, num_perm=p.num_perm, seed=p.seed)
            tb = _bands_column(band_keys(sig, *self.text_lsh, salt=1), has_signature(sig))
            tp = pa.ListArray.from_arrays(pa.array(sh.offsets.astype(np.int32)), pa.array(sh.hashes))
        if p.mode in ("visual", "both"):
            from dataprep.stages.dedup.phash import frames_window_hashes, hash_tokens

            wins = [frames_window_hashes(f) for f in batch.column("frames").to_pylist()]
            toks = [hash_tokens(w, bands=p.hash_bands) for w in wins]
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum([len(t) for t in toks], out=offsets[1:])
            flat = np.concatenate(toks) if n else np.zeros(0, dtype=np.uint64)
            sig = signatures(flat, offsets, num_perm=p.num_perm, seed=p.seed + 1)
            vb = _bands_column(band_keys(sig, *self.visual_lsh, salt=2), has_signature(sig))
            vp = pa.array([w.tolist() for w in wins], pa.list_(pa.uint64()))
        for name, col in ((_TBANDS, tb), (_TPAY, tp), (_VBANDS, vb), (_VPAY, vp)):
            out = out.append_column(name, col)
        return out

    # -- the whole stage ----------------------------------------------------------------
    def run(self, ds: Any, executor: Executor) -> Any:
        """Return every row of `ds` with `_reject`, `_duplicate_of` and `dup_cluster` set. Under the runner
        `ds` is `executor.read(segment)`, whose pieces are the segment's Parquet files."""
        from dataprep.stages.dedup import steps as S

        ex = executor
        p: MinHashDedupParams = self.params
        P = p.num_partitions
        missing = [c for c in self.reads if c not in ex.columns(ds)]
        if missing:
            raise ValueError(f"minhash_dedup (mode={p.mode}, keep={p.keep}) reads {missing}, which the rows do "
                             "not have; fix: add the stage that writes them (frame sampling for `frames`, probe "
                             "for width/height/duration) or change `mode`/`keep`")
        t0 = time.perf_counter()
        # Node ids are (piece index << 32 | row): decisions go back to the piece they came from, which
        # is read again at the end, so the rows themselves (frames) never move or wait in memory.
        pieces = ex.pieces(ds)
        if not pieces:
            return ds
        me = ex.put(self)
        # One handle per piece, in piece order: the lookup joins below hand piece i's features to the
        # task that holds the pairs or edges of its rows.
        feats = [ex.call(S.features_piece, piece, i, me) for i, piece in enumerate(pieces)]
        log.info("minhash_dedup: %d pieces, %d partitions, text LSH %s, visual LSH %s", len(pieces), P,
                 self.text_lsh if p.mode != "visual" else None, self.visual_lsh if p.mode != "text" else None)
        everything = ex.dataset(feats)
        t_feat = time.perf_counter()
        verify = S.make_verify(p)
        cands = ex.exchange(ex.map(everything, S.bucket_records), "bucket", S.candidates, p.max_bucket,
                            partitions=P)
        with_lo = join_pieces(ex, ex.map(cands, S.by_piece, "lo"), feats, S.attach, partitions=P)
        edges = join_pieces(ex, ex.map(with_lo, S.by_piece, "hi"), feats, S.verify_edges, verify,
                            partitions=P) if with_lo is not None else None
        n_directed = ex.count(edges) if edges is not None else 0
        t_cand = time.perf_counter()
        rounds = 0
        if n_directed:
            edges, rounds = connected_stars(ex, edges, partitions=P, max_rounds=p.max_rounds)
        log.info("minhash_dedup: %d verified edges; connected components converged in %d rounds",
                 n_directed // 2, rounds)
        t_cc = time.perf_counter()
        routed: dict[int, Any] = {}
        if n_directed:
            mem = join_pieces(ex, ex.map(edges, S.by_piece, "u"), feats, S.members, partitions=P)
            routed = ex.route(ex.exchange(mem, "root", S.decide, verify, partitions=P), S.PIECE, partitions=P)
        self.stats = {"pieces": len(pieces), "partitions": P, "verified_edges": n_directed // 2, "cc_rounds": rounds,
                      "seconds": {"features": round(t_feat - t0, 1), "candidates_verify": round(t_cand - t_feat, 1),
                                  "components": round(t_cc - t_cand, 1),
                                  "decide_route": round(time.perf_counter() - t_cc, 1)}}
        # Lazy: each piece is read again and annotated when the caller consumes it.
        return ex.map_pieces(S.annotate_piece, pieces, [(routed.get(i),) for i in range(len(pieces))])


def join_pieces(ex: Executor, data: Any, feats: list[Any], fn: Any, *args: Any, partitions: int) -> Any:
    """A lookup join on node ids: the rows of DATA go to the piece in their column PIECE (one route), and
    `fn(rows, feats[i], i, *args)` runs once per piece i that got rows, with piece i's features, where
    the node's attributes are its row. Returns the results as data, or None when no row was routed."""
    from dataprep.stages.dedup.steps import PIECE

    routed = ex.route(data, PIECE, partitions=partitions)
    if not routed:
        return None
    return ex.dataset([ex.call(fn, routed[i], feats[i], i, *args) for i in sorted(routed)])


def connected_stars(ex: Executor, edges: Any, *, partitions: int, max_rounds: int) -> tuple[Any, int]:
    """Alternate large-star and small-star exchanges (components.py) over EDGES (both orientations) until
    a round's output equals the previous round's: every node then points at the smallest node of its
    component. Returns the star edges and the rounds run."""
    from dataprep.stages.dedup.steps import star

    fingerprint, rounds = None, 0
    while rounds < max_rounds:
        rounds += 1
        for large in (True, False):
            edges = ex.exchange(edges, "u", star, large, partitions=partitions)
        edges = ex.materialize(edges)
        previous, fingerprint = fingerprint, _checksum(ex, edges)
        if fingerprint == previous:
            break
    return edges, rounds


def _checksum(ex: Executor, edges: Any) -> int:
    """The order-free checksum of materialized EDGES as a multiset."""
    from dataprep.stages.dedup.steps import edge_checksum

    return sum(int(x) for t in ex.collect(ex.map(edges, edge_checksum)) for x in t.column("checksum").to_pylist()) \
        % (1 << 64)


def _check_requirements(requires: dict[str, str]) -> None:
    """Fail at construction, naming the fix, when an optional dependency is missing."""
    import importlib.util

    missing = [req for mod, req in requires.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(f"minhash_dedup needs {', '.join(missing)}; fix: "
                          f"`pip install {' '.join(repr(m) for m in missing)}`")


def _optimal(threshold: float, num_perm: int, recall_weight: float) -> tuple[int, int]:
    from dataprep.stages.dedup.lsh import lsh_params

    return lsh_params(threshold, num_perm, fp_weight=1 - recall_weight, fn_weight=recall_weight)


def _bands_column(keys: np.ndarray, valid: np.ndarray):
    """list<uint64> column: a row's band keys, or an empty list when it has no signature."""
    import pyarrow as pa

    n, b = keys.shape
    lengths = np.where(valid, b, 0)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys[valid].ravel(), pa.uint64()))
