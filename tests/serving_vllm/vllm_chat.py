"""Run in vLLM's environment (`.venv-vllm/bin/python vllm_chat.py SPEC OUT`): greedy chat answers of
a Lyrics folder through vLLM's offline `LLM.chat` (the renderer `vllm serve` uses), with the plugin
loaded from its entry point as vLLM loads it.

SPEC (JSON): conversations (OpenAI messages, images as data URLs), max_tokens, and either folder (a
merged folder; optionally refuse: a folder that must be refused) or stage2 (a stage-2 checkpoint,
served with its adapter through vLLM's LoRA on the base folder `lyrics.serving_vllm.lora.base_folder`
writes, as `python -m lyrics.serving_vllm serve` does; lora_name names the adapter).
Optionally region_chats and bad_regions: lists of {messages, mm_processor_kwargs} (a request's
`regions` / `region_format`, `lyrics.serving_vllm.regions`), each sent alone on the same engine.
Optionally refuse_mode: a merged folder loaded with tokenizer_mode "hf" (to be refused); quantize:
"int8" serves the folder as `--quantize int8` does (`lyrics.serving_vllm.quantize.engine_options`).
OUT (JSON): per conversation the answer text, its token ids, the prompt's token ids; the refusals;
for stage2 also base_answers, the same chats without the adapter, and the base folder's build time;
region_answers (as answers) and region_refusals (per bad chat: the exception's type, message and
`parameter`, or null when it was answered)."""

import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def engine(folder: str, tokenizer_mode: str = "lyrics", **lora):
    from vllm import LLM

    return LLM(
        model=folder, tokenizer=os.path.join(folder, "tokenizer"), tokenizer_mode=tokenizer_mode, dtype="float32", max_model_len=512,
        enforce_eager=True, limit_mm_per_prompt={"image": 1}, seed=0, **lora,
    )  # fmt: skip


def answers(results) -> list[dict]:
    return [
        {
            "text": r.outputs[0].text,
            "token_ids": list(r.outputs[0].token_ids),
            "prompt_token_ids": list(r.prompt_token_ids),
            "finish_reason": r.outputs[0].finish_reason,
        }
        for r in results
    ]


def refusal(folder: str, **options) -> str | None:
    try:
        engine(folder, **options)
    except Exception as exc:  # what a user sees: vLLM's own exception, with the plugin's message
        return f"{type(exc).__name__}: {exc}"
    return None


def refusal_of(chat, conversation) -> dict | None:
    try:
        chat(conversation)
    except Exception as exc:  # what `LLM.chat` raises for the request
        return {"type": type(exc).__name__, "message": exc.args[0] if exc.args else str(exc), "parameter": getattr(exc, "parameter", None)}
    return None


def serve_stage2(spec: dict, out: dict):
    """The engine on the stage-2 checkpoint's base folder with LoRA on, and the adapter's request."""
    from vllm.lora.request import LoRARequest

    from lyrics.serving_vllm.lora import base_folder, check_stage2

    start = time.perf_counter()
    stage2 = check_stage2(spec["stage2"])
    base = base_folder(stage2)
    out["base_s"], out["base_folder"], out["max_lora_rank"] = time.perf_counter() - start, str(base), stage2.max_lora_rank
    start = time.perf_counter()
    llm = engine(str(base), enable_lora=True, max_lora_rank=stage2.max_lora_rank, max_loras=1)
    out["startup_s"] = time.perf_counter() - start
    return llm, LoRARequest(spec.get("lora_name", "adapter"), 1, str(stage2.adapter))


def main(spec_file: str, out_file: str) -> None:
    from vllm import SamplingParams

    spec = json.loads(open(spec_file).read())
    out: dict = {}
    if spec.get("refuse"):
        out["refusal"] = refusal(spec["refuse"])
    if spec.get("refuse_mode"):  # a merged folder under vLLM's own renderer
        out["mode_refusal"] = refusal(spec["refuse_mode"], tokenizer_mode="hf")
    if spec.get("stage2"):
        llm, lora_request = serve_stage2(spec, out)
    else:
        start = time.perf_counter()
        from lyrics.serving_vllm.quantize import engine_options

        llm, lora_request = engine(spec["folder"], **engine_options(spec.get("quantize", "none"))), None
        out["startup_s"] = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"])
    start = time.perf_counter()
    results = llm.chat(spec["conversations"], params, use_tqdm=False, lora_request=lora_request)
    out["generate_s"] = time.perf_counter() - start
    out["answers"] = answers(results)
    chat = lambda c: llm.chat([c["messages"]], params, use_tqdm=False, lora_request=lora_request,
                              mm_processor_kwargs=c["mm_processor_kwargs"])  # fmt: skip
    start = time.perf_counter()
    out["region_answers"] = [answers(chat(c))[0] for c in spec.get("region_chats", [])]
    out["region_refusals"] = [refusal_of(chat, c) for c in spec.get("bad_regions", [])]
    out["regions_s"] = time.perf_counter() - start
    if lora_request is not None:
        out["base_answers"] = answers(llm.chat(spec["conversations"], params, use_tqdm=False))
    with open(out_file, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
