"""clip_embed: one unit-length float32 embedding per row, the normalized mean over its thumbnails,
computed with a tiny random CLIP that loads exactly like a real local checkpoint."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dataprep import columns
from dataprep.stages.models.clip import EMBEDDING, TINY_EMBED_DIM, ClipEmbed, ClipModel
from dataprep.stages.models.load import build_tiny, load_model

COLOURS = [(220, 30, 30), (30, 200, 40), (20, 40, 230), (240, 240, 20)]


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG thumbnail: a colour field with a white square, so frames differ in more than their mean."""
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (8, 8, 24, 24))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def frames_table(rows: list[list[bytes] | None]) -> pa.Table:
    return pa.table({columns.KEY: [f"k{i}" for i in range(len(rows))],
                     "frames": pa.array(rows, pa.list_(pa.binary()))})


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return build_tiny("open_clip", "timm/vit_large_patch14_clip_224.openai", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def stage(tiny_clip) -> ClipEmbed:
    stage = ClipEmbed(model=tiny_clip, device="cpu")
    stage.setup()
    return stage


def embeddings(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column(EMBEDDING).to_pylist(), np.float32)


def test_tiny_clip_is_a_real_open_clip_folder_loaded_by_path(tiny_clip):
    folder = Path(tiny_clip)
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == TINY_EMBED_DIM
    assert (folder / "open_clip_model.safetensors").is_file()
    model = load_model("open_clip", tiny_clip)
    assert isinstance(model, ClipModel) and model.dim == TINY_EMBED_DIM


def test_embedding_is_one_unit_float32_vector_per_row(stage):
    out = stage.process_batch(frames_table([[jpeg(COLOURS[0])], [jpeg(COLOURS[1]), jpeg(COLOURS[2])]]))
    assert out.schema.field(EMBEDDING).type == pa.list_(pa.float32(), TINY_EMBED_DIM)
    x = embeddings(out)
    assert x.shape == (2, TINY_EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert columns.REJECT not in out.column_names or out.column(columns.REJECT).null_count == 2


def test_video_embedding_is_the_normalized_mean_of_its_frame_embeddings(stage):
    thumbs = [jpeg(c) for c in COLOURS[:3]]
    frame_vectors = embeddings(stage.process_batch(frames_table([[t] for t in thumbs])))
    video = embeddings(stage.process_batch(frames_table([thumbs])))[0]
    mean = frame_vectors.mean(axis=0)
    np.testing.assert_allclose(video, mean / np.linalg.norm(mean), atol=1e-5)
    assert not np.allclose(video, frame_vectors[0], atol=1e-3)  # not just the first frame


def test_embeddings_are_deterministic_across_loads(tiny_clip, stage):
    again = ClipEmbed(model=tiny_clip, device="cpu")
    again.setup()
    table = frames_table([[jpeg(COLOURS[0]), jpeg(COLOURS[3])]])
    np.testing.assert_array_equal(embeddings(stage.process_batch(table)), embeddings(again.process_batch(table)))


def test_a_batch_embeds_each_row_as_alone(stage):
    rows = [[jpeg(COLOURS[0])], [jpeg(COLOURS[1]), jpeg(COLOURS[2]), jpeg(COLOURS[3])], [jpeg(COLOURS[2])]]
    batched = embeddings(stage.process_batch(frames_table(rows)))
    alone = np.concatenate([embeddings(stage.process_batch(frames_table([r]))) for r in rows])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_low_precision_gives_the_same_unit_float32_embeddings(tiny_clip, stage):
    half = ClipEmbed(model=tiny_clip, device="cpu", dtype="bfloat16")  # what dtype auto picks on most GPUs
    half.setup()
    table = frames_table([[jpeg(c)] for c in COLOURS])
    low, full = embeddings(half.process_batch(table)), embeddings(stage.process_batch(table))
    np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)
    assert ((low * full).sum(axis=1) > 0.999).all()


def test_undecodable_frame_rejects_its_row_only(stage):
    good = [jpeg(COLOURS[1])]
    out = stage.process_batch(frames_table([good, [jpeg(COLOURS[0]), b"not a jpeg"], None, good]))
    reasons = out.column(columns.REJECT).to_pylist()
    assert reasons[0] is None and reasons[3] is None
    assert reasons[1].startswith("clip:bad_frames: frames[1]: not a decodable image")
    assert reasons[2].startswith("clip:bad_frames: ") and "run frame_sample" in reasons[2]
    values = out.column(EMBEDDING).to_pylist()
    assert values[1] is None and values[2] is None
    np.testing.assert_allclose(values[0], values[3], atol=1e-6)


def test_preflight_names_a_missing_model_path_and_the_fix(tmp_path):
    missing = str(tmp_path / "no-such-clip")
    problems = ClipEmbed(model=missing).preflight()
    assert len(problems) == 1 and "`model`" in problems[0] and missing in problems[0] and "fix:" in problems[0]


def test_preflight_offline_hub_name_not_in_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A dot in a repo name ("timm/vit_large_patch14_clip_224.openai") does not make it a file path.
    problems = ClipEmbed(model="hf-hub:dataprep-tests/no-such-clip_224.openai").preflight()
    assert len(problems) == 1 and "'dataprep-tests/no-such-clip_224.openai'" in problems[0]
    assert "not in the local cache and HF_HUB_OFFLINE=1" in problems[0]


def test_open_clip_prefixes_are_dropped():
    assert ClipEmbed(model="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").params.model == \
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert ClipEmbed(model="local-dir:/models/clip").params.model == "/models/clip"


def test_tiny_params_swap_the_model_for_a_tiny_folder(tmp_path):
    params = ClipEmbed(model="laion/CLIP-ViT-B-32-laion2B-s34B-b79K").tiny_params(str(tmp_path))
    assert Path(params.model).parent == tmp_path and (Path(params.model) / "open_clip_config.json").is_file()


@pytest.mark.integration
@pytest.mark.slow
def test_job_writes_embeddings_to_shards_and_scores_to_manifest_and_ledger(ray_session, tmp_path, tiny_clip):
    """frame_sample -> clip_embed -> aesthetic_filter -> clip_similarity_filter through the real runner."""
    import torch
    import webdataset as wds

    from dataprep.config import parse_config
    from dataprep.plan import build_plan
    from dataprep.registry import Registry
    from dataprep.runner import run_plan
    from tests.helpers import read_ledger

    src = tmp_path / "in"
    src.mkdir()
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (96, 80), colour).save(src / f"img{i}.png")
    for i in (0, 1):  # two captioned images; img2 and img3 have no caption
        (src / f"img{i}.txt").write_text(f"a photo number {i}")
    # A head whose score is 5.0 for every embedding: all rows pass min_score 4.5 with a known score.
    head = tmp_path / "const_head.pth"
    torch.save({"weight": torch.zeros(1, TINY_EMBED_DIM), "bias": torch.tensor([5.0])}, head)
    out = tmp_path / "out"
    config = parse_config({
        "input": str(src), "output": str(out),
        "stages": [
            {"stage": "ingest"},
            {"stage": "frame_sample"},
            {"stage": "clip_embed", "model": tiny_clip, "device": "cpu"},
            {"stage": "aesthetic_filter", "head": str(head), "min_score": 4.5},
            # A cosine is at most 1: every captioned row is dropped, so its score must reach the ledger.
            {"stage": "clip_similarity_filter", "model": tiny_clip, "device": "cpu", "min_similarity": 1.0},
        ],
    })
    plan = build_plan(config, Registry(["dataprep.stages.models.clip", "dataprep.stages.models.heads",
                                        "dataprep.stages.models.clip_similarity"]))
    run_plan(plan, progress=False)

    manifest = {Path(r["source"]).stem: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert set(manifest) == {"img2", "img3"}
    assert all(r["aesthetic_score"] == 5.0 and r["clip_similarity"] is None for r in manifest.values())
    ledger = {Path(r["source"]).stem: r for r in read_ledger(out)}
    assert set(ledger) == {"img0", "img1"}
    for row in ledger.values():
        assert row["stage"] == "clip_similarity_filter" and row["reason"].startswith("clip_similarity:low: cosine ")
        assert -1.0 <= json.loads(row["scores"])["clip_similarity"] < 1.0

    stage = ClipEmbed(model=tiny_clip, device="cpu")
    stage.setup()
    tars = sorted(str(tar) for tar in (out / "shards").rglob("*.tar"))
    samples = [s for tar in tars for s in wds.WebDataset(tar, shardshuffle=False)]
    assert len(samples) == 2
    for sample in samples:
        stored = np.load(io.BytesIO(sample["clip_embedding.npy"]))
        assert stored.dtype == np.float32 and stored.shape == (TINY_EMBED_DIM,)
        # The stored vector is clip_embed's output for the sample's own thumbnail.
        again = embeddings(stage.process_batch(frames_table([[sample["frames.0.jpg"]]])))[0]
        np.testing.assert_allclose(stored, again, atol=1e-5)


def test_embedding_matrix_reads_sliced_arrays_with_nulls():
    import numpy as np
    import pyarrow as pa

    from dataprep.stages.models.clip import embedding_matrix

    rows = [[1.0, 2.0], None, [3.0, 4.0], [5.0, 6.0]]
    column = pa.array(rows, pa.list_(pa.float32(), 2)).slice(1)  # an offset, as a batch of a larger block has
    matrix, present = embedding_matrix(pa.table({"clip_embedding": column}))
    assert present == [False, True, True]
    np.testing.assert_array_equal(matrix, np.array([[0, 0], [3, 4], [5, 6]], np.float32))
