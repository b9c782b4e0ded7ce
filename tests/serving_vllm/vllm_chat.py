"""Run in vLLM's environment (`.venv-vllm/bin/python vllm_chat.py SPEC OUT`): greedy chat answers of
a merged Lyrics folder through vLLM's offline `LLM.chat` (the renderer `vllm serve` uses), with the
plugin loaded from its entry point as vLLM loads it. SPEC (JSON): folder, conversations (OpenAI
messages, images as data URLs), max_tokens, and optionally refuse: a folder that must be refused.
OUT (JSON): per conversation the answer text, its token ids, the prompt's token ids; the refusal."""

import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def engine(folder: str):
    from vllm import LLM

    return LLM(
        model=folder, tokenizer=os.path.join(folder, "tokenizer"), dtype="float32", max_model_len=512,
        enforce_eager=True, limit_mm_per_prompt={"image": 1}, seed=0,
    )  # fmt: skip


def main(spec_file: str, out_file: str) -> None:
    from vllm import SamplingParams

    from lyrics.serving_vllm.folder import chat_template

    spec = json.loads(open(spec_file).read())
    out: dict = {}
    if spec.get("refuse"):
        try:
            engine(spec["refuse"])
            out["refusal"] = None
        except Exception as exc:  # what a user sees: vLLM's own exception, with the plugin's message
            out["refusal"] = f"{type(exc).__name__}: {exc}"
    start = time.perf_counter()
    llm = engine(spec["folder"])
    out["startup_s"] = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"])
    start = time.perf_counter()
    results = llm.chat(spec["conversations"], params, chat_template=chat_template(spec["folder"]), use_tqdm=False)
    out["generate_s"] = time.perf_counter() - start
    out["answers"] = [
        {
            "text": r.outputs[0].text,
            "token_ids": list(r.outputs[0].token_ids),
            "prompt_token_ids": list(r.prompt_token_ids),
            "finish_reason": r.outputs[0].finish_reason,
        }
        for r in results
    ]
    with open(out_file, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
