import json
import subprocess
import sys

import tiny


def run(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "lyrics", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_help_lists_the_commands():
    out = run("--help").stdout
    for command in ("audit", "config", "import-blip2"):
        assert command in out


def test_audit_json_meets_the_three_percent_rule():
    report = json.loads(run("audit", "--preset", "paper", "--json").stdout)
    assert report["within_tolerance"] is True
    assert all(isinstance(report[k], int) for k in ("mqformer", "projection", "lora", "trainable", "total"))


def test_config_applies_overrides_and_rejects_typos():
    out = run("config", "--preset", "tiny", "--set", "mqformer_config.num_grounding_query_tokens=0").stdout
    assert json.loads(out)["mqformer_config"]["num_grounding_query_tokens"] == 0
    bad = run("config", "--preset", "tiny", "--set", "nope=1", check=False)
    assert bad.returncode == 2 and "unknown LyricsConfig field 'nope'" in bad.stderr


def test_import_blip2_writes_a_loadable_mqformer(tmp_path):
    tiny.save_transformers_blip2("Blip2ForImageTextRetrieval", tmp_path / "blip2")
    overrides = [f"mqformer_config.{k}={v}" for k, v in tiny.TINY_QFORMER.items()]
    overrides += [f"mqformer_config.{k}={v}" for k, v in tiny.TINY_TOKEN_IDS.items()]
    overrides += ["vision_config.hidden_size=24", "mqformer_config.num_query_tokens=4"]
    args = ["import-blip2", str(tmp_path / "blip2"), "--out", str(tmp_path / "mq"), "--preset", "tiny"]
    for item in overrides:
        args += ["--set", item]
    out = run(*args).stdout
    assert "newly initialised" in out
    report = json.loads((tmp_path / "mq" / "load_report.json").read_text())
    assert "mqformer.query_tokens" in report["loaded"]
    from lyrics.models.mqformer import MQFormerModel

    assert MQFormerModel.from_pretrained(tmp_path / "mq").config.num_query_tokens == 4
    missing = run("import-blip2", str(tmp_path / "absent"), "--out", str(tmp_path / "x"), check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
