"""A model served behind any OpenAI-compatible chat-completions endpoint (`lyrics serve`, vLLM) as a
`Predictor`, so `lyrics eval --endpoint URL` scores it with the same runner and official scorers as a
local checkpoint.

    with EndpointPredictor(EndpointConfig("http://127.0.0.1:8000/v1", model="final")) as predictor:
        run_eval(predictor, EvalConfig(..., model=predictor.identity))

What goes over the wire, per prompt: one `POST {base}/chat/completions` with the prompt's turns as
messages (human -> user, gpt -> assistant; each `<image>` placeholder becomes an `image_url` part
holding the image file's own bytes as a base64 `data:` URL, at the placeholder's place, and the one
newline the template puts after it is dropped, since the server writes its own), `max_tokens` from
the prompt, `temperature` 0 (greedy, the paper's decoding) and the prompt's stop strings. The answer
is `choices[0].message.content`, cut at the stop strings and stripped as local evaluation does. The
`lyrics` extension field of `lyrics serve` (boxes in pixels, the refiner's objects) is not used:
scoring parses boxes from the answer text in `coordinate_format`, exactly as for a local checkpoint.

What differs from `LyricsPredictor`: only image and text are sent. The server runs its own refiner
(`lyrics serve` the one recorded in its checkpoint) and puts its spatial text into the prompt itself,
so a `--refiner-store` or `--refiner` has no meaning here; nor do `--dtype`, `--share-prefix` or
`--zero-grounding`, which are the server's business. `coordinate_format` cannot be read from an
endpoint: it is given (default int1000, every preset's).

Faults: connection errors, timeouts, HTTP 408, 429 and 5xx are retried with exponential backoff
(honouring a numeric Retry-After); any other HTTP error raises `EndpointError` naming the URL, the
status, the sample and the server's message, so the run stops instead of scoring a silent gap (a
rerun resumes: finished samples are kept). An image file that cannot be read fails only its prompt,
as in local evaluation.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from lyrics.eval.predictor import ImageInput, Prediction, Prompt
from lyrics.inference.stopping import cut_at_stop

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
RETRY_STATUS = (408, 429)  # and every 5xx
MAX_BACKOFF_S = 60.0
# Leading bytes -> the media type of the data URL (servers decode the bytes whatever it says, but a
# truthful type costs nothing); anything else is sent as what its file name suggests.
MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"))


class EndpointError(RuntimeError):
    """The endpoint refused a request, answered something unusable, or stayed unreachable."""


@dataclass
class EndpointConfig:
    """Where the served model is and how it is asked.

    Args:
        url: the API base (`http://127.0.0.1:8000/v1`) or its full `.../chat/completions` URL.
        model: the served model's name (`lyrics serve --model-name`, vLLM's `--served-model-name`);
            None: the endpoint's only model (`GET {base}/models`).
        api_key: sent as `Authorization: Bearer KEY` (never written to run or results files).
        concurrency: requests in flight at once.
        timeout_s: per-request timeout (a CPU server answering a queue of long captions is slow).
        retries: further attempts after a retryable failure (0: ask once).
        backoff_s: first wait between attempts; doubles each time, capped at 60 s.
        coordinate_format: the served model's box convention (scoring and few-shot exemplar answers).
        image_token: the placeholder the prompts' turns hold for each image.
    """

    url: str
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 600.0
    retries: int = 5
    backoff_s: float = 1.0
    coordinate_format: str = "int1000"
    image_token: str = "<image>"

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint must start with http:// or https://, got {self.url!r}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("endpoint retries and backoff must be >= 0 and its timeout > 0")

    @property
    def base(self) -> str:
        url = self.url.rstrip("/")
        return url[: -len("/chat/completions")] if url.endswith("/chat/completions") else url

    @property
    def endpoint(self) -> str:
        return self.base + "/chat/completions"


# --- prompts -> OpenAI messages ---------------------------------------------------------------------
def _media_type(data: bytes, name: str) -> str:
    for magic, media in MAGIC:
        if data.startswith(magic):
            return media
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    import mimetypes

    guess = mimetypes.guess_type(name)[0]
    return guess if guess and guess.startswith("image/") else "image/png"


def data_url(image: ImageInput) -> str:
    """An image as a `data:image/...;base64` URL: a file's own bytes (the server decodes them with
    the project's one decoder, so it sees the pixels local evaluation sees; re-encoding a JPEG would
    change them), a PIL image as PNG (lossless). OSError naming the file when it cannot be read."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, media = buffer.getvalue(), "image/png"
    else:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise OSError(f"{image}: cannot read file: {exc.strerror or exc}") from None
        if not data:
            raise OSError(f"{image}: empty file (0 bytes)")
        media = _media_type(data, str(image))
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


