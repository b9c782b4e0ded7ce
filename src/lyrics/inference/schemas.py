"""OpenAI chat-completions wire format (the subset `lyrics serve` speaks), as pydantic models.

Requests: `model`, `messages` (roles system/developer/user/assistant; content a string or parts
`{"type": "text", "text": ...}` / `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`),
`max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `stop`, `stream`, `n` (1 only).
Unknown fields are ignored, as most OpenAI-compatible servers do. A temperature below 0.01 decodes
greedily (`GenerationSettings`). One extension: `regions`, xyxy boxes that fill the `<region>`
placeholders of the last user message in order (referential dialogue), in `region_format` units:
"pixels" (default), "0-1" or "0-1000" (`lyrics.inference.regions` states the rules).

Responses follow OpenAI's `chat.completion` / `chat.completion.chunk` objects, plus a `lyrics` field
with the answer's boxes (pixels and normalised) and the refiner's tags, objects and spatial text.
Errors use OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from lyrics.inference.inputs import InputError


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(
        default=None, ge=0, le=2,
        description="Sampling temperature. 0, and any value below 0.01, decodes greedily (the argmax token "
        "each step): such temperatures sample the argmax anyway, and tiny ones overflow floating point.",
    )  # fmt: skip
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1)
    regions: list[list[float]] | None = None
    region_format: Literal["pixels", "0-1", "0-1000"] = "pixels"


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    lyrics: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lyrics"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def message_parts(message: Message, index: int) -> tuple[str, list[tuple[str, str]]]:
    """A message's text (its text parts joined by newlines) and its image URLs with their field names."""
    if message.content is None:
        return "", []
    if isinstance(message.content, str):
        return message.content, []
    texts, images = [], []
    for j, part in enumerate(message.content):
        if part.type == "text":
            texts.append(part.text)
        else:
            images.append((part.image_url.url, f"messages[{index}].content[{j}].image_url"))
    return "\n".join(t for t in texts if t), images


def chat_turns(messages: list[Message], image_token: str, max_text_chars: int | None = None) -> tuple[str | None, list[dict[str, str]], list[tuple[str, str]]]:
    """OpenAI messages -> (system prompt or None, the turns ending with the user's question, the
    image URLs with their field names), checked as `lyrics serve` checks them; `lyrics serve` and
    the vLLM plugin's renderer both build their prompts from this. System and developer messages
    join, by newlines, into one system prompt. Refused (`InputError`, naming the field): the
    reserved image token in text, an image outside a user message, more than one image, more text
    than `max_text_chars`, and a conversation that does not end with a user question."""
    system, turns, images, chars = [], [], [], 0
    for i, message in enumerate(messages):
        text, urls = message_parts(message, i)
        chars += len(text)
        if image_token in text:
            raise InputError(f"messages[{i}]: text may not contain the reserved token {image_token!r}", param=f"messages[{i}].content")
        if urls and message.role != "user":
            raise InputError(f"messages[{i}]: images are only accepted in user messages", param=f"messages[{i}].content")
        images += urls
        if message.role in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"from": "human" if message.role == "user" else "gpt", "value": text})
    if max_text_chars is not None and chars > max_text_chars:
        raise InputError(f"the messages hold {chars} characters of text, more than the limit of {max_text_chars}", param="messages")
    if not turns or turns[-1]["from"] != "human":
        raise InputError("the last message must have role 'user'", param="messages")
    if not turns[-1]["value"].strip():
        raise InputError("the last user message has no text (send a question with the image)", param="messages")
    if len(images) > 1:
        raise InputError(f"this model takes one image per conversation, got {len(images)}", param="messages")
    return ("\n".join(system) if system else None), turns, images
