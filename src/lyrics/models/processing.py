"""Stage-2 inputs: conversations -> LLM token ids with the image placeholder expanded, and labels on
the responses only (paper section 3.3).

The processor renders a LLaVA-style conversation (`[{"from": "human", "value": "<image>..."},
{"from": "gpt", "value": ...}, ...]`) with the LLM's own chat template (`apply_chat_template`, e.g.
ChatML for SmolLM2) or with Vicuna v1.1's (the paper's LLM, whose tokenizer has none), tokenises each
turn separately so the loss can be restricted to the assistant's answers, and expands every `<image>` placeholder
into `num_image_tokens` copies of the image token id: the model later writes the soft visual tokens
(projected MQ-Former query outputs) of the images, in order, into exactly those positions. Fixed-length
expansion keeps batching, KV-cached generation and beam search plain transformers; several images per
conversation give in-context few-shot prompts (paper Figure 5).

With `spatial_text_in_prompt` the refiner's textual spatial representation is added after the image
(docs/design.md, "Ambiguities in the paper and the reading we take": the paper is ambiguous; `lyrics ablate` measures both).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


def pad_local_features(
    features: Sequence[torch.Tensor], feature_dim: int | None = None, max_objects: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch per-image `(K_i, D)` object features into `(B, K_max, D)` plus a `(B, K_max)` mask (1 =
    object), keeping at most `max_objects` per image: the grounding queries' cross-attention input.

    Here, in the model's input layer, because the processor, the training collator and the vLLM
    plugin all batch the refiner's features this way (the refiner stores them unpadded). Images with
    no object contribute an all-zero row with mask 0; the MQ-Former handles it.
    """
    if not features and feature_dim is None:
        raise ValueError("cannot batch an empty list of local features without feature_dim")
    dim = feature_dim if feature_dim is not None else features[0].shape[1]
    counts = [min(f.shape[0], max_objects) if max_objects is not None else f.shape[0] for f in features]
    k_max = max(counts, default=0)
    batch = torch.zeros(len(features), k_max, dim)
    mask = torch.zeros(len(features), k_max, dtype=torch.long)
    for i, (feat, k) in enumerate(zip(features, counts)):
        if feat.shape[1] != dim:
            raise ValueError(f"local features of item {i} have width {feat.shape[1]}, expected {dim}")
        batch[i, :k] = feat[:k].float()
        mask[i, :k] = 1
    return batch, mask


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
CHAT_KINDS = ("auto", "tokenizer", "vicuna")


@dataclass
class ChatTemplate:
    """How turns become text.

    kind:
        "vicuna": Vicuna v1.1, "{system} USER: {q} ASSISTANT: {a}</s>USER: ..." (the paper's LLM);
        "tokenizer": the tokenizer's own chat template (`apply_chat_template`), which an
        instruction-tuned LLM was trained with; "auto": "tokenizer" when the tokenizer has a chat
        template, else "vicuna" (resolved when the processor is built, and saved resolved).
    system: the system prompt. None: the format's default (Vicuna's line; whatever the tokenizer's
        template writes when no system message is given). A string: that text ("" drops Vicuna's
        line; for a tokenizer template it is an empty system message, which replaces a default such
        as SmolLM2's with the shortest the template allows).
    """

    kind: str = "auto"
    system: str | None = None
    user: str = "USER:"
    assistant: str = "ASSISTANT:"
    separator: str = " "

    def __post_init__(self) -> None:
        if self.kind not in CHAT_KINDS:
            raise ValueError(f"chat template kind must be one of {CHAT_KINDS}, got {self.kind!r}")


@dataclass
class ProcessorConfig:
    num_image_tokens: int
    image_token: str = "<image>"
    coordinate_format: str = "int1000"
    spatial_text_in_prompt: bool = False
    spatial_prefix: str = "Objects:"
    max_length: int = 512
    template: ChatTemplate = field(default_factory=ChatTemplate)
    # What the model's visual side takes (set from the model config, see `for_model`):
    local_feature_size: int = 0  # refiner features per object; 0 = no grounding queries
    max_objects: int | None = None
    instruction_aware: bool = False  # the MQ-Former also reads the instruction (needs mqformer_tokenizer)
    max_instruction_tokens: int = 64


