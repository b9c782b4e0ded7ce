"""A judge LLM behind any OpenAI-compatible `POST .../chat/completions` endpoint (OpenAI, Azure-style
proxies, vLLM, llama.cpp's server, ...), for the judged benchmarks (LLaVA-Bench).

Why its own small client instead of the `openai` package: the only call is one chat completion,
httpx is already a dependency of the serve extra, and tests can point it at a loopback server.
The API key is read from an environment variable whose NAME is configured (`key_env`, default
OPENAI_API_KEY), so it never appears on a command line, in a results file or in a log; when that
variable is unset no Authorization header is sent (local servers need none).

Failures: connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff
(`retries` times, honouring a numeric Retry-After); any other HTTP error, or a reply without
`choices[0].message.content`, raises `JudgeError` at once with the server's message.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

# The judge's system message of LLaVA's eval_gpt_review_bench.py; part of the protocol, so the
# reviews are comparable with LLaVA's.
LLAVA_SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
CONTEXT_STYLES = ("llava", "plain")


class JudgeError(RuntimeError):
    """The judge could not be asked (after retries), or answered something unusable."""


@dataclass
class JudgeConfig:
    """Where the judge is and how it is asked.

    Args:
        url: the API base (`https://api.openai.com/v1`, `http://127.0.0.1:8000/v1`) or the full
            `.../chat/completions` URL.
        model: the judge model name sent in the request (LLaVA's reviews: `gpt-4-0314`).
        key_env: NAME of the environment variable holding the API key.
        timeout_s: per-request timeout (connect, read and write).
        retries: further attempts after a retryable failure (0: ask once).
        backoff_s: first wait between attempts; doubles each time, capped at 60 s.
        temperature, max_tokens: LLaVA's values (0.2, 1024).
        system: the system message (LLaVA's by default).
        context: how a caption becomes the prompt's `[Context]`: "llava" joins the context record's
            `caption` with newlines exactly as eval_gpt_review_bench.py does (for the In-the-Wild
            release, whose caption is one string, that puts every character on its own line: that is
            what the published reviews were made with); "plain" passes a string caption as it is.
    """

    url: str
    model: str
    key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    retries: int = 5
    backoff_s: float = 2.0
    temperature: float = 0.2
    max_tokens: int = 1024
    system: str = LLAVA_SYSTEM_PROMPT
    context: str = "llava"

    def __post_init__(self) -> None:
        if not self.url or not self.model:
            raise ValueError("the judge needs both --judge-url and --judge-model")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--judge-url must start with http:// or https://, got {self.url!r}")
        if self.context not in CONTEXT_STYLES:
            raise ValueError(f"--judge-context must be one of {', '.join(CONTEXT_STYLES)}, got {self.context!r}")
        if self.retries < 0 or self.timeout_s <= 0:
            raise ValueError("--judge-retries must be >= 0 and --judge-timeout > 0")

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"

    def record(self) -> dict[str, Any]:
        """What a results file keeps of the judge (the key variable's name, never its value)."""
        out = asdict(self)
        out.pop("system")
        out.pop("backoff_s")
        return out


class Judge:
    """Asks the judge one prompt at a time (`ask`); a context manager that closes its connection.

    Args:
        config: the `JudgeConfig`.
        transport: an httpx transport (tests may pass `httpx.MockTransport`); default: the network.
        sleep: the wait function between retries (tests pass a no-op).
    """

    def __init__(self, config: JudgeConfig, transport: Any = None, sleep=time.sleep):
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx comes with the serve extra
            raise JudgeError("the judge needs httpx: pip install 'lyrics[serve]' (or pip install httpx)") from exc
        self.config, self._httpx, self._sleep = config, httpx, sleep
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(timeout=config.timeout_s, headers=headers, transport=transport)

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def ask(self, content: str) -> str:
        """The judge's reply to one user message (after the system message)."""
        c = self.config
        body = {
            "model": c.model,
            "messages": [{"role": "system", "content": c.system}, {"role": "user", "content": content}],
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
        }
        problem, retry_after = "", 0.0
        for attempt in range(c.retries + 1):
            if attempt:
                self._sleep(max(min(c.backoff_s * 2 ** (attempt - 1), 60.0), retry_after))
            retry_after = 0.0
            try:
                response = self.client.post(c.endpoint, json=body)
            except self._httpx.TransportError as exc:  # connection refused, timeouts, ...
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                header = response.headers.get("retry-after", "").strip()
                retry_after = min(float(header), 60.0) if header.isdigit() else 0.0
                continue
            if response.status_code >= 400:
                hint = f" (is {c.key_env} set to a valid key?)" if response.status_code in (401, 403) else ""
                raise JudgeError(f"judge {c.endpoint} answered HTTP {response.status_code}{hint}: {response.text[:500]}")
            return self._content(response)
        raise JudgeError(f"judge {c.endpoint} failed {c.retries + 1} times; last: {problem}")

    def _content(self, response: Any) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge {self.config.endpoint} replied without choices[0].message.content: {response.text[:500]}") from None
        if not isinstance(content, str):
            raise JudgeError(f"judge {self.config.endpoint} replied with non-text content: {content!r}"[:500])
        return content
