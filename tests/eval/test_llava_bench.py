"""LLaVA-Bench scored as LLaVA's eval_gpt_review_bench.py + summarize_gpt_review.py, against a fake
OpenAI-compatible judge served on 127.0.0.1 (a real HTTP server in a thread) that returns fixed
scores per question."""

import json
import re
import socket
import threading
import time

import pytest
from data.layouts import LLAVA_BENCH_QUESTIONS, write_llava_bench
from evalkit import ScriptedPredictor

from lyrics.data.official import FormatError, MissingFilesError, read_llava_bench
from lyrics.eval.judge import LLAVA_SYSTEM_PROMPT, Judge, JudgeConfig, JudgeError
from lyrics.eval.llava_bench import context_text, parse_scores, relative_scores
from lyrics.eval.report import collect_results, leaderboard
from lyrics.eval.runner import EvalConfig, run_eval

# The fake judge's first lines, by question text. q4's "Scores: 7 7" has three fields: LLaVA records
# (-1, -1) and still averages it in.
REPLIES = {
    "What colour is the square?": "8 6\nAssistant 2 is vaguer.",  # conv
    "How many shapes are there?": "10,9\nBoth fine.",  # conv
    "Describe this photo in detail.": "9 5\nShort.",  # detail
    "Describe the picture in detail.": "Scores: 7 7\nUnreadable first line.",  # detail, unparsed
    "Why might someone draw this?": "6 3\n...",  # complex
    "What could the shape stand for?": "7 8\n...",  # complex
}
# By hand: conv (8, 6), (10, 9): means 9.0 / 7.5 -> 83.3; detail (9, 5), (-1, -1): 4.0 / 2.0 -> 50.0;
# complex (6, 3), (7, 8): 6.5 / 5.5 -> 84.6; all: 39 / 6 = 6.5 and 30 / 6 = 5.0 -> 76.9.
EXPECTED = {"relative[conv]": 83.3, "relative[detail]": 50.0, "relative[complex]": 84.6, "relative[all]": 76.9}


class FakeJudge:
    """An OpenAI-compatible chat-completions server on a free loopback port (FastAPI + uvicorn in a
    thread). `fail_first` requests get HTTP 500; `status` forces every answer's status."""

    def __init__(self, fail_first: int = 0, status: int = 200):
        import uvicorn
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        self.requests: list[dict] = []
        self.fail_first, self.status = fail_first, status
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
            if len(self.requests) <= self.fail_first:
                return JSONResponse({"error": "overloaded"}, status_code=500)
            if self.status != 200:
                return JSONResponse({"error": {"message": "bad key"}}, status_code=self.status)
            question = re.search(r"\[Question\]\n(.*?)\n\n\[", body["messages"][1]["content"], re.S).group(1)
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": REPLIES[question]}}]}

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "FakeJudge":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "fake judge did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


def model_answer(prompt) -> str:
    return f"my answer to {prompt.key}"


def judge_config(url: str, **kw) -> JudgeConfig:
    return JudgeConfig(url=url, model="fake-gpt-4", backoff_s=0.01, **kw)


def evaluate(tmp_path, judge=None, predictor=None):
    data = tmp_path / "data"
    if not data.exists():
        write_llava_bench(data)
    config = EvalConfig("llava_bench", data, out=tmp_path / "out", model="scripted", judge=judge)
    return run_eval(predictor or ScriptedPredictor(model_answer), config)


# ---------------------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize(
    ("review", "scores"),
    [
        ("8 9\nbecause", (8.0, 9.0)),
        ("7.5,10\n", (7.5, 10.0)),
        ("8, 9\n", (-1.0, -1.0)),  # the comma becomes a space: "8  9" has an empty middle field
        ("8 9 \n", (-1.0, -1.0)),  # trailing space: three fields
        ("Scores: 8 9", (-1.0, -1.0)),
        ("eight nine", (-1.0, -1.0)),
        ("", (-1.0, -1.0)),
    ],
)
def test_scores_are_parsed_as_llava_does(review, scores):
    assert parse_scores(review) == scores