def load_image_processor(path: str | Path) -> Any:
    """`AutoImageProcessor.from_pretrained`, on the PIL backend when torchvision is not installed
    (transformers' default image processors need it; the PIL ones give the same pixels)."""
    import importlib.util

    from transformers import AutoImageProcessor

    if importlib.util.find_spec("torchvision") is None:
        return AutoImageProcessor.from_pretrained(str(path), backend="pil")
    return AutoImageProcessor.from_pretrained(str(path))


class LyricsProcessor:
    """Tokenizer (+ optional image processor) and the rules that turn conversations into model inputs.

    Args:
        tokenizer: the LLM's tokenizer; `<image>` is added as a special token when missing (resize the
            LLM's embeddings afterwards: `LyricsForConditionalGeneration` does it).
        image_processor: a transformers image processor for the image encoder (e.g. CLIPImageProcessor).
        config: `ProcessorConfig`.
    """

    def __init__(self, tokenizer: Any, config: ProcessorConfig, image_processor: Any = None, mqformer_tokenizer: Any = None):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.mqformer_tokenizer = mqformer_tokenizer
        if config.template.kind == "auto":
            kind = "tokenizer" if getattr(tokenizer, "chat_template", None) else "vicuna"
            config = replace(config, template=replace(config.template, kind=kind))
        elif config.template.kind == "tokenizer" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat template kind 'tokenizer' but the LLM's tokenizer has no chat_template")
        self.config = config
        if config.image_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([config.image_token], special_tokens=True)
        self.image_token_id = tokenizer.convert_tokens_to_ids(config.image_token)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    # --- rendering ------------------------------------------------------------------------------
    def _human(self, text: str, spatial: str | Iterator[str] | None) -> str:
        """A human turn with the spatial text after its image placeholder(s): one text for the turn's
        first placeholder, or (an iterator, for several images) each placeholder's own text in turn.
        An image without objects (empty spatial text) gets no line, as in training."""
        token = self.config.image_token
        if not self.config.spatial_text_in_prompt or spatial is None or token not in text:
            return text
        line = lambda s: f"{token}\n{self.config.spatial_prefix} {s}\n" if s else token  # noqa: E731
        if isinstance(spatial, str):
            return text.replace(token, line(spatial), 1)
        parts = text.split(token)
        return parts[0] + "".join(line(next(spatial)) + part for part in parts[1:])

    def with_system(self, system: str | None) -> LyricsProcessor:
        """This processor with `system` replacing its chat template's system prompt (a request's
        own); itself for None."""
        if system is None:
            return self
        proc = copy.copy(self)
        proc.config = replace(self.config, template=replace(self.config.template, system=system))
        return proc

    def segments(
        self, conversations: list[dict[str, str]], spatial_text: str | Sequence[str] | None = None, add_generation_prompt: bool = False
    ) -> list[tuple[str, bool]]:
        """The conversation as (text, is_response) pieces; responses carry the loss. `spatial_text` is
        one image's text, or a sequence with one text per `<image>` placeholder in order (few-shot)."""
        messages = []
        spatial = spatial_text if spatial_text is None or isinstance(spatial_text, str) else iter(spatial_text)
        if not isinstance(spatial, (str, type(None))):
            count = sum(t.get("value", "").count(self.config.image_token) for t in conversations if t.get("from") in ("human", "user") and isinstance(t.get("value"), str))
            if count != len(spatial_text):  # type: ignore[arg-type]
                raise ValueError(f"the conversation holds {count} {self.config.image_token} placeholders but {len(spatial_text)} spatial texts were given")  # type: ignore[arg-type]
        for turn in conversations:
            role, value = turn.get("from"), turn.get("value")
            if not isinstance(value, str):
                raise ValueError(f"conversation turn {turn!r} has no text 'value'")
            if role in ("human", "user"):
                messages.append({"role": "user", "content": self._human(value, spatial)})
            elif role in ("gpt", "assistant"):
                messages.append({"role": "assistant", "content": value})
            else:
                raise ValueError(f"conversation turn has unknown role {role!r} (expected human/gpt)")
        if add_generation_prompt and (not messages or messages[-1]["role"] != "user"):
            raise ValueError("a generation prompt must end with a human turn")
        if self.config.template.kind == "tokenizer":
            return self._template_segments(messages, add_generation_prompt)
        t = self.config.template
        system = VICUNA_SYSTEM if t.system is None else t.system
        pieces: list[tuple[str, bool]] = [(system + t.separator if system else "", False)]
        for message in messages:
            if message["role"] == "user":
                pieces.append((f"{t.user} {message['content']}{t.separator}{t.assistant}", False))
            else:
                pieces.append((f" {message['content']}", True))  # `encode` appends eos
        return pieces

    def _template_segments(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[tuple[str, bool]]:
        """Pieces of the tokenizer's chat template, found by rendering the conversation one turn
        longer each time: a user turn's piece ends with the assistant's opening (the generation
        prompt), an assistant turn's piece is its answer up to and including the end-of-turn token
        (supervised); what the template writes after that token (a newline in ChatML) is not."""
        system = self.config.template.system
        head = [{"role": "system", "content": system}] if system is not None else []

        def render(upto: int, generation: bool) -> str:
            if not head and upto == 0:
                return ""
            return self.tokenizer.apply_chat_template(head + messages[:upto], tokenize=False, add_generation_prompt=generation)

        pieces: list[tuple[str, bool]] = []
        done = render(0, False)
        if done:
            pieces.append((done, False))
        eos = self.tokenizer.eos_token
        for i, message in enumerate(messages):
            user = message["role"] == "user"
            text = render(i + 1, user)
            if not text.startswith(done):
                raise ValueError("the tokenizer's chat template does not render a conversation as a prefix of its continuation")
            piece = text[len(done) :]
            if user:
                pieces.append((piece, False))
            else:
                end = piece.rfind(eos) + len(eos) if eos and eos in piece else len(piece)
                pieces += [(piece[:end], True), (piece[end:], False)]
            done = text
        return pieces

    def _encode_text(self, text: str, image_tokens: int | None = None) -> list[int]:
        """Token ids of `text`, with every `<image>` expanded to `image_tokens` image-token ids
        (default `num_image_tokens`; the vLLM plugin asks for 1, since vLLM expands it itself)."""
        count = self.config.num_image_tokens if image_tokens is None else image_tokens
        ids: list[int] = []
        parts = text.split(self.config.image_token)
        for i, part in enumerate(parts):
            for piece in self._spatial_line(part) if i else (part,):
                if piece:
                    ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
            if i < len(parts) - 1:
                ids += [self.image_token_id] * count
        return ids

    def _spatial_line(self, after_image: str) -> tuple[str, str]:
        """The text after an `<image>` as (its spatial line, the rest): `_human`'s line
        "\\n{spatial_prefix} {spatial text}\\n" is tokenised as a piece of its own, so that an image and
        its line have the same ids whatever text follows (the vLLM plugin puts them in place of the
        `<image>` of a prompt rendered without them). A byte-level BPE tokenizer (SmolLM2) gives the
        same ids either way (its pre-tokenizer splits there: checked on the quickstart's data,
        docs/serving.md); a SentencePiece one (LLaMA, Vicuna) would otherwise merge the line's end
        into what follows."""
        head = f"\n{self.config.spatial_prefix} "
        if not self.config.spatial_text_in_prompt or not after_image.startswith(head):
            return after_image, ""
        end = after_image.find("\n", len(head))
        return (after_image[: end + 1], after_image[end + 1 :]) if end >= 0 else (after_image, "")

    def encode(
        self, conversations: list[dict[str, str]], spatial_text: str | Sequence[str] | None = None, add_generation_prompt: bool = False
    ) -> tuple[list[int], list[int]]:
        """`(input_ids, labels)`: labels are the ids of the responses (and their eos), -100 elsewhere.
        `spatial_text`: as in `segments` (one text, or one per placeholder)."""
        # A tokenizer's chat template writes the tokens its LLM starts with; Vicuna's text starts with bos.
        vicuna = self.config.template.kind == "vicuna"
        bos = [self.tokenizer.bos_token_id] if vicuna and self.tokenizer.bos_token_id is not None else []
        ids, labels = list(bos), [IGNORE_INDEX] * len(bos)
        for text, is_response in self.segments(conversations, spatial_text, add_generation_prompt):
            piece = self._encode_text(text)
            if is_response and vicuna:
                piece = piece + [self.tokenizer.eos_token_id]
            ids += piece
            labels += piece if is_response else [IGNORE_INDEX] * len(piece)
        images = ids.count(self.image_token_id)
        if images % self.config.num_image_tokens:
            raise ValueError(f"the text holds {self.config.image_token} token ids outside an expanded placeholder")
        limit = self.config.max_length
        if len(ids) > limit:
            supervised = any(v != IGNORE_INDEX for v in labels)
            ids, labels = ids[:limit], labels[:limit]
            if (supervised and all(v == IGNORE_INDEX for v in labels)) or ids.count(self.image_token_id) != images:
                raise ValueError(f"the prompt alone is longer than max_length={limit}")
        return ids, labels

    # --- batching -------------------------------------------------------------------------------
    def pad(self, rows: list[list[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), value, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if left else slice(0, len(r))
            out[i, span] = torch.tensor(r, dtype=torch.long)
            mask[i, span] = 1
        return out, mask

    def training_batch(self, conversations: list[list[dict[str, str]]], spatial_texts: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        """Right-padded `input_ids`, `attention_mask`, `labels` for a list of conversations."""
        spatial_texts = spatial_texts or [None] * len(conversations)
        encoded = [self.encode(c, s) for c, s in zip(conversations, spatial_texts)]
        input_ids, attention_mask = self.pad([i for i, _ in encoded], self.tokenizer.pad_token_id)
        labels, _ = self.pad([lab for _, lab in encoded], IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def generation_batch(self, conversations: list[list[dict[str, str]]], spatial_texts: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        """Left-padded prompts ending with the assistant's opening ("ASSISTANT:") for batched generation."""
        spatial_texts = spatial_texts or [None] * len(conversations)
        rows = [self.encode(c, s, add_generation_prompt=True)[0] for c, s in zip(conversations, spatial_texts)]
        input_ids, attention_mask = self.pad(rows, self.tokenizer.pad_token_id, left=True)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    @staticmethod
    def config_for(model_config: Any, **overrides: Any) -> ProcessorConfig:
        """The processor settings a `LyricsConfig` implies (image tokens, coordinates, visual inputs)."""
        values = dict(
            num_image_tokens=model_config.num_image_tokens,
            image_token=model_config.image_token,
            coordinate_format=model_config.refiner_config.coordinate_format,
            spatial_text_in_prompt=model_config.spatial_text_in_prompt,
            local_feature_size=model_config.mqformer_config.local_feature_size if model_config.mqformer_config.num_grounding_query_tokens else 0,
            max_objects=model_config.refiner_config.max_objects,
            instruction_aware=model_config.instruction_aware,
        )
        values.update(overrides)
        return ProcessorConfig(**values)

    def sync_with(self, model_config: Any) -> "LyricsProcessor":
        """Take the visual-input settings (local features, instruction awareness) from the model's
        config, the source of truth, keeping the text settings; returns self."""
        from dataclasses import replace

        implied = self.config_for(model_config)
        if implied.num_image_tokens != self.config.num_image_tokens:
            raise ValueError(
                f"the processor expands <image> into {self.config.num_image_tokens} tokens, the model makes {implied.num_image_tokens}"
            )
        self.config = replace(
            self.config,
            local_feature_size=implied.local_feature_size,
            max_objects=implied.max_objects,
            instruction_aware=implied.instruction_aware,
        )
        return self

    def instructions(self, conversation: list[dict[str, str]]) -> list[str]:
        """Per `<image>` placeholder, in order: the text of the human turn that holds it, placeholder
        removed - what an instruction-aware MQ-Former reads beside that image."""
        token = self.config.image_token
        out = []
        for turn in conversation:
            value = turn.get("value", "")
            if turn.get("from") in ("human", "user") and token in value:
                text = " ".join(value.replace(token, " ").split())
                out += [text] * value.count(token)
        return out

    def visual_inputs(
        self,
        images: list[Any] | None = None,
        records: list[Any] | None = None,
        instructions: list[str] | None = None,
        image_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs of the images of a batch, in placeholder order: `pixel_values` (from PIL
        images, unless `pixel_values` or `image_embeds` are given), the refiner's `local_features` and mask, and the
        instructions for an instruction-aware MQ-Former. One place, so training, evaluation and serving
        build them the same way."""
        out: dict[str, torch.Tensor] = {}
        given = next((x for x in (images, pixel_values, image_embeds) if x is not None), None)
        count = len(given) if given is not None else 0
        if count == 0:
            return out
        if image_embeds is not None:
            out["image_embeds"] = image_embeds
        elif pixel_values is not None:
            out["pixel_values"] = pixel_values
        else:
            out["pixel_values"] = self.pixel_values(images)
        if self.config.local_feature_size:
            dim = self.config.local_feature_size
            feats = [r.local_features.float() if r is not None else torch.zeros(0, dim) for r in (records or [None] * count)]
            out["local_features"], out["local_attention_mask"] = pad_local_features(feats, dim, self.config.max_objects)
        if self.config.instruction_aware:
            if self.mqformer_tokenizer is None:
                raise ValueError("an instruction-aware model needs the processor's mqformer_tokenizer")
            texts = instructions if instructions is not None else [""] * count
            if len(texts) != count:
                raise ValueError(f"{len(texts)} instructions for {count} images")
            enc = self.mqformer_tokenizer(
                texts, padding=True, truncation=True, max_length=self.config.max_instruction_tokens, return_tensors="pt"
            )
            out["qformer_input_ids"], out["qformer_attention_mask"] = enc["input_ids"], enc["attention_mask"]
        return out

    def pixel_values(self, images: list[Any]) -> torch.Tensor:
        if self.image_processor is None:
            raise ValueError("this processor has no image processor; give image features instead")
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # --- persistence ------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path / "tokenizer"))
        if self.image_processor is not None:
            self.image_processor.save_pretrained(str(path / "image_processor"))
        if self.mqformer_tokenizer is not None:
            self.mqformer_tokenizer.save_pretrained(str(path / "mqformer_tokenizer"))
        (path / "processor_config.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "LyricsProcessor":
        from transformers import AutoTokenizer

        path = Path(path)
        config_file = path / "processor_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} is missing: not a saved Lyrics processor")
        data = json.loads(config_file.read_text())
        # Processors saved before chat templates existed rendered every conversation as Vicuna's.
        data["template"] = ChatTemplate(**{"kind": "vicuna", **data.get("template", {})})
        image_processor = load_image_processor(path / "image_processor") if (path / "image_processor").is_dir() else None
        mq_tok = AutoTokenizer.from_pretrained(str(path / "mqformer_tokenizer")) if (path / "mqformer_tokenizer").is_dir() else None
        return cls(AutoTokenizer.from_pretrained(str(path / "tokenizer")), ProcessorConfig(**data), image_processor, mq_tok)
