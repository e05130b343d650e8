"""aesthetic_filter and watermark_filter: heads in LAION's state-dict format run on `clip_embedding`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dataprep import columns
from dataprep.stages.models.clip import EMBEDDING, TINY_EMBED_DIM, EmbeddingMismatchError
from dataprep.stages.models.heads import AestheticFilter, HeadFormatError, WatermarkFilter
from dataprep.stages.models.load import build_tiny, load_model


class LaionMLP(nn.Module):
    """The improved-aesthetic-predictor's MLP, as its repository defines it (inference needs no Lightning)."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embedding_table(x: np.ndarray | list, width: int | None = None) -> pa.Table:
    rows = [None if v is None else list(map(float, v)) for v in x]
    width = width or next(len(v) for v in rows if v is not None)
    return pa.table({columns.KEY: [f"k{i}" for i in range(len(rows))],
                     EMBEDDING: pa.array(rows, pa.list_(pa.float32(), width))})


def linear_head(path, weight: list[float], bias: float) -> str:
    """A one-layer probe: score = weight . x + bias."""
    torch.save({"weight": torch.tensor([weight]), "bias": torch.tensor([bias])}, path)
    return str(path)


def run(stage, table: pa.Table) -> tuple[list, list]:
    stage.setup()
    out = stage.process_batch(table)
    return out.column(stage.writes[0]).to_pylist(), stage.reasons(out)


@pytest.fixture(scope="module")
def laion_768(tmp_path_factory) -> tuple[str, LaionMLP]:
    torch.manual_seed(0)
    mlp = LaionMLP(768).eval()
    path = tmp_path_factory.mktemp("heads") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(mlp.state_dict(), path)
    return str(path), mlp


def test_laion_aesthetic_state_dict_runs_as_its_mlp(laion_768):
    path, mlp = laion_768
    head = load_model("head", path)
    assert (head.in_dim, head.out_dim) == (768, 1)
    x = unit_rows(5, 768)
    with torch.no_grad():
        want = mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(head(x), want, rtol=1e-4, atol=1e-5)


