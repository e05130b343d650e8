"""Text dedup accuracy on the 25,014 real COCO captions, against exact Jaccard.

Ground truth: every caption pair with exact Jaccard >= threshold + 0.1 on the shingle
sets (found exhaustively with a prefix-filter set-similarity join). Asserted: recall of
those pairs >= 0.95 (as LSH candidates and in the final clusters) and precision >= 0.95
with verification (verified edges, and removed rows against the row kept for them).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from dataprep.stages.dedup.shingles import shingle_hashes
from dataprep.stages.dedup.stage import MinHashDedup
from dataprep.stages.dedup import steps
from tests.stages.dedup.local import dedup_in_process

log = logging.getLogger(__name__)
THRESHOLD = 0.7
NGRAM = 2


def exact_pairs(sets: list[frozenset], t: float) -> dict[tuple[int, int], float]:
    """All pairs (i < j) with Jaccard >= t, exhaustively (prefix filtering: a pair with
    J >= t shares a token among the first |x| - ceil(t|x|) + 1 rarest tokens of each)."""
    freq: dict[int, int] = defaultdict(int)
    for s in sets:
        for tok in s:
            freq[tok] += 1
    index: dict[int, list[int]] = defaultdict(list)
    out = {}
    order = sorted(range(len(sets)), key=lambda i: len(sets[i]))
    for i in order:
        s = sets[i]
        if not s:
            continue
        toks = sorted(s, key=lambda x: (freq[x], x))
        prefix = toks[:len(toks) - math.ceil(t * len(toks)) + 1]
        seen = set()
        for tok in prefix:
            for j in index[tok]:
                if j in seen:
                    continue
                seen.add(j)
                inter = len(s & sets[j])
                jac = inter / (len(s) + len(sets[j]) - inter)
                if jac >= t:
                    out[(min(i, j), max(i, j))] = jac
        for tok in prefix:
            index[tok].append(i)
    return out


@pytest.fixture(scope="module")
def coco(shared_data):
    path = shared_data / "text" / "coco_captions_val2017.annotations.jsonl"
    caps = [json.loads(line)["caption"] for line in path.open(encoding="utf-8")]
    sh = shingle_hashes(caps, ngram=NGRAM)
    sets = [frozenset(sh.row(i).tolist()) for i in range(len(caps))]
    table = pa.table({"key": [f"c{i:05d}" for i in range(len(caps))], "caption": caps,
                      "width": np.full(len(caps), 640), "height": np.full(len(caps), 480)})
    return caps, sets, table


def _pairs(u, v, index):
    return {(min(index[a], index[b]), max(index[a], index[b])) for a, b in zip(u.tolist(), v.tolist(), strict=True)}


def test_text_recall_and_precision_against_exact_jaccard(coco):
    caps, sets, table = coco
    stage = MinHashDedup(MinHashDedup.Params(mode="text", threshold=THRESHOLD, ngram=NGRAM))
    feats = stage.features(table)
    node_index = {n: i for i, n in enumerate(feats.column("_dd_node").to_numpy().tolist())}
    pairs = steps.candidates(steps.bucket_records(feats), stage.params.max_bucket)
    cand = _pairs(pairs.column("lo").to_numpy(), pairs.column("hi").to_numpy(), node_index)
    # One piece (index 0): every node is a row of `feats`.
    with_lo = steps.attach(steps.by_piece(pairs, "lo"), feats, 0)
    edges = steps.verify_edges(steps.by_piece(with_lo, "hi"), feats, 0, steps.make_verify(stage.params))
    verified = _pairs(edges.column("u").to_numpy(), edges.column("v").to_numpy(), node_index)

    truth_hi = exact_pairs(sets, THRESHOLD + 0.1)
    truth = exact_pairs(sets, THRESHOLD)
    assert len(truth_hi) > 300  # COCO has hundreds of (near-)identical caption pairs

    def jac(i, j):
        return len(sets[i] & sets[j]) / len(sets[i] | sets[j])

    recall_cand = len(truth_hi.keys() & cand) / len(truth_hi)
    precision_raw = sum(jac(i, j) >= THRESHOLD for i, j in cand) / len(cand)
    precision_verified = sum(jac(i, j) >= THRESHOLD for i, j in verified) / max(len(verified), 1)
    recall_verified = len(truth.keys() & verified) / len(truth)

    out = dedup_in_process(stage, table, n_parts=4)
    cluster = out.column("dup_cluster").to_pylist()
    recall_final = sum(cluster[i] is not None and cluster[i] == cluster[j] for i, j in truth_hi) / len(truth_hi)
    keys = {k: i for i, k in enumerate(out.column("key").to_pylist())}
    removed = [(i, keys[k]) for i, k in enumerate(out.column("_duplicate_of").to_pylist()) if k is not None]
    precision_removed = sum(jac(i, j) >= THRESHOLD for i, j in removed) / len(removed)
    log.warning("text: %d captions; exact pairs J>=%.1f: %d, J>=%.1f: %d; candidates %d (recall %.4f, "
                "precision %.4f); verified %d (precision %.4f, recall of J>=%.1f %.4f); final recall %.4f; "
                "removed %d (precision vs kept %.4f)", len(caps), THRESHOLD + 0.1, len(truth_hi), THRESHOLD,
                len(truth), len(cand), recall_cand, precision_raw, len(verified), precision_verified, THRESHOLD,
                recall_verified, recall_final, len(removed), precision_removed)
    assert recall_cand >= 0.95
    assert recall_final >= 0.95
    # Pairs with Jaccard 0.7-0.8 sit on the slope of the LSH S-curve: a pair of Jaccard j becomes a candidate
    # with probability 1 - (1 - j^r)^b. The target is that expectation over the true pairs, less 4 standard
    # deviations of a sum of independent Bernoullis: what the banding promises, not a measured figure.
    bands, rows = stage.text_lsh
    chance = np.array([1 - (1 - jac(i, j) ** rows) ** bands for i, j in truth])
    promised = (chance.sum() - 4 * math.sqrt((chance * (1 - chance)).sum())) / len(truth)
    log.warning("text: recall of J>=%.1f pairs after verification %.4f; the banding (b=%d, r=%d) promises >= %.4f",
                THRESHOLD, recall_verified, bands, rows, promised)
    assert recall_verified >= promised
    assert precision_verified >= 0.95
    assert precision_removed >= 0.95
    assert out.num_rows == len(caps)
    assert sum(r == "duplicate" for r in out.column("_reject").to_pylist()) == len(removed)