def to_messages(prompt: Prompt, image_token: str = "<image>") -> list[dict[str, Any]]:
    """The prompt's turns as chat messages; each placeholder takes the next of `prompt.images`.
    Raises ValueError for a count mismatch or an image outside a human turn, OSError for an image
    file that cannot be read."""
    count = sum(t["value"].count(image_token) for t in prompt.turns)
    if count != len(prompt.images):
        raise ValueError(f"the prompt holds {count} {image_token} placeholders but {len(prompt.images)} images were given")
    images = iter(prompt.images)
    messages: list[dict[str, Any]] = []
    for index, turn in enumerate(prompt.turns):
        role = ROLES.get(turn.get("from", ""))
        if role is None:
            raise ValueError(f"turn {index} has role {turn.get('from')!r}; expected human or gpt")
        pieces = turn["value"].split(image_token)
        if len(pieces) == 1:
            messages.append({"role": role, "content": turn["value"]})
            continue
        if role != "user":
            raise ValueError(f"turn {index} ({turn.get('from')}) holds {image_token}: images go in human turns only")
        content: list[dict[str, Any]] = [{"type": "text", "text": pieces[0]}] if pieces[0].strip() else []
        for piece in pieces[1:]:
            content.append({"type": "image_url", "image_url": {"url": data_url(next(images))}})
            piece = piece[1:] if piece.startswith("\n") else piece
            if piece.strip():
                content.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": content})
    return messages


