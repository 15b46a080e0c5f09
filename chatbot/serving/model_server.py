"""The model server: llama.cpp's llama-server in router mode, fed each version as a GGUF file.

The router serves every `v<N>.gguf` in MODEL_SERVER_MODELS_DIR under the name `v<N>`,
loading one in a child process on its first request. A version reaches it by
`model_publish`: its GGUF is made once (the LoRA adapter merged into the base, converted
and quantized by llama.cpp's own tools) and stored beside the artifact, linked into the
directory, and the router told to rescan. Replies already streaming finish on the old
version's child; the least recently used one is unloaded when MODEL_SERVER_MAX_MODELS are
loaded.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from chatbot.serving.versions import ServingTarget

log = logging.getLogger(__name__)

BUILD_SCRIPT = Path(settings.BASE_DIR) / "deploy" / "build_llama_server.sh"
_convert_lock = threading.Lock()


class ConversionError(RuntimeError):
    """A version could not be turned into the engine's format; nothing was published."""


def llama_cpp_dir() -> Path:
    """The cached llama.cpp build (binaries and converters), built on first use."""
    if settings.LLAMA_SERVER_BIN:
        return Path(settings.LLAMA_SERVER_BIN).parent.parent
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    if done.returncode != 0:
        raise ConversionError(f"building llama-server failed: {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]).parent.parent


def _run(command: list[str], **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise ConversionError(f"{Path(command[1]).name} failed: {done.stderr[-2000:]}")


def hf_to_gguf(folder: Path, out: Path, *, quant: str) -> Path:
    """Convert a Hugging Face model folder to a GGUF file quantized as `quant` (Q8_0, Q4_0...).

    Written to a temporary name and renamed into place, so a half-written file is never
    served.
    """
    tools = llama_cpp_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-") as tmp:
        f16 = Path(tmp) / "model-f16.gguf"
        env = {**os.environ, "PYTHONPATH": f"{tools / 'python'}:{tools / 'python' / 'gguf-py'}"}
        script = str(tools / "python" / "convert_hf_to_gguf.py")
        command = [sys.executable, script, str(folder), "--outfile", str(f16), "--outtype", "f16"]
        _run(command, env=env)
        partial = Path(tmp) / out.name
        if quant.upper() in ("F16", "BF16"):
            f16.rename(partial)
        else:
            threads = str(settings.MODEL_SERVER_THREADS)
            _run([str(tools / "bin" / "llama-quantize"), str(f16), str(partial), quant, threads])
        partial.rename(out)
    return out


def gguf_path(target: ServingTarget) -> Path:
    """Where the version's GGUF lives: beside its artifact, or in the data dir for the base."""
    quant = settings.MODEL_SERVER_QUANT
    if target.artifact_path != target.base_path:
        return Path(target.artifact_path) / f"model.{quant}.gguf"
    base = Path(target.base_path)
    return Path(settings.DATA_DIR) / "models" / "gguf" / f"{base.name}.{quant}.gguf"


def gguf_ensure(target: ServingTarget) -> Path:
    """The version's GGUF, made once: the adapter merged into its base, converted, quantized."""
    out = gguf_path(target)
    if out.exists():
        return out
    with _convert_lock:
        if out.exists():
            return out
        if target.artifact_path == target.base_path:
            return hf_to_gguf(Path(target.base_path), out, quant=settings.MODEL_SERVER_QUANT)
        from chatbot.serving.loading import model_load

        loaded = model_load(target.artifact_path, base_path=target.base_path, dtype="float32")
        with tempfile.TemporaryDirectory(prefix="merged-") as merged:
            # SmolLM2 ties input and output embeddings: the merged model saves them once.
            loaded.model.save_pretrained(merged)
            loaded.tokenizer.save_pretrained(merged)
            return hf_to_gguf(Path(merged), out, quant=settings.MODEL_SERVER_QUANT)


def model_id(target: ServingTarget) -> str:
    """The name the model server knows a version by (its GGUF file's stem)."""
    return f"v{target.version_number}"


def version_files_publish(target: ServingTarget) -> None:
    """On the host that made a version: its GGUF (when model servers serve), then all its
    files into the artifact store, from where every other host fetches them."""
    from chatbot.artifacts import artifact_push
    from chatbot.serving.cluster import remote_serving
    from chatbot.serving.versions import artifact_name

    if remote_serving():
        gguf_ensure(target)
    artifact_push(Path(target.artifact_path), name=artifact_name(target.version_number))


def model_link(target: ServingTarget) -> Path:
    """Make the version's GGUF and link it into the router's directory as `v<N>.gguf`."""
    source = gguf_ensure(target)
    models = Path(settings.MODEL_SERVER_MODELS_DIR)
    models.mkdir(parents=True, exist_ok=True)
    link = models / f"{model_id(target)}.gguf"
    if not link.exists() or link.resolve() != source.resolve():
        tmp = models / f".{link.name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(source.resolve())
        tmp.rename(link)
    return link


def auth_headers() -> dict[str, str]:
    """What every request to a model server carries (MODEL_SERVER_API_KEY)."""
    key = settings.MODEL_SERVER_API_KEY
    return {"Authorization": f"Bearer {key}"} if key else {}


def server_env() -> dict[str, str]:
    """llama-server's environment: the API key goes there, not on its (visible) command line."""
    key = settings.MODEL_SERVER_API_KEY
    return {**os.environ, "LLAMA_API_KEY": key} if key else dict(os.environ)


def model_publish(target: ServingTarget, url: str) -> None:
    """Make the version servable by the running router (blocking: call off the loop)."""
    import httpx

    model_link(target)
    response = httpx.get(f"{url}/models", params={"reload": 1}, headers=auth_headers(), timeout=30)
    response.raise_for_status()
    log.info("Published v%s to the model server at %s", target.version_number, url)


def server_command(*, host: str, port: int, model: Path | None = None) -> list[str]:
    """The llama-server command line for the router over MODEL_SERVER_MODELS_DIR, or with
    `model` for a server of that one GGUF (the gate's scoring server), same engine settings."""
    binary = settings.LLAMA_SERVER_BIN or str(llama_cpp_dir() / "bin" / "llama-server")
    slots = settings.MODEL_SERVER_SLOTS
    threads = str(settings.MODEL_SERVER_THREADS)
    serves = (
        ["--model", str(model)]
        if model is not None
        else [
            "--models-dir",
            str(settings.MODEL_SERVER_MODELS_DIR),
            "--models-max",
            str(settings.MODEL_SERVER_MAX_MODELS),
        ]
    )
    return [
        binary,
        *serves,
        "--host",
        host,
        "--port",
        str(port),
        "--parallel",
        str(slots),
        # Each slot its own KV stream of MODEL_SERVER_KV_TOKENS / slots: a chat's attention
        # spans its own tokens only (a unified pool made every decode step attend over all
        # slots' tokens: 8 chats at once decoded 2x slower, README "Model server").
        "--no-kv-unified",
        "--ctx-size",
        str(settings.MODEL_SERVER_KV_TOKENS),
        "--threads",
        threads,
        "--threads-batch",
        threads,
        "--flash-attn",
        settings.MODEL_SERVER_FLASH_ATTN,
        "--cont-batching",
        # Small batches: a burst of new prompts is prefilled in steps of a few hundred tokens,
        # with the running chats' next tokens in every step, so no reply stalls for the burst.
        "--batch-size",
        str(settings.MODEL_SERVER_BATCH_TOKENS),
        "--ubatch-size",
        str(settings.MODEL_SERVER_BATCH_TOKENS),
        # llama.cpp's default: a chat takes the idle slot sharing most of its prompt (over
        # 10 %: its own earlier turns, else the system prompt), else the least recently used.
        # 0.9 kept conversations' slots from new chats but moved the quantized model's greedy
        # replies off the bf16 engine's (similarity 0.565 vs 0.580 on the 12 parity cases,
        # 0.590 with 0.1): README "Model server".
        "--slot-prompt-similarity",
        "0.1",
        # Prompts of idle slots kept in RAM (MiB, 0 = off): more prefixes, more memory.
        "--cache-ram",
        str(settings.MODEL_SERVER_CACHE_RAM_MIB),
        "--no-webui",
    ]


def server_wait(url: str, proc: subprocess.Popen, *, timeout: float = 120.0) -> None:
    """Block until the server answers /health; raise if it exits or stays silent."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama-server at {url} did not come up within {timeout:g} s")


def server_spawn(
    *, port: int, log_path: Path, host: str = "127.0.0.1", model: Path | None = None
) -> subprocess.Popen:
    """Start the router (with its model children in its own process group), or a server of
    one `model`, and wait for it."""
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            server_command(host=host, port=port, model=model),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_env(),
        )
    try:
        server_wait(f"http://{host}:{port}", proc)
    except RuntimeError:
        server_stop(proc)
        raise
    return proc


def server_stop(proc: subprocess.Popen) -> None:
    """Stop a spawned server and its model children (they share its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def server_private(model: Path) -> Iterator[str]:
    """A llama-server of one GGUF on a free loopback port, for as long as the block runs;
    yields its URL. The gate scores a version on it: the engine customers get, without
    taking the live server's slots (and at the trainer's CPU priority, which it inherits)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = Path(settings.DATA_DIR) / "logs" / "llama-server-scoring.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = server_spawn(port=port, log_path=log_path, model=model)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server_stop(proc)