def test_relative_score_rounds_each_mean_to_three_decimals_first():
    # model mean 24.5 / 6 = 4.08333 -> 4.083; 4.083 / 6 * 100 = 68.05 -> 68.0 (68.1 unrounded)
    reviews = [{"category": "llava_bench_detail", "tuple": [6.0, s]} for s in (4, 4, 4, 4, 4, 4.5)]
    scores = relative_scores(reviews)
    assert scores["detail"] == {"reference": 6.0, "model": 4.083, "relative": 68.0, "count": 6}
    assert scores["all"]["relative"] == 68.0


def test_context_as_the_official_script_joins_it():
    assert context_text("A cat.") == "A\n \nc\na\nt\n."  # "\n".join over a string's characters
    assert context_text(["A cat.", "A mat."]) == "A cat.\nA mat."
    assert context_text("A cat.", "plain") == "A cat."


def test_reader_checks_rules_and_files(tmp_path):
    write_llava_bench(tmp_path / "b")
    samples = read_llava_bench(tmp_path / "b", image_root=tmp_path / "b" / "images")
    assert [s.question_id for s in samples] == [q[0] for q in LLAVA_BENCH_QUESTIONS]
    assert samples[0].rule == "Rate both answers (conv); first line: two scores." and samples[0].reference == "The square is red."
    assert samples[0].image_path.is_file() and samples[0].caption == "A red square."
    rules = json.loads((tmp_path / "b" / "rule.json").read_text())
    del rules["llava_bench_complex"]
    (tmp_path / "b" / "rule.json").write_text(json.dumps(rules))
    with pytest.raises(FormatError, match="no rule 'llava_bench_complex'"):
        read_llava_bench(tmp_path / "b")
    write_llava_bench(tmp_path / "c", with_rules=False)
    with pytest.raises(MissingFilesError, match="rule.json"):
        read_llava_bench(tmp_path / "c")


# ------------------------------------------------------------------------------- against the fake judge
def test_judged_run_gives_llava_relative_scores_and_resumes_without_asking_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LYRICS_TEST_JUDGE_KEY", "sk-test")
    with FakeJudge() as server:
        outcome = evaluate(tmp_path, judge_config(server.url, key_env="LYRICS_TEST_JUDGE_KEY"))
        metrics = outcome.results["metrics"]
        assert {k: metrics[k] for k in EXPECTED} == EXPECTED and metrics["primary"] == 76.9
        assert metrics["unparsed"] == 1 and metrics["model_score[all]"] == 5.0 and metrics["reference_score[all]"] == 6.5
        assert len(server.requests) == 6

        first = server.requests[0]
        assert first["authorization"] == "Bearer sk-test"
        body = first["body"]
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("fake-gpt-4", 0.2, 1024)
        assert body["messages"][0] == {"role": "system", "content": LLAVA_SYSTEM_PROMPT}
        content = body["messages"][1]["content"]
        assert content == (
            "[Context]\n" + "\n".join("A red square.") + "\n\n[Question]\nWhat colour is the square?\n\n"
            "[Assistant 1]\nThe square is red.\n\n[End of Assistant 1]\n\n"
            "[Assistant 2]\nmy answer to 0\n\n[End of Assistant 2]\n\n"
            "[System]\nRate both answers (conv); first line: two scores.\n\n"
        )

        reviews = [json.loads(line) for line in (outcome.run_dir / "reviews.jsonl").read_text().splitlines()]
        assert [r["category"] for r in reviews] == ["llava_bench_conv", "llava_bench_detail", "llava_bench_complex"] * 2
        assert reviews[4]["tuple"] == [-1.0, -1.0] and reviews[0]["answer1_id"] == "ref0"  # q4: "Scores: 7 7"
        answers = [json.loads(line) for line in (outcome.run_dir / "answers.jsonl").read_text().splitlines()]
        assert answers[0] == {"question_id": 0, "prompt": "What colour is the square?", "text": "my answer to 0",
                              "answer_id": "0", "model_id": "scripted", "metadata": {}}  # fmt: skip

        again = ScriptedPredictor(model_answer)
        rerun = evaluate(tmp_path, judge_config(server.url, key_env="LYRICS_TEST_JUDGE_KEY"), again)
        assert len(server.requests) == 6 and again.batches == []  # nothing predicted or judged twice
        assert rerun.results["metrics"] == metrics
        assert rerun.results["judge"]["key_env"] == "LYRICS_TEST_JUDGE_KEY" and "sk-test" not in json.dumps(rerun.results)

    # Table 9's LLaVA columns (DD, Conv, CR) take the relative scores, daggered: the paper's is the COCO set
    text = leaderboard(collect_results([tmp_path / "out"]))
    assert "| **ours: scripted** | 50.0† | 83.3† | 84.6† | - | - | - | - | - |" in text