# --- the predictor ------------------------------------------------------------------------------
class EndpointPredictor:
    """A served model as a `Predictor`; a context manager that closes its connections and threads.

    Concurrency is a thread pool of `concurrency` workers sharing one `httpx.Client`, not httpx's
    async client: the runner calls `predict` synchronously once per batch, so an async client would
    need an event loop per call (or one in a background thread) and could not keep its connections
    across calls; threads keep the keep-alive pool for the whole run, the work is waiting on
    sockets (the GIL is released), and the pool size is the bound on requests in flight.

    Args:
        config: the `EndpointConfig`.
        transport: an httpx transport (tests pass `httpx.MockTransport`); default: the network.
        sleep: the wait between retries (tests pass a recorder).
        local_checkpoint: whether `config.model` names a local checkpoint folder (`lyrics eval
            --model`), for the error when the endpoint does not serve that name.
    """

    def __init__(self, config: EndpointConfig, transport: Any = None, sleep: Callable[[float], None] = time.sleep, local_checkpoint: bool = False):
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx comes with the eval and serve extras
            raise EndpointError("--endpoint needs httpx: pip install 'lyrics[eval]' (or pip install httpx)") from exc

        self.config, self._httpx, self._sleep = config, httpx, sleep
        self.coordinate_format = config.coordinate_format
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        self.client = httpx.Client(timeout=config.timeout_s, headers=headers, transport=transport, limits=limits)
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="lyrics-endpoint")
        try:
            self.model = self._resolve_model(config.model, local_checkpoint)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> EndpointPredictor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    @property
    def identity(self) -> str:
        """The model's resource URL (OpenAI's `GET {base}/models/{model}`): names the endpoint and
        the model in one string, recorded as the run's model so a resumed run against another
        endpoint or model is refused, and shown by `--report` as the model's name."""
        return f"{self.config.base}/models/{self.model}"

    # --- requests ------------------------------------------------------------------------------
    def _request(self, method: str, url: str, what: str, body: dict[str, Any] | None = None):
        """The first response that is not retryable; EndpointError once the retries are spent."""
        c, problem, retry_after = self.config, "", 0.0
        for attempt in range(c.retries + 1):
            if attempt:
                self._sleep(max(min(c.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S), retry_after))
            retry_after = 0.0
            try:
                response = self.client.request(method, url, json=body)
            except self._httpx.TransportError as exc:  # connection refused or reset, timeouts, ...
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUS or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {_server_message(response)}"
                header = response.headers.get("retry-after", "").strip()
                retry_after = min(float(header), MAX_BACKOFF_S) if header.isdigit() else 0.0
                continue
            return response
        raise EndpointError(f"{method} {url} ({what}) failed {c.retries + 1} times; last: {problem}")

    def _refusal(self, response: Any, what: str) -> EndpointError:
        status = response.status_code
        hint = " (send its key with --api-key or $LYRICS_API_KEY)" if status in (401, 403) else ""
        return EndpointError(f"{response.request.url} answered HTTP {status} for {what}{hint}: {_server_message(response)}")

    def _resolve_model(self, name: str | None, local_checkpoint: bool) -> str:
        """`name` checked against `GET {base}/models` (or the only model there when None). An
        endpoint without that route is trusted with the given name."""
        response = self._request("GET", self.config.base + "/models", "the model list")
        served: list[str] | None = None
        if response.status_code < 400:
            try:
                served = [str(card["id"]) for card in response.json()["data"]]
            except (ValueError, KeyError, TypeError):
                served = None
        elif response.status_code in (401, 403):
            raise self._refusal(response, "the model list")
        if served is None:
            if name is None:
                raise EndpointError(f"{self.config.base}/models lists no models (HTTP {response.status_code}); name the served model with --model NAME")
            return name
        if name is None:
            if len(served) != 1:
                raise EndpointError(f"{self.config.base} serves {served or 'no model'}; choose one with --model NAME")
            return served[0]
        if name in served:
            return name
        # A CLI Path option normalises "./merged" to "merged": accept the one served name that is that path.
        same = [s for s in served if Path(s) == Path(name)]
        if len(same) == 1:
            return same[0]
        message = f"{self.config.base} does not serve a model named {name!r}; it serves {served}"
        if local_checkpoint:
            message += (
                f". {name} is a local checkpoint folder: --endpoint and a local checkpoint are mutually exclusive; "
                "with --endpoint, --model names the served model (or leave it out for the only one), "
                "without --endpoint the folder is evaluated locally"
            )
        raise EndpointError(message)

    def body(self, prompt: Prompt) -> dict[str, Any]:
        """The chat-completions request of one prompt (see the module docstring)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_messages(prompt, self.config.image_token),
            "max_tokens": prompt.max_new_tokens,
            "temperature": 0,
        }
        if prompt.stop:
            body["stop"] = list(prompt.stop)
        return body

    def _ask(self, prompt: Prompt) -> Prediction:
        what = f"sample {prompt.key!r}" if prompt.key else "a prompt"
        try:
            body = self.body(prompt)
        except OSError as exc:  # an unreadable image fails only its prompt, as in local evaluation
            return Prediction("", str(exc))
        response = self._request("POST", self.config.endpoint, what, body)
        if response.status_code >= 400:
            raise self._refusal(response, what)
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.config.endpoint} replied to {what} without choices[0].message.content: {response.text[:300]}") from None
        if not isinstance(content, str):
            raise EndpointError(f"{self.config.endpoint} replied to {what} with non-text content: {content!r}"[:400])
        return Prediction(cut_at_stop(content, prompt.stop)[0].strip())

    def predict(self, prompts: Sequence[Prompt]) -> list[Prediction]:
        """Answers for `prompts`, in order, at most `concurrency` requests in flight. The first
        `EndpointError` (in prompt order) is raised once the requests already sent have ended; the
        ones not yet sent are cancelled."""
        futures = [self._pool.submit(self._ask, prompt) for prompt in prompts]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)
            raise


def _server_message(response: Any) -> str:
    """The server's own words: OpenAI's `error.message`, the flat `message` of older vLLM errors
    (`{"object": "error", "message": ...}`), or else the body's text."""
    try:
        payload = response.json()
        error = payload.get("error")
        for message in (error.get("message") if isinstance(error, dict) else error, payload.get("message")):
            if isinstance(message, str) and message:
                return message[:500]
    except (ValueError, AttributeError):
        pass
    return response.text[:500] or "(empty body)"
