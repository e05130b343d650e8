"""Every shipped config validates, and the t2v and t2i jobs run offline on the sample set."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dataprep.config import load_config
from dataprep.errors import ConfigError
from dataprep.plan import build_plan

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_validates(config, tmp_path, tiny_models):
    plan = build_plan(load_config(config, input=str(tmp_path), output=str(tmp_path / "out")), tiny_models=tiny_models)
    assert plan.all_stages[0].name == "ingest"


def test_configs_name_real_models_and_offline_they_fail_before_work(tmp_path):
    """Offline, a config whose checkpoints are not on this machine fails at plan time, naming them."""
    named = 0
    for config in CONFIGS:
        try:
            build_plan(load_config(config, input=str(tmp_path), output=str(tmp_path / "out")))
        except ConfigError as exc:
            message = str(exc)
            assert "--tiny-models" in message and "not in the local cache" in message, message
            named += 1
    assert named >= 2  # t2v and t2i at least name real checkpoints


def _outcome(out: Path) -> tuple[dict, dict]:
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    rejects = {r["key"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    return manifest, rejects


def _duplicate_pair_caught(a: str, b: str, manifest: dict, rejects: dict) -> bool:
    """Two near-copies (by source file stem) ended in one duplicate group: one removed in favour of
    the other, or both in favour of a third row they both match."""
    stem = {k: Path(r["source"]).stem for k, r in {**manifest, **rejects}.items()}
    kept_for = {}
    for r in rejects.values():
        if r["reason"] == "duplicate":
            kept_for[stem[r["key"]]] = stem[r["duplicate_of"]]
    return kept_for.get(a) == b or kept_for.get(b) == a or (a in kept_for and kept_for.get(a) == kept_for.get(b))


@pytest.mark.integration
@pytest.mark.slow
def test_t2i_drops_near_duplicate_images(config_output):
    manifest, rejects = _outcome(config_output("t2i"))
    assert _duplicate_pair_caught("img_mandelbrot", "dup_img_mandelbrot_small", manifest, rejects)
    assert _duplicate_pair_caught("img_testsrc", "dup_img_testsrc_reencoded", manifest, rejects)
    # The sample's flat synthetic stills (solid colours, smooth gradients) go to blur and exposure; its
    # textured images stay.
    assert sum(r["media_type"] == "image" for r in manifest.values()) >= 6
    assert {r["reason"].split(":")[0] for r in rejects.values()} <= {
        "input", "error", "size", "exposure", "blur", "duplicate", "semantic_dup"}


@pytest.mark.integration
@pytest.mark.slow
def test_t2v_clips_and_drops_reencoded_copies(config_output):
    out = config_output("t2v")
    manifest, rejects = _outcome(out)
    clips = [r for r in manifest.values() if r["media_type"] == "video"]
    # Flat synthetic clips go to blur and motion (a still encoded as video); the moving textured ones stay.
    assert len(clips) >= 4
    assert {r["fps"] for r in clips} == {24.0}
    assert {r["bucket"] for r in clips} <= {"640x360", "360x640", "480x480", "544x408"}
    assert _duplicate_pair_caught("testsrc_landscape", "dup_testsrc_reencoded", manifest, rejects)
    reasons = {r["reason"].split(" ")[0] for r in rejects.values()}
    assert "error:InvalidDataError:" in reasons or any(x.startswith("error:") for x in reasons)
    # Train-ready: every kept clip has its latent and text embedding, in a folder of one shape, and the
    # README's loader streams them.
    from dataprep.loader import make_loader

    assert all(r["latent_shape"] and r["caption_vlm"] is not None for r in clips)
    loader = make_loader(str(out), batch_size=4, num_workers=0, shuffle=0,
                         arrays=("latent", "t5_embedding_vlm"), masks={"t5_embedding_vlm": "t5_tokens_vlm"})
    seen = 0
    for batch in loader:
        assert str(batch["latent"].dtype) == "torch.float16" and batch["latent"].ndim == 5
        assert len({m["latent_shape"] for m in batch["meta"]}) == 1
        assert batch["t5_embedding_vlm_mask"].sum(dim=1).tolist() == [m["t5_tokens_vlm"] for m in batch["meta"]]
        seen += len(batch["key"])
    assert seen == len(clips)
