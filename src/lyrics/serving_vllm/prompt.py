"""A chat request's prompt token ids for vLLM, built by `lyrics serve`'s own rules (no vLLM import here).

vLLM's default renderer renders a jinja chat template to text and tokenises that text whole.
`LyricsProcessor.encode`, which every Lyrics checkpoint is trained with, tokenises each piece of a
conversation on its own (`segments`, split again at `<image>`). A byte-level BPE tokenizer (SmolLM2)
gives the same ids both ways; a SentencePiece one (LLaMA, Vicuna) does not: it starts every piece it
is given with a word boundary. So the plugin renders chats itself (`renderer.LyricsRenderer`,
`--tokenizer-mode lyrics`), with the functions `lyrics serve` uses:

    messages --chat_turns--> system, turns --build_conversation--> dialogue (image placeholder,
    regions) --LyricsProcessor.encode--> ids

with two differences that vLLM's multimodal processing undoes: the image is the one `<image>` token
vLLM expects (the processor's prompt update puts the image tokens there), and the refiner's
spatial text is not in it (the prompt update puts it after the image tokens; the processor
tokenises that line as a piece of its own, `LyricsProcessor._spatial_line`, so the ids are equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from lyrics.inference.inputs import InputError
from lyrics.inference.pipeline import ChatRequest, build_conversation
from lyrics.inference.schemas import Message, chat_turns


def one_image_token(ids: Sequence[int], image_token_id: int, num_image_tokens: int) -> list[int]:
    """`ids` with each run of `num_image_tokens` image tokens (an expanded `<image>`) as one token."""
    out: list[int] = []
    run = 0
    for token in ids:
        if token == image_token_id:
            run += 1
            if run == 1:
                out.append(token)
            if run == num_image_tokens:
                run = 0
        else:
            if run:
                raise ValueError(f"an image token run of {run}, not {num_image_tokens}")
            out.append(token)
    if run:
        raise ValueError(f"an image token run of {run}, not {num_image_tokens}")
    return out


def parse_messages(messages: Sequence[Any]) -> list[Message]:
    """vLLM's chat messages (dicts) as `lyrics serve`'s `Message`s; a bad one is an `InputError`
    naming its field (`messages[i].content...`)."""
    parsed = []
    for i, message in enumerate(messages):
        try:
            parsed.append(Message.model_validate(message))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ()))
            raise InputError(f"messages[{i}]{where}: {err.get('msg', 'invalid')} (the Lyrics model takes text and image_url parts)",
                             param=f"messages[{i}]{where}") from None  # fmt: skip
    return parsed


def chat_prompt_ids(
    processor: Any,
    messages: Sequence[Any],
    image_size: tuple[int, int] | None,
    regions: list[Any] | None,
    region_format: str,
    coordinate_format: str,
    spatial_style: str,
) -> list[int]:
    """The prompt ids of a chat request for vLLM: `lyrics serve`'s, with the image as one `<image>`
    token and without the spatial text (see the module docstring). `image_size`: the request's
    image's (width, height), None without one. Bad input: `InputError` naming the field."""
    system, turns, images = chat_turns(parse_messages(messages), processor.config.image_token)
    if bool(images) != (image_size is not None):
        raise InputError("the request's image could not be matched to its message", param="messages")
    request = ChatRequest(image=None, prompt=turns[-1]["value"], history=turns[:-1] or None, regions=regions, region_format=region_format, system=system)
    dialogue = build_conversation(request, image_size, processor.config.image_token, coordinate_format, spatial_style)
    limit = processor.config.max_length
    try:
        ids = processor.with_system(system).encode(dialogue, None, add_generation_prompt=True)[0]
    except ValueError as exc:
        raise InputError(str(exc), param="messages") from None
    if len(ids) >= limit:
        raise InputError(f"the prompt is {len(ids)}+ tokens, at or over the processor's max_length={limit}", param="messages", code="context_length_exceeded")
    return one_image_token(ids, processor.image_token_id, processor.config.num_image_tokens)
