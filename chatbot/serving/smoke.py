"""Load a checkpoint in a fresh process and generate a few tokens: the check a version passes
before it is promoted, so a version that cannot serve never becomes the active one.

`python -m chatbot.serving.smoke ARTIFACT [BASE]` exits 0 when the model loads and writes
tokens, else prints why on stderr and exits 1. A separate process because a load that crashes
or leaks memory must not take the caller (a web or worker process) with it.
"""

import subprocess
import sys

SMOKE_TOKENS = 4


class SmokeTestFailed(RuntimeError):
    """The checkpoint did not load or generate in a fresh process."""


def smoke_test(artifact_path: str, *, base_path: str = "", timeout: float = 300.0) -> None:
    """Run this module on the checkpoint; raise SmokeTestFailed with its error when it fails."""
    command = [sys.executable, "-m", "chatbot.serving.smoke", artifact_path]
    if base_path:
        command.append(base_path)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SmokeTestFailed(f"no answer from a test load in {timeout:.0f} s") from None
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise SmokeTestFailed(lines[-1] if lines else f"test load exited with {done.returncode}")


def _generate(artifact_path: str, base_path: str) -> int:
    import torch

    from chatbot.serving.loading import model_load

    loaded = model_load(artifact_path, base_path=base_path)
    inputs = loaded.tokenizer("Hello", return_tensors="pt")
    with torch.inference_mode():
        output = loaded.model.generate(
            **inputs, max_new_tokens=SMOKE_TOKENS, min_new_tokens=1, do_sample=False
        )
        finite = bool(torch.isfinite(loaded.model(output).logits).all())
    new = output.shape[1] - inputs["input_ids"].shape[1]
    if new < 1 or not finite:
        raise RuntimeError("the model wrote no tokens or non-finite scores")
    return int(new)


if __name__ == "__main__":
    try:
        written = _generate(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
    except Exception as exc:  # noqa: BLE001 - any failure is the verdict, said in one line
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {written} tokens")
