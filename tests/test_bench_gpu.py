"""bench/gpu.py's smoke mode: every section of the one-GPU check runs end to end on CPU at tiny widths,
so the script that is meant for a GPU is known to work before a GPU runs it."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def test_help_documents_the_command():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120, check=True).stdout
    for word in ("--device cpu --tiny", "matmul peak", "stage 1", "stage 2", "Blip2ForConditionalGeneration", "end to end", "MFU", "serve vs vLLM", "--vllm-python"):
        assert word in out


def test_full_size_is_refused_on_cpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "use --device cpu with --tiny" in result.stderr


def test_cpu_tiny_smoke_run_prints_every_section(tmp_path):
    """Every section, the serve section without vLLM (skipped with its reason; `lyrics serve` alone is
    measured): vLLM's own start-up is covered by tests/serving_vllm."""
    out = tmp_path / "bench.json"
    no_vllm = tmp_path / "no-vllm" / "python"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--iters", "1", "--json", str(out), "--vllm-python", str(no_vllm)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    for header in ("== matmul peak", "== stage 1", "== stage 2", "== generation", "== end to end", "== serve vs vLLM"):
        assert header in text
    assert "stage 1:" in text and "MFU" in text and "stage 2 MFU" in text and "(aim >= 0.40)" in text
    assert "generation lyrics:" in text and "generation blip2:" in text and "tokens/s" in text
    assert "end to end: generate on cpu" in text and text.rstrip().endswith("done")
    assert f"vLLM skipped: no vLLM environment at {str(no_vllm)!r}" in text and "requests/s" in text and "p95 s" in text
    numbers = json.loads(out.read_text())
    assert numbers["matmul_tflops"] > 0
    for stage in ("stage1", "stage2"):
        assert numbers[stage]["samples_per_s"] > 0 and 0 < numbers[stage]["mfu"]
    assert numbers["generation"]["lyrics"] > 0 and numbers["generation"]["blip2"] > 0
    e2e = numbers["end_to_end"]
    assert len(e2e["stage1_losses"]) == 3 and len(e2e["stage2_losses"]) == 3 and 0 < e2e["generated_tokens"] <= 8
    serve = numbers["serve"]
    assert serve["vllm"] is None and list(serve["servers"]) == ["lyrics serve"]
    for level in ("1", "4"):
        row = serve["servers"]["lyrics serve"]["levels"][level]
        assert row["requests"] == 4 and row["requests_per_s"] > 0 and row["tokens_per_s"] > 0 and row["p50_s"] <= row["p95_s"]
