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
