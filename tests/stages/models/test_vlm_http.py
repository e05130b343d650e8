"""The VLM HTTP backend against a real OpenAI-compatible server on loopback: captions, the concurrency
bound, retries with backoff, timeouts, malformed answers, and configuration errors that stop the job."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from dataprep.errors import FatalStageError
from dataprep.stage_task import StageTask
from dataprep.stages.models.vlm import VlmCaption
from dataprep.stages.models.vlm_backend import VlmConfigError
from dataprep.stages.models.vlm_http import HttpBackend, endpoint_problem
from tests.helpers import free_port, planned
from tests.stages.models.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(60)


def _jpeg(shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (shade, 40, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def _rows(n: int, frames: int = 2) -> pa.Table:
    return pa.Table.from_pylist([
        {"key": f"k{i}", "caption": f"original {i}", "media_type": "video", "duration": 4.0,
         "frames": [_jpeg(20 * f) for f in range(frames)]} for i in range(n)])


def _stage(server: OpenAIServer, **options) -> VlmCaption:
    options = {"backend": "http", "endpoint": server.url, "model": server.model, "backoff_s": 0.01,
               "timeout_s": 5.0, **options}
    stage = VlmCaption(**options)
    stage.setup()
    return stage


def _caption(server: OpenAIServer, rows: pa.Table, **options) -> list[dict]:
    stage = _stage(server, **options)
    try:
        return stage.process_batch(rows).to_pylist()
    finally:
        stage.teardown()


def test_captions_every_row_within_the_concurrency_bound():
    with OpenAIServer(hold_s=0.15) as server:
        out = _caption(server, _rows(9, frames=3), max_in_flight=3, max_new_tokens=40, prompt="Describe the {media}.")
    assert [r["caption_vlm"] for r in out] == ["3 image(s): Describe the video."] * 9
    assert {r["caption_source"] for r in out} == {"vlm"}
    assert [r["caption"] for r in out] == [f"original {i}" for i in range(9)]  # the original stays
    assert all(r["vlm_prompt_tokens"] == 3 + 30 and r["vlm_output_tokens"] == 5 for r in out)  # the server's usage
    assert server.max_in_flight == 3  # never more than asked, and the bound is actually used
    body = server.requests[0]
    assert body["model"] == server.model and body["max_tokens"] == 40 and body["temperature"] == 0.0
    urls = [p["image_url"]["url"] for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(urls) == 3 and all(u.startswith("data:image/jpeg;base64,") for u in urls)


def test_retries_500_and_429_then_succeeds():
    with OpenAIServer(script=["500", "429"]) as server:
        (row,) = _caption(server, _rows(1), max_retries=2)
    assert row["caption_source"] == "vlm" and row["caption_vlm"].startswith("2 image(s)")
    assert len(server.requests) == 3


def test_falls_back_to_the_original_after_the_retries():
    with OpenAIServer(script=["503", "503", "503", "503"]) as server:
        (row,) = _caption(server, _rows(1), max_retries=2)
    assert row["caption_vlm"] == "original 0" and row["caption_source"] == "fallback"
    assert row["vlm_fallback_reason"] == "http_503 after 3 tries"
    assert len(server.requests) == 3  # 1 + max_retries, then no more


def test_a_slow_answer_times_out_and_falls_back():
    with OpenAIServer(script=["slow"], slow_s=3.0) as server:
        (row,) = _caption(server, _rows(1), max_retries=0, timeout_s=0.3)
    assert row["caption_source"] == "fallback" and row["vlm_fallback_reason"] == "timeout after 1 tries"


def test_malformed_json_is_retried_then_falls_back():
    with OpenAIServer(script=["malformed"]) as server:
        (row,) = _caption(server, _rows(1), max_retries=1)
    assert row["caption_source"] == "vlm"
    with OpenAIServer(script=["malformed", "malformed"]) as server:
        (row,) = _caption(server, _rows(1), max_retries=1)
    assert row["caption_source"] == "fallback" and row["vlm_fallback_reason"] == "malformed_response after 2 tries"


def test_an_empty_answer_falls_back_without_retrying():
    with OpenAIServer(script=["empty"]) as server:
        (row,) = _caption(server, _rows(1), max_retries=3)
    assert row["caption_source"] == "fallback" and row["vlm_fallback_reason"] == "empty"
    assert len(server.requests) == 1


def test_a_connection_refused_falls_back():
    stage = VlmCaption(backend="http", endpoint=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff_s=0.01)
    stage.setup()
    (row,) = stage.process_batch(_rows(1)).to_pylist()
    stage.teardown()
    assert row["caption_source"] == "fallback"
    assert row["vlm_fallback_reason"] == "connection: ConnectionRefusedError after 2 tries"


@pytest.mark.parametrize("failure", [["401"], []])
def test_a_wrong_key_or_model_fails_the_job(failure):
    # [] : no scripted failure, but the stage names a model the server does not serve (404).
    with OpenAIServer(script=failure) as server:
        model = server.model if failure else "not-served"
        task = StageTask(planned(VlmCaption, backend="http", endpoint=server.url, model=model), "/tmp/unused")
        with pytest.raises(FatalStageError, match="401" if failure else "404"):
            task(_rows(4))
        task.close()
        assert len(server.requests) <= 4  # nothing retried


def test_preflight_checks_the_server_and_its_model():
    with OpenAIServer() as server:
        assert VlmCaption(backend="http", endpoint=server.url, model=server.model).preflight() == []
        (problem,) = VlmCaption(backend="http", endpoint=server.url, model="other").preflight()
        assert "'other' is not served" in problem and server.model in problem
    (problem,) = VlmCaption(backend="http", endpoint=f"http://127.0.0.1:{free_port()}/v1").preflight()
    assert problem.startswith("`endpoint`: cannot reach") and "fix:" in problem
    assert endpoint_problem(server.url, "x", api_key=None) is not None  # the server is gone now


def test_tiny_models_keep_the_server():
    stage = VlmCaption(backend="http", model="served-name")
    assert stage.tiny_params("/nonexistent").model == "served-name"


def test_backoff_doubles_with_jitter_and_honours_retry_after():
    backend = HttpBackend(endpoint="http://127.0.0.1:1/v1", model="m", api_key=None, body={}, max_in_flight=1,
                          timeout_s=1, max_retries=9, backoff_s=1.0, jitter=lambda: 0.0)
    assert [backend._delay(a, None) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]  # half fixed, half random
    backend.jitter = lambda: 1.0
    assert [backend._delay(a, None) for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backend._delay(10, None) == 30.0  # capped
    assert backend._delay(1, 7.0) == 7.0  # the server's Retry-After wins when longer
    backend.close()


def test_backoff_waits_between_tries():
    waits: list[float] = []
    with OpenAIServer(script=["500", "500"]) as server:
        backend = HttpBackend(endpoint=server.url, model=server.model, api_key=None, body={}, max_in_flight=1,
                              timeout_s=5, max_retries=2, backoff_s=0.2, sleep=waits.append, jitter=lambda: 0.5)
        from dataprep.stages.models.vlm_prompt import VlmRequest

        (generation,) = backend.generate([VlmRequest(images=[], video=False, prompt="hi")])
        backend.close()
    assert generation.text == "0 image(s): hi" and waits == pytest.approx([0.15, 0.3])


def test_config_error_cancels_the_rest_of_the_batch():
    with OpenAIServer(script=["404"] * 50) as server:
        stage = _stage(server, max_in_flight=1)
        with pytest.raises(VlmConfigError, match="fix: check `endpoint`"):
            stage.process_batch(_rows(20))
        stage.teardown()
    assert len(server.requests) < 20
