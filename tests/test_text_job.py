"""A text-only job: a jsonl of captions, no media, through `ingest -> minhash_dedup (mode: text)`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import webdataset as wds

pytestmark = pytest.mark.integration
DATAPREP = [sys.executable, "-m", "dataprep.cli"]

DISTINCT = [
    "a man riding a wave on top of a surfboard in the ocean",
    "a black honda motorcycle parked in front of a red garage door",
    "an office cubicle with four different types of computers on the desk",
    "two giraffes standing next to each other in a grassy field",
    "a plate of food with broccoli rice and grilled chicken on it",
    "a little girl holding a large red umbrella in the rain",
    "a train pulling into a station next to a crowded platform",
    "a cat sleeping on the keyboard of an open laptop computer",
    "a group of people flying kites on a windy beach at sunset",
    "a kitchen with white cabinets a steel fridge and a wooden table",
    "a baseball player swinging a bat at a pitch during a game",
    "a double decker bus driving down a busy city street",
    "an elephant walking through tall grass near a muddy river",
    "a bowl of oranges and bananas sitting on a marble counter",
    "a skateboarder doing a trick on a ramp in a concrete park",
    "a bathroom with a white toilet a sink and a large mirror",
    "three sheep grazing on a green hillside under a cloudy sky",
    "a woman cutting a birthday cake covered in lit candles",
    "a stop sign on a corner next to a tall brick building",
    "a dog catching a yellow frisbee in a park on a sunny day",
]
# (caption, index in DISTINCT it nearly repeats): case and punctuation, a word added, a word changed.
NEAR = [
    ("A man riding a wave on top of a surfboard in the ocean!", 0),
    ("a black honda motorcycle parked in front of a red garage door today", 1),
    ("an office cubicle with four different types of computers on the table", 2),
    ("An office cubicle, with four different types of computers on the desk.", 2),
    ("two giraffes standing next to each other in a grassy field", 3),
    ("a plate of food with broccoli rice and grilled chicken on it .", 4),
    ("a little girl holding a large red umbrella in the rain outside", 5),
    ("a train pulling into a station next to a crowded platform", 6),
]
# A paraphrase with few words in common is a different caption at threshold 0.7, not a duplicate.
PARAPHRASE = "someone surfs the ocean standing on a board over a big wave"


@pytest.fixture(scope="module")
def text_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_job")
    lines = [{"caption": c} for c in DISTINCT] + [{"caption": c} for c, _ in NEAR]
    lines += [{"caption": PARAPHRASE}, {"caption": ""}]  # the empty one has no text: a ledger row, not a sample
    manifest = root / "captions.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = root / "job.yaml"
    config.write_text(textwrap.dedent(f"""
        input: {manifest}
        output: {root / "out"}
        stages:
          - stage: ingest
          - stage: minhash_dedup
            mode: text
            keep: key      # text rows have no sizes: of a group keep the smallest key
        sink: {{max_samples: 8}}
    """))
    subprocess.run([*DATAPREP, "run", str(config), "-q"], check=True, cwd=root, timeout=600)
    out = root / "out"
    return manifest, lines, pq.read_table(out / "manifest.parquet").to_pylist(), \
        pq.read_table(out / "rejects.parquet").to_pylist(), sorted((out / "shards").glob("**/*.tar"))


def _row(source: str) -> int:
    """0-based index into the written lines of a text row's source `MANIFEST#ROW` (rows count from 1)."""
    return int(source.rsplit("#", 1)[1]) - 1


def test_every_caption_ends_once_in_a_shard_or_the_ledger(text_job):
    manifest, lines, kept, rejects, _ = text_job
    sources = [r["source"] for r in kept] + [r["source"] for r in rejects]
    assert sorted(sources) == sorted(f"{manifest}#{n}" for n in range(1, len(lines) + 1))
    assert len({r["key"] for r in kept} | {r["key"] for r in rejects}) == len(lines)
    (empty,) = [r for r in rejects if r["stage"] == "ingest"]
    assert empty["reason"] == f"input:no_text: row {len(lines)} of captions.jsonl has no 'caption'"


def test_near_duplicates_are_in_the_ledger_with_the_row_they_repeat(text_job):
    _, lines, kept, rejects, _ = text_job
    group = {i: i for i in range(len(DISTINCT))}
    group.update({len(DISTINCT) + j: base for j, (_, base) in enumerate(NEAR)})
    group[len(DISTINCT) + len(NEAR)] = -1  # the paraphrase is alone
    kept_key = {_row(r["source"]): r["key"] for r in kept}
    dups = [r for r in rejects if r["stage"] == "minhash_dedup"]
    assert all(r["reason"] == "duplicate" for r in dups)
    # One caption of each group survives; every other one names the survivor of its own group.
    assert sorted(group[i] for i in kept_key) == sorted(set(group.values()))
    assert len(dups) == len(NEAR)
    survivor = {group[i]: key for i, key in kept_key.items()}
    for r in dups:
        assert r["duplicate_of"] == survivor[group[_row(r["source"])]], lines[_row(r["source"])]


def test_kept_samples_are_a_caption_and_its_metadata(text_job):
    _, lines, kept, _, shards = text_job
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(r["key"] for r in kept)
    for sample in samples:
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"txt", "json"}
        meta = json.loads(sample["json"])
        assert meta["media_type"] == "text"
        assert sample["txt"].decode("utf-8") == lines[_row(meta["source"])]["caption"]
