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


# --- flags stated once: the defaults of `serve`, `refine` and `eval` are those of their typed configs ---
def defaults(command) -> dict:
    """{parameter name: default} of a `lyrics` command, as typer hands them to the function."""
    import inspect

    return {name: p.default for name, p in inspect.signature(command).parameters.items()}


def test_serve_flags_are_the_server_limits_defaults():
    from lyrics.cli import serve_command
    from lyrics.inference.limits import CLI_FLAGS, ServerLimits

    flags = defaults(serve_command)
    assert ServerLimits.from_cli(flags) == ServerLimits()
    every = {CLI_FLAGS.get(name, (name, None))[0] for name in ServerLimits.__dataclass_fields__}
    assert every <= set(flags), f"ServerLimits fields without a serve flag: {sorted(every - set(flags))}"
    # a changed flag reaches its field, in the field's units
    assert ServerLimits.from_cli({**flags, "max_body_mb": 2.0, "queue_timeout": 5.0}).max_body_bytes == 2 << 20


def test_refine_flags_set_refiner_config_fields_and_leave_defaults_to_it():
    from lyrics.cli import REFINE_FLAGS, refine_command
    from lyrics.configuration import RefinerConfig

    flags = defaults(refine_command)
    assert set(REFINE_FLAGS) <= set(flags)
    assert set(REFINE_FLAGS.values()) <= set(RefinerConfig().to_dict())
    assert all(flags[flag] is None for flag in REFINE_FLAGS)


def test_eval_flags_are_the_runner_defaults():
    import dataclasses
    import inspect
    import re

    import typer

    from lyrics.cli import eval_command
    from lyrics.eval.command import run_benchmark
    from lyrics.eval.endpoint import EndpointConfig
    from lyrics.eval.judge import JudgeConfig
    from lyrics.eval.runner import EvalConfig

    flags = defaults(eval_command)
    runner = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
    for name in ("shots", "batch_size", "mme_pairing"):
        assert flags[name] == runner[name], name
    assert flags["shard"] == "/".join(map(str, runner["shard"]))
    assert flags["concurrency"] == EndpointConfig.concurrency
    called = {name: p.default for name, p in inspect.signature(run_benchmark).parameters.items()}
    assert all(flags[name] == called[name] for name in ("shots", "batch_size", "shard", "mme_pairing", "share_prefix", "zero_grounding"))
    # the judge's defaults are stated in the help text: they must be JudgeConfig's
    params = {p.name: p for p in typer.main.get_command(__import__("lyrics.cli", fromlist=["app"]).app).commands["eval"].params}
    assert re.search(r"default (\d+)", params["judge_timeout"].help).group(1) == f"{JudgeConfig.timeout_s:g}"
    assert re.search(r"default (\d+)", params["judge_retries"].help).group(1) == str(JudgeConfig.retries)