def test_answers_first_then_judged_and_a_torn_review_is_asked_again(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    unjudged = evaluate(tmp_path)
    assert unjudged.results["metrics"] is None and "--judge-url" in unjudged.results["note"]
    assert (unjudged.run_dir / "answers.jsonl").is_file()
    with FakeJudge(fail_first=2) as server:  # two HTTP 500s: retried
        judged = evaluate(tmp_path, judge_config(server.url), ScriptedPredictor(model_answer))
        assert judged.computed == 0 and judged.results["metrics"]["relative[all]"] == 76.9
        assert len(server.requests) == 8 and server.requests[-1]["authorization"] is None  # no key variable: no header

        path = judged.run_dir / "reviews.jsonl"
        data = path.read_bytes()
        path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 10])  # the last line cut mid-write
        evaluate(tmp_path, judge_config(server.url), ScriptedPredictor(model_answer))
        assert len(server.requests) == 9  # only the torn one asked again
        assert path.read_bytes() == data  # the same review, written again whole

        with pytest.raises(JudgeError, match="another prompt or judge model"):
            evaluate(tmp_path, JudgeConfig(url=server.url, model="another-judge"))


def test_http_errors_retries_and_bad_options(tmp_path):
    with FakeJudge(status=401) as server:
        with pytest.raises(JudgeError, match=r"HTTP 401 \(is OPENAI_API_KEY set"):
            Judge(judge_config(server.url)).ask("hi")
        assert len(server.requests) == 1  # not retried
    with FakeJudge(fail_first=5) as server:
        with pytest.raises(JudgeError, match=r"failed 3 times; last: HTTP 500"):
            Judge(judge_config(server.url, retries=2)).ask("hi")
    with pytest.raises(JudgeError, match="failed 2 times; last: ConnectError"):
        Judge(judge_config(server.url, retries=1, timeout_s=2)).ask("hi")  # the server is gone
    with pytest.raises(ValueError, match="judged benchmarks"):
        run_eval(ScriptedPredictor(), EvalConfig("pope", tmp_path, judge=judge_config("http://127.0.0.1:1")))
    with pytest.raises(ValueError, match="--judge-context"):
        judge_config("http://127.0.0.1:1", context="characters")


def test_cli_help_documents_the_judge_options():
    from typer.testing import CliRunner

    from lyrics.cli import app

    result = CliRunner().invoke(app, ["eval", "--benchmark", "llava_bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", result.output))
    for option in ("--judge-url", "--judge-model", "--judge-key-env", "--judge-timeout", "--judge-retries", "--judge-context"):
        assert option in text
    assert "OPENAI_API_KEY" in text and "LLaVA-Bench judge" in text


def test_cli_refuses_an_unset_key_variable_before_loading_the_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lyrics.cli import app

    monkeypatch.delenv("LYRICS_NO_SUCH_KEY", raising=False)
    write_llava_bench(tmp_path / "data")
    args = ["eval", "--model", str(tmp_path / "none"), "--benchmark", "llava-bench", "--data", str(tmp_path / "data"),
            "--judge-url", "http://127.0.0.1:1/v1", "--judge-model", "m", "--judge-key-env", "LYRICS_NO_SUCH_KEY"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "LYRICS_NO_SUCH_KEY: that environment variable is not set" in result.output
