"""The Lyrics chat renderer for vLLM 0.32 (`--tokenizer-mode lyrics`): chat requests -> the prompt ids
`lyrics serve` gives them (`lyrics.serving_vllm.prompt.chat_prompt_ids`), for every tokenizer.

vLLM picks a renderer by the tokenizer mode (`vllm.renderers.registry`); `register()` adds the mode
"lyrics": the checkpoint's Hugging Face tokenizer (vLLM's `CachedHfTokenizer`, as mode "hf") and this
renderer. vLLM still parses the messages itself (`parse_chat_messages`: it fetches and decodes the
images, and checks the per-prompt image limit); this renderer builds the ids from the request's
messages, the image's size and the request's `regions` / `region_format` (`mm_processor_kwargs`),
and the plugin's processor then puts the image tokens and the refiner's spatial text in place of
the `<image>` token. No jinja template is used: the processor's rules are the template.
"""

from __future__ import annotations

from typing import Any

from vllm.exceptions import VLLMValidationError
from vllm.renderers.base import BaseRenderer
from vllm.renderers.chat_utils import parse_chat_messages, parse_chat_messages_async
from vllm.renderers.inputs.preprocess import parse_dec_only_prompt

from lyrics.inference.inputs import InputError
from lyrics.serving_vllm.prompt import chat_prompt_ids
from lyrics.serving_vllm.regions import region_options


class LyricsRenderer(BaseRenderer):
    """Chat messages -> (vLLM's parsed conversation, a token prompt with the request's images)."""

    def render_messages(self, messages: list[Any], params: Any):
        conversation, mm_data, mm_uuids = parse_chat_messages(
            messages, self.model_config, content_format="string", media_io_kwargs=params.media_io_kwargs,
            mm_processor_kwargs=params.mm_processor_kwargs,
        )  # fmt: skip
        return conversation, self._prompt(messages, params, mm_data, mm_uuids)

    async def render_messages_async(self, messages: list[Any], params: Any):
        conversation, mm_data, mm_uuids = await parse_chat_messages_async(
            messages, self.model_config, content_format="string", media_io_kwargs=params.media_io_kwargs,
            mm_processor_kwargs=params.mm_processor_kwargs,
        )  # fmt: skip
        return conversation, self._prompt(messages, params, mm_data, mm_uuids)

    def _prompt(self, messages: list[Any], params: Any, mm_data: Any, mm_uuids: Any) -> dict:
        from lyrics.serving_vllm.model import _front_end

        options = params.chat_template_kwargs or {}
        if options.get("continue_final_message") or options.get("add_generation_prompt") is False:
            raise VLLMValidationError("the Lyrics model answers the last user message: add_generation_prompt must be true "
                                      "and continue_final_message false", parameter="chat_template_kwargs")  # fmt: skip
        front = _front_end(str(self.model_config.model), self.model_config.hf_config)
        images = list((mm_data or {}).get("image") or [])
        size = None
        if images:
            if not hasattr(images[0], "size") or not hasattr(images[0], "mode"):
                raise VLLMValidationError("the Lyrics model takes images (image_url parts), not image embeddings", parameter="messages")
            size = tuple(images[0].size)
        try:
            regions, region_format = region_options(params.mm_processor_kwargs)
            ids = chat_prompt_ids(front.processor, messages, size, regions, region_format, front.coordinate_format, front.spatial_style)
        except InputError as exc:  # vLLM answers it with a 400 naming `param`
            raise VLLMValidationError(exc.message, parameter=exc.param) from None
        prompt = parse_dec_only_prompt(ids)
        if mm_data is not None:
            prompt["multi_modal_data"] = mm_data
        if mm_uuids is not None:
            prompt["multi_modal_uuids"] = mm_uuids
        return prompt
