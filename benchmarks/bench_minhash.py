"""Caption -> MinHash signature throughput, single core, against datasketch and rensa.

    .venv/bin/python benchmarks/bench_minhash.py --quick

Every contender starts from the raw caption strings and does the same normalization
and word n-gram shingling (`dataprep.stages.dedup.shingles.normalize`); the batch kernel
(`dataprep.stages.dedup`) shingles and hashes whole batches in numpy. Each contender is timed
for `--repeats` passes over the captions and its best pass is reported.

A second comparison times MinHash alone, on input shingled beforehand (outside the
timing): the kernel gets each batch's 64-bit shingle hashes, rensa each caption's
shingle strings (it takes no hashed input, so hashing the strings stays in its time).
In the first comparison most of rensa's time is Python shingling.

The last line is `vs_datasketch_bulk=X vs_rensa=Y minhash_only_vs_rensa=Z` (our throughput over theirs).
"""

from __future__ import annotations

import os

# Single core, honestly: no BLAS/OpenMP threads anywhere (set before numpy loads).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataprep.stages.dedup.minhash import signatures  # noqa: E402
from dataprep.stages.dedup.shingles import normalize, shingle_hashes  # noqa: E402

DEFAULT_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / \
    "coco_captions_val2017.annotations.jsonl"


def word_shingles(text: str | None, ngram: int) -> list[str]:
    """The same shingles the kernel hashes, as strings, for the per-caption libraries."""
    words = normalize(text).split()
    if not words:
        return []
    if len(words) < ngram:
        return [" ".join(words)]
    return [" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]


def run_ours(captions: list[str], num_perm: int, ngram: int, batch: int) -> None:
    for i in range(0, len(captions), batch):
        sh = shingle_hashes(captions[i:i + batch], ngram=ngram)
        signatures(sh.hashes, sh.offsets, num_perm=num_perm, seed=1)


def time_minhash_only(captions: list[str], num_perm: int, ngram: int, batch: int, repeats: int) -> dict[str, float]:
    """Captions/s of the MinHash step alone, for the kernel and rensa, on pre-shingled input."""
    from rensa import RMinHash

    batches = [shingle_hashes(captions[i:i + batch], ngram=ngram) for i in range(0, len(captions), batch)]
    strings = [word_shingles(c, ngram) for c in captions]

    def ours() -> None:
        for sh in batches:
            signatures(sh.hashes, sh.offsets, num_perm=num_perm, seed=1)

    def rensa() -> None:
        for shingles in strings:
            m = RMinHash(num_perm=num_perm, seed=1)
            m.update(shingles)
            m.digest()

    return {"dataprep_minhash_only": best_rate(ours, len(captions), repeats),
            "rensa_minhash_only": best_rate(rensa, len(captions), repeats)}


def run_datasketch_update(captions: list[str], num_perm: int, ngram: int) -> None:
    from datasketch import MinHash

    for c in captions:
        m = MinHash(num_perm=num_perm, seed=1)
        for s in word_shingles(c, ngram):
            m.update(s.encode("utf-8"))
        m.digest()


def run_datasketch_bulk(captions: list[str], num_perm: int, ngram: int) -> None:
    from datasketch import MinHash

    docs = [[s.encode("utf-8") for s in word_shingles(c, ngram)] for c in captions]
    for m in MinHash.bulk(docs, num_perm=num_perm, seed=1):
        m.digest()


def run_rensa(captions: list[str], num_perm: int, ngram: int) -> None:
    from rensa import RMinHash

    for c in captions:
        m = RMinHash(num_perm=num_perm, seed=1)
        m.update(word_shingles(c, ngram))
        m.digest()


def best_rate(fn, n_items: int, repeats: int) -> float:
    """Items per second of the fastest of `repeats` passes."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=Path, default=DEFAULT_CAPTIONS, help="jsonl with a `caption` field")
    ap.add_argument("--quick", action="store_true", help="5,000 captions, 3 passes: under a minute")
    ap.add_argument("--limit", type=int, default=0, help="captions to use (0: all)")
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096, help="captions per kernel call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not args.captions.is_file():
        sys.exit(f"captions not found at {args.captions}; pass --captions PATH")
    captions = [json.loads(line)["caption"] for line in args.captions.open(encoding="utf-8")]
    limit = args.limit or (5000 if args.quick else 0)
    if limit:
        captions = captions[:limit]
    n = len(captions)
    p, k = args.num_perm, args.ngram
    print(f"{n} COCO captions, num_perm={p}, word {k}-grams, single core, best of {args.repeats}")
    # Warm caches (word hash cache, imports) once for every contender alike.
    run_ours(captions[:200], p, k, args.batch)
    run_rensa(captions[:200], p, k)
    run_datasketch_bulk(captions[:200], p, k)
    rates = {
        "dataprep_batch": best_rate(lambda: run_ours(captions, p, k, args.batch), n, args.repeats),
        "rensa_RMinHash": best_rate(lambda: run_rensa(captions, p, k), n, args.repeats),
        "datasketch_bulk": best_rate(lambda: run_datasketch_bulk(captions, p, k), n, args.repeats),
        "datasketch_update": best_rate(lambda: run_datasketch_update(captions, p, k), n,
                                       1 if args.quick else args.repeats),
    }
    rates.update(time_minhash_only(captions, p, k, args.batch, args.repeats))
    for name, rate in rates.items():
        print(f"{name:>22}: {rate:12,.0f} captions/s")
    ours = rates["dataprep_batch"]
    only = rates["dataprep_minhash_only"] / rates["rensa_minhash_only"]
    print(f"vs_datasketch_bulk={ours / rates['datasketch_bulk']:.2f} vs_rensa={ours / rates['rensa_RMinHash']:.2f} "
          f"minhash_only_vs_rensa={only:.2f}")


if __name__ == "__main__":
    main()
