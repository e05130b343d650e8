"""Near-duplicate removal: MinHash signatures of captions and of frame hashes, LSH banding,
connected components on Ray. The stage is `stages.dedup.stage:MinHashDedup` (`minhash_dedup`)."""
