"""`vllm serve` with the plugin, as users run it, queried with the `openai` client on localhost."""

from __future__ import annotations

import base64
import io
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FRAMES, PIXELS

import tiny_models
from anchor_ot import methods

openai = pytest.importorskip("openai")
BIN = Path(sys.executable).parent


def mp4(frames) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    path = str(checkpoints["llava_onevision"])
    flags = subprocess.run([str(BIN / "anchor-ot"), "vllm-args", path, "--method", "aot", "--retention", "0.25"],
                           check=True, capture_output=True, text=True).stdout
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", OMP_NUM_THREADS="1")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    # `vllm serve MODEL` runs this module; vllm-cpu 0.32.0's `vllm` script itself fails (it asks
    # importlib.metadata for a distribution named "vllm", installed as "vllm-cpu")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
           "--dtype", "float32", "--max-model-len", "4096", "--limit-mm-per-prompt", '{"video": 1}',
           "--media-io-kwargs", '{"video": {"num_frames": %d}}' % FRAMES, *shlex.split(flags)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"vllm serve did not come up in 600 s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield path, openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ask(client, model, url, text="what is in the video ?"):
    return client.chat.completions.create(
        model=model, max_tokens=4, temperature=0.0,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                               {"type": "text", "text": text}]}])


def expected_prompt_tokens(path, text="what is in the video ?") -> int:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}], add_generation_prompt=True)
    ids = processor.tokenizer(rendered)["input_ids"]
    side = -(-(PIXELS["llava_onevision"] // 14) // 2)
    return len(ids) - 1 + methods.get("aot", retention=0.25).num_kept(FRAMES, (side, side)) + 1


def test_serve_reduces_and_survives_bad_requests(server):
    path, client = server
    frames, _ = tiny_models.video(FRAMES, PIXELS["llava_onevision"], 0)
    url = "data:video/mp4;base64," + base64.b64encode(mp4(frames)).decode()
    good = ask(client, path, url)
    assert good.usage.prompt_tokens == expected_prompt_tokens(path)
    assert good.choices[0].message.content is not None

    corrupt = "data:video/mp4;base64," + base64.b64encode(b"this is not a video" * 50).decode()
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, path, corrupt)
    assert 400 <= err.value.status_code < 600
    with pytest.raises(openai.BadRequestError):  # an unsupported option: two videos where the server allows one
        client.chat.completions.create(
            model=path, max_tokens=2,
            messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                   {"type": "video_url", "video_url": {"url": url}},
                                                   {"type": "text", "text": "what ?"}]}])

    again = ask(client, path, url)  # the server still answers
    assert again.usage.prompt_tokens == good.usage.prompt_tokens
    assert again.choices[0].message.content == good.choices[0].message.content