def test_input_width_comes_from_the_state_dict(tmp_path):
    torch.manual_seed(1)
    mlp = LaionMLP(512).eval()
    save_file(mlp.state_dict(), str(tmp_path / "b32.safetensors"))
    head = load_model("head", str(tmp_path / "b32.safetensors"))
    x = unit_rows(3, 512)
    with torch.no_grad():
        np.testing.assert_allclose(head(x), mlp(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_aesthetic_scores_every_row_and_drops_below_min_score(tmp_path):
    head = linear_head(tmp_path / "h.pth", [3.0, 0.0], 5.0)  # score = 5 + 3 x0
    scores, reasons = run(AestheticFilter(head=head), embedding_table([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
    assert scores == [8.0, 2.0, 5.0]
    assert reasons == [None, "aesthetic:low_score: 2.00 < 4.5", None]
    assert AestheticFilter.score_columns() == ("aesthetic_score",)


def test_min_score_none_only_scores(tmp_path):
    head = linear_head(tmp_path / "h.pth", [3.0, 0.0], 5.0)
    _, reasons = run(AestheticFilter(head=head, min_score=None), embedding_table([[-1.0, 0.0]]))
    assert reasons == [None]


def test_row_without_embedding_is_rejected_with_the_fix(tmp_path):
    head = linear_head(tmp_path / "h.pth", [1.0, 0.0], 5.0)
    scores, reasons = run(AestheticFilter(head=head), embedding_table([[1.0, 0.0], None]))
    assert scores[1] is None and reasons[0] is None
    assert reasons[1].startswith("aesthetic:no_embedding: ") and "clip_embed" in reasons[1]
    _, reasons = run(AestheticFilter(head=head), embedding_table([None, None], width=2))
    assert [r.split(":")[1] for r in reasons] == ["no_embedding", "no_embedding"]  # not a width mismatch


def test_head_width_mismatch_is_a_fatal_error_naming_both_widths(laion_768):
    stage = AestheticFilter(head=laion_768[0])
    stage.setup()
    with pytest.raises(EmbeddingMismatchError) as info:
        stage.process_batch(embedding_table(unit_rows(2, 512)))
    assert "512-d" in str(info.value) and "768-d" in str(info.value) and "fix:" in str(info.value)
    assert stage.is_fatal(info.value)  # the job stops instead of rejecting every row


def test_preflight_names_a_missing_head(tmp_path):
    missing = str(tmp_path / "nope.pth")
    problems = AestheticFilter(head=missing).preflight()
    assert len(problems) == 1 and "`head`" in problems[0] and missing in problems[0] and "fix:" in problems[0]


def test_preflight_rejects_a_head_with_the_wrong_output_width(tmp_path):
    torch.save({"weight": torch.zeros(3, 8), "bias": torch.zeros(3)}, tmp_path / "three.pth")
    problems = AestheticFilter(head=str(tmp_path / "three.pth")).preflight()
    assert len(problems) == 1 and "3 outputs" in problems[0]


def test_layers_that_do_not_chain_are_refused(tmp_path):
    torch.save({"0.weight": torch.zeros(4, 8), "1.weight": torch.zeros(1, 5)}, tmp_path / "bad.pth")
    with pytest.raises(HeadFormatError, match="do not chain"):
        load_model("head", str(tmp_path / "bad.pth"))


def test_folder_with_one_weights_file_loads_and_with_two_is_refused(tmp_path):
    linear_head(tmp_path / "a.pth", [1.0], 0.0)
    assert load_model("head", str(tmp_path)).in_dim == 1
    linear_head(tmp_path / "b.pth", [1.0], 0.0)
    with pytest.raises(HeadFormatError, match="2 weight files"):
        load_model("head", str(tmp_path))


def test_watermark_sigmoid_head_drops_above_max_prob(tmp_path):
    head = linear_head(tmp_path / "w.pth", [4.0, 0.0], 0.0)  # logit 4 x0
    probs, reasons = run(WatermarkFilter(head=head), embedding_table([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(probs, [1 / (1 + np.exp(-4)), 1 / (1 + np.exp(4)), 0.5], rtol=1e-6)
    assert reasons == ["watermark:likely: probability 0.98 > 0.8", None, None]


def test_watermark_two_class_mlp_with_relu_matches_torch(tmp_path):
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(TINY_EMBED_DIM, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)).eval()
    torch.save(mlp.state_dict(), tmp_path / "wm2.pth")
    x = unit_rows(6, TINY_EMBED_DIM, seed=3)
    with torch.no_grad():
        want = torch.softmax(mlp(torch.from_numpy(x)), dim=1).numpy()
    probs, _ = run(WatermarkFilter(head=str(tmp_path / "wm2.pth")), embedding_table(x))
    np.testing.assert_allclose(probs, want[:, 0], rtol=1e-5)
    probs, _ = run(WatermarkFilter(head=str(tmp_path / "wm2.pth"), watermark_class=1), embedding_table(x))
    np.testing.assert_allclose(probs, want[:, 1], rtol=1e-5)


def test_tiny_head_reads_tiny_clip_embeddings_and_drops_nothing(tmp_path):
    params = AestheticFilter().tiny_params(str(tmp_path))
    assert params.min_score is None
    head = load_model("head", params.head)
    assert (head.in_dim, head.out_dim) == (TINY_EMBED_DIM, 1)
    stage = AestheticFilter(params)
    scores, reasons = run(stage, embedding_table(unit_rows(4, TINY_EMBED_DIM)))
    assert all(isinstance(s, float) for s in scores) and reasons == [None] * 4
    assert WatermarkFilter(head="x.pth").tiny_params(str(tmp_path)).max_prob is None


def test_tiny_head_keeps_laion_layer_names(tmp_path):
    from safetensors.numpy import load_file

    folder = build_tiny("head", "~/.cache/dataprep/sac+logos+ava1-l14-linearMSE.pth", tmp_path)
    names = set(load_file(f"{folder}/head.safetensors"))
    assert names == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


def test_a_batch_of_several_blocks_scores_each_row_as_one_block_does(tmp_path):
    # A batch that Ray Data bundles from several blocks arrives as several chunks; the head runs on each.
    head = linear_head(tmp_path / "probe.pt", [1.0, 0.0, 0.0], 5.0)
    rows = [[0.5, 0.0, 0.0], None, [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], None]
    whole = embedding_table(rows)
    chunked = pa.concat_tables([whole.slice(0, 2), whole.slice(2, 0), whole.slice(2, 3)])
    assert chunked.column(EMBEDDING).num_chunks == 3
    expected = [5.5, None, 5.0, 6.0, None]
    assert run(AestheticFilter(head=head, min_score=None), chunked)[0] == expected
    assert run(AestheticFilter(head=head, min_score=None), whole)[0] == expected
