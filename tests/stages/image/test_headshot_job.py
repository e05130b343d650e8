"""configs/headshot.yaml and configs/headshot_prior.yaml end to end on Ray, with tiny models.

The instance job gets four real portraits (one with a sidecar caption), a group photo, a
re-encoded copy of one portrait (a selfie sent twice) and a blurred copy of another; the prior
job gets two other portraits of people. Targets from the issue: the group photo, the blurred photo
and the duplicate are rejected with their reasons; the rest become 512 px crops captioned from the
template, one flipped copy each, all with latents, counted in the summary's funnel.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from dataprep.config import load_config
from dataprep.plan import build_plan
from dataprep.runner import run_plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PORTRAITS = ["deepface_img6.jpg", "deepface_img9.jpg", "face_recognition_obama.jpg",
             "dlib_Tom_Cruise_avp_2014_4.jpg"]
GROUP = "face_recognition_two_people.jpg"


def _run(config: str, src: Path, out: Path, tiny_models: str) -> tuple[dict, dict, dict]:
    plan = build_plan(load_config(CONFIGS / config, input=str(src), output=str(out)), tiny_models=tiny_models)
    run_plan(plan, progress=False)
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    rejects = {r["key"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    summary = json.loads((out / "summary.json").read_text())
    return manifest, rejects, {f["stage"]: f for f in summary["funnel"]}


def _samples(out: Path) -> dict[str, dict]:
    import webdataset as wds

    samples = {}
    for tar in sorted((out / "shards").rglob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            samples[sample["__key__"]] = sample
    return samples


def test_headshot_jobs_crop_filter_caption_augment_and_encode(ray_session, shared_data, tmp_path, tiny_models):
    images, src, prior_src = shared_data / "images", tmp_path / "alice", tmp_path / "people"
    src.mkdir()
    prior_src.mkdir()
    for name in [*PORTRAITS, GROUP]:
        (src / name).write_bytes((images / name).read_bytes())
    (src / "deepface_img9.txt").write_text("me at the premiere")
    selfie = Image.open(images / "deepface_img6.jpg")
    selfie.resize((selfie.width * 4 // 5, selfie.height * 4 // 5)).save(src / "img6_sent_again.jpg", quality=70)
    # Defocus of 8 px on a 626 px wide photo: 3 px at the 256 px thumbnail the blur filter reads.
    soft = Image.open(images / "face_recognition_obama2.jpg").filter(ImageFilter.GaussianBlur(8))
    soft.save(src / "obama2_out_of_focus.jpg", quality=95)
    for name in ("deepface_img2.jpg", "face_recognition_biden.jpg"):
        (prior_src / name).write_bytes((images / name).read_bytes())

    manifest, rejects, funnel = _run("headshot.yaml", src, tmp_path / "instance", tiny_models)

    stem = {k: Path(r["source"]).stem for k, r in {**manifest, **rejects}.items()}
    reasons = {stem[k]: r["reason"] for k, r in rejects.items()}
    print("rejects:", reasons)
    print("funnel:", {s: (f["in"], f["out"], f["reasons"]) for s, f in funnel.items()})
    assert reasons["face_recognition_two_people"].startswith("face_crop:several_faces: 2 faces")
    assert reasons["obama2_out_of_focus"].startswith("blur:too_blurry: ")
    assert reasons["img6_sent_again"] == "duplicate"
    # The copy with more photo pixels in its crop stays (the duplicate names the input row, before augment).
    (copy,) = [r for r in rejects.values() if stem[r["key"]] == "img6_sent_again"]
    assert copy["duplicate_of"] in {r["parent_key"] for r in manifest.values() if stem[r["key"]] == "deepface_img6"}
    assert len(rejects) == 3
    # The funnel: 7 photos in, 4 after cropping, filtering and dedup, 8 samples after one flip each.
    assert (funnel["ingest"]["out"], funnel["face_crop"]["out"], funnel["blur_filter"]["out"]) == (7, 6, 5)
    assert (funnel["minhash_dedup"]["out"], funnel["augment"]["in"], funnel["augment"]["out"]) == (4, 4, 8)
    assert funnel["vae_latents"]["out"] == len(manifest) == 8

    samples = _samples(tmp_path / "instance")
    assert set(samples) == set(manifest)
    for key, sample in samples.items():
        row = manifest[key]
        assert Image.open(io.BytesIO(sample["jpg"])).size == (512, 512)
        assert sample["txt"].decode() == "a photo of sks person"
        latent = np.load(io.BytesIO(sample["latent.npy"]))
        assert latent.dtype == np.float16 and latent.shape == (4, 64, 64)  # the tiny VAE: 4 channels, 8x smaller
        assert key == f"{row['parent_key']}_c000{0 if row['augmentation'] == 'none' else 1}"
        assert ("caption_original.txt" in sample) == (stem[key] == "deepface_img9")
    assert sorted(r["augmentation"] for r in manifest.values()) == ["flip"] * 4 + ["none"] * 4

    prior, prior_rejects, prior_funnel = _run("headshot_prior.yaml", prior_src, tmp_path / "prior", tiny_models)
    assert not prior_rejects and prior_funnel["vae_latents"]["out"] == len(prior) == 2
    prior_samples = _samples(tmp_path / "prior")
    assert {s["txt"].decode() for s in prior_samples.values()} == {"a photo of a person"}
    assert all(np.load(io.BytesIO(s["latent.npy"])).shape == (4, 64, 64) for s in prior_samples.values())
