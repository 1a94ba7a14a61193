"""A pretrained VLM behind the whole runtime, on local Ray over real HTTP, with a real RTSP camera; and the
start-up errors of a `model.vlm` that cannot serve.

The VLM is a tiny random Qwen2.5-VL of the real class saved to a folder (tests/tiny_vlm.py): what it says is
noise, but every part a real one uses runs: its image processor and vision tower on the encoder actor,
cubes cut and pooled without training, its tokenizer, chat template and 3-D positions on the LLM actor (or,
with `runtime.llm_actors: 0`, beside the vision side on the encoder actor), XComp selection over the memory,
free generation and options by log-likelihood, citations.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.client import Client
from actors.server import Service
from configs import load_config
from conftest import need, wait_for
from models.vlm import VLMError, family_of
from test_sources_rtsp import RtspServer, free_port, have_gst_rtsp_server
from tiny_vlm import save_tiny_qwen2_5_vl

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


def vlm_config(path, snapshots, llm_actors: int = 1):
    return load_config("vlm", overrides={
        "model": {"vlm": str(path), "dtype": "float32", "device": "cpu", "max_pixels": 112 * 112,
                  "cube_grid": [1, 2, 2], "min_frames": 2, "max_frames": 4},
        "answer": {"context_tokens": 256, "window_cubes": 8, "max_answer_tokens": 8},
        "runtime": {"snapshot_dir": str(snapshots), "request_timeout": 60.0, "health_interval": 0.5,
                    "llm_actors": llm_actors},
        "server": {"port": 0}})


@pytest.mark.parametrize("llm_actors", [1, 0], ids=["llm-actor", "encoder-answers"])
def test_rtsp_camera_answers_a_free_form_question_with_citations(tiny_qwen, tmp_path, llm_actors):
    need(have_gst_rtsp_server(), "GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 for /usr/bin/python3)")
    rtsp = RtspServer(free_port()).start()
    try:
        with Service(vlm_config(tiny_qwen, tmp_path, llm_actors), num_cpus=2, token="secret") as svc:
            client = Client(svc.url, svc.token)
            client.add("door", rtsp.url("h264"))
            timeline = wait_for(lambda: (t := client.timeline("door")) and len(t) >= 3 and t, "three cubes", 120)
            assert all(1 <= e["num_frames"] <= 4 for e in timeline)

            # words the shipped toy model never saw (its 76-word tokenizer knows neither "anyone" nor "door")
            answer = client.ask("door", "Is anyone at the door right now?")
            assert isinstance(answer["text"], str) and answer["tokens_used"] > 0
            assert answer["citations"], "an answer cites the time spans it used"
            spans = {(e["start"], e["end"]) for e in client.timeline("door")}
            assert all((c["start"], c["end"]) in spans for c in answer["citations"])
            assert answer["cubes_considered"] >= 3 and answer["cubes_used"] >= 1

            picked = client.ask("door", "what colour was the thing that came in?", options=["red", "a blue car"])
            assert picked["text"] in ("red", "a blue car") and len(picked["option_logprobs"]) == 2

            # and from the command line, which asks over the same HTTP API
            cli = subprocess.run([sys.executable, "-m", "actors.cli", "ask", "--url", svc.url, "--token", svc.token,
                                  "door", "Did anybody walk past?"], capture_output=True, text=True, timeout=120)
            assert cli.returncode == 0, cli.stderr
            assert "cited t=" in cli.stdout
    finally:
        rtsp.kill()


def test_family_errors_name_the_model(tmp_path):
    from transformers import LlamaConfig, LlavaConfig

    with pytest.raises(VLMError, match="holds no config.json"):
        family_of(str(tmp_path))
    text = tmp_path / "text-model"
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(text)
    with pytest.raises(VLMError, match="without a vision tower, not a VLM"):
        family_of(str(text))
    llava = tmp_path / "llava"
    LlavaConfig().save_pretrained(llava)
    with pytest.raises(VLMError, match="llava model, an unsupported VLM family; supported families: qwen2_5_vl, qwen3_vl, smolvlm, idefics3"):
        family_of(str(llava))


def test_service_refuses_a_path_that_is_not_a_vlm_before_starting(tmp_path):
    import ray

    cfg = vlm_config(tmp_path, tmp_path / "snapshots")  # an empty folder
    with pytest.raises(VLMError, match="no config.json"):
        Service(cfg, num_cpus=1).start()
    assert not ray.is_initialized()


def test_serve_with_the_vlm_profile_and_no_model_says_so():
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "serve", "--config", "vlm", "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--set model.vlm=" in proc.stderr


def test_serve_with_an_unknown_id_offline_exits_naming_it(tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no cached copy
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "serve", "--config", "vlm", "--port", "0",
                           "--set", "model.vlm=nobody/no-such-vlm"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "'nobody/no-such-vlm': it is not a local folder" in proc.stderr and "cached" in proc.stderr
