"""Near-duplicate removal: `dataprep.stages.dedup.stage:MinHashDedup`, registered as `minhash_dedup`.

Column contract (a `GlobalStage`: `run(ds, executor)` takes and returns a dataset):
- reads `key`, plus `caption` (mode text/both), `frames` (list<binary> JPEG thumbnails;
  mode visual/both) and the keep-policy column(s): `score_column`, `duration`, or
  `width` and `height` (none for keep=key, so `mode: text, keep: key` needs only the
  captions of a text-only dataset).
- returns every input row with all its columns, plus
  `_reject` = "duplicate" on rows to remove (null on kept rows; an earlier reason is kept),
  `_duplicate_of` = the key of the kept row it duplicates (null otherwise),
  `dup_cluster` = the key of the kept row of its cluster, on kept and removed members
  (null for rows in no cluster). No signature columns are left in the output.

Modules, one concept each (none imports Ray; `stage.MinHashDedup.run` ships `steps` to Ray):
shingles (caption -> word n-gram hashes), minhash (batch signatures), phash (frame
hashes -> token sets), lsh (bands x rows, band keys), candidates (bucket pairs and their
verification), components (large-star/small-star connected components), steps (the
per-partition work and an in-process run of the whole stage), stage (options, run).
"""
