"""Tiny configurations shared by the tests (transformers-tester style: small widths, real classes).

Everything here is built locally and saved in the real on-disk formats, then loaded back through
the same `from_pretrained` paths a user takes with real checkpoint ids.
"""

from __future__ import annotations

import torch

from lyrics.configuration import MQFormerConfig

HIDDEN = 32
IMAGE_WIDTH = 24
LOCAL_WIDTH = 20
# local features of the `tiny` preset: toy detector 24 + box 4 + toy segmenter 8
LOCAL_FEATURES = 36
VOCAB = 99

# Blip2QFormerConfig fields shared by the BLIP-2 and MQ-Former tiny configs.
TINY_QFORMER = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    vocab_size=VOCAB,
)
TINY_VISION = dict(hidden_size=IMAGE_WIDTH, num_hidden_layers=1, num_attention_heads=2, intermediate_size=30, image_size=30, patch_size=6)
TINY_LLAMA = dict(
    model_type="llama", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=20, vocab_size=100
)
# Special-token ids inside the tiny 99-token vocabulary.
TINY_TOKEN_IDS = dict(pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3, dec_token_id=96, bos_token_id=97, mlm_token_id=98)


def mqformer_config(**overrides) -> MQFormerConfig:
    values = dict(
        TINY_QFORMER,
        encoder_hidden_size=IMAGE_WIDTH,
        local_feature_size=LOCAL_WIDTH,
        num_query_tokens=4,
        num_grounding_query_tokens=3,
        contrastive_dim=16,
        **TINY_TOKEN_IDS,
    )
    values.update(overrides)
    return MQFormerConfig(**values)


def image_embeds(batch: int = 2, tokens: int = 26, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, tokens, IMAGE_WIDTH, generator=torch.Generator().manual_seed(seed))


def local_features(batch: int = 2, objects: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, objects, LOCAL_WIDTH, generator=torch.Generator().manual_seed(seed))


def text_ids(batch: int = 2, length: int = 7, seed: int = 2) -> torch.Tensor:
    return torch.randint(4, 96, (batch, length), generator=torch.Generator().manual_seed(seed))


def blip2_config(text_input: bool = True):
    from transformers import Blip2Config

    qformer = dict(TINY_QFORMER, encoder_hidden_size=IMAGE_WIDTH, use_qformer_text_input=text_input)
    return Blip2Config(
        vision_config=TINY_VISION, qformer_config=qformer, text_config=TINY_LLAMA, num_query_tokens=4, image_token_index=99
    )


def save_transformers_blip2(kind: str, path) -> "torch.nn.Module":
    """Save a randomly initialised transformers BLIP-2-family model of `kind` to `path` and return it.

    kinds: Blip2Model, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2QFormerModel,
    InstructBlipForConditionalGeneration.
    """
    import transformers

    torch.manual_seed(1234)
    if kind == "Blip2QFormerModel":
        from transformers import Blip2QFormerConfig

        model = transformers.Blip2QFormerModel(
            Blip2QFormerConfig(**TINY_QFORMER, encoder_hidden_size=IMAGE_WIDTH, use_qformer_text_input=True)
        )
    elif kind == "InstructBlipForConditionalGeneration":
        from transformers import InstructBlipConfig

        qformer = dict(TINY_QFORMER, encoder_hidden_size=IMAGE_WIDTH)
        config = InstructBlipConfig(
            vision_config=TINY_VISION, qformer_config=qformer, text_config=TINY_LLAMA, num_query_tokens=4, image_token_index=99
        )
        model = transformers.InstructBlipForConditionalGeneration(config)
    else:
        model = getattr(transformers, kind)(blip2_config(text_input=kind != "Blip2Model"))
    # BLIP-2's queries and biases start at zero; random values make the equivalence tests bite.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "query_tokens" or name.endswith(".bias"):
                param.normal_(0, 0.5)
    model.eval()
    model.save_pretrained(str(path))
    return model


# --- stage-1 / stage-2 helpers ----------------------------------------------------------------------

TOY_WORDS = (
    "a an the is are of on to in and there what color how many left right above below next small large "
    "red green blue yellow purple orange circle square triangle star hexagon diamond picture image objects"
).split()


def mqformer_tokenizer():
    """A lower-casing BERT WordPiece tokenizer over toy words, digits and punctuation, prepared with the
    MQ-Former's special tokens (the same path as bert-base-uncased + prepare_mqformer_tokenizer)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lyrics.tokenization import prepare_mqformer_tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TOY_WORDS, *"(),:[].?", *"0123456789"]
    vocab += [f"##{d}" for d in "0123456789"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    return prepare_mqformer_tokenizer(fast)


def lyrics_config(tokenizer=None, **overrides):
    """The `tiny` preset with the MQ-Former vocabulary of `tokenizer` (default: `mqformer_tokenizer()`)."""
    from lyrics.presets import load_config
    from lyrics.tokenization import mqformer_token_ids

    tokenizer = tokenizer or mqformer_tokenizer()
    mq = {"mqformer_config": dict(mqformer_token_ids(tokenizer), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)}
    config = load_config("tiny", mq)
    for key, value in overrides.items():
        target = config
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return config


def refiner_record(image_id="img", objects=3, feature_dim=None, seed=0):
    from lyrics.refiner.record import RefinedObject, RefinerRecord
    from lyrics.refiner.spatial import format_spatial

    feature_dim = feature_dim or LOCAL_FEATURES
    g = torch.Generator().manual_seed(seed)
    names = ["red circle", "blue square", "green star", "yellow triangle", "purple hexagon"]
    objs = []
    for k in range(objects):
        x, y = (torch.rand(2, generator=g) * 0.6).tolist()
        box = (round(x, 3), round(y, 3), round(x + 0.3, 3), round(y + 0.3, 3))
        objs.append(RefinedObject(names[(k + seed) % len(names)], 0.9 - 0.1 * k, tuple(v * 224 for v in box), box))
    return RefinerRecord(
        image_id=image_id,
        width=224,
        height=224,
        tags=[o.tag for o in objs],
        objects=objs,
        spatial_text=format_spatial((o.tag, o.box_norm) for o in objs),
        local_features=torch.randn(objects, feature_dim, generator=g),
    )


def llm_tokenizer():
    """A word-level LLaMA-style tokenizer (<s>, </s>, <pad>, <unk>) over toy words and the numbers
    0-999, so coordinates are single tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", *TOY_WORDS, "user", "assistant", "chat", "between", "curious",
             "artificial", "intelligence", "gives", "helpful", "detailed", "polite", "answers", "questions",
             "user's", "yes", "no", "br", "t", "bbox", "box", "write", "short", "description", "for",
             *"():,.?<>/'", *[str(i) for i in range(1000)]]  # fmt: skip
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def sentencepiece_tokenizer(path):
    """A LLaMA SentencePiece tokenizer as LLaMA-1/2 and Vicuna ship it (only `tokenizer.model`, BPE
    with byte fallback, <unk>/<s>/</s> = 0/1/2), trained here on toy sentences and loaded through
    transformers' `LlamaTokenizer` conversion, as `from_pretrained` loads Vicuna."""
    import json
    from pathlib import Path

    import sentencepiece as spm
    from transformers import AutoTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sentences = [
        "A chat between a curious user and an artificial intelligence assistant.",
        "USER: What colour is the circle? ASSISTANT: red. Is there a red square? yes, no.",
        "How many objects are there? Where is it? Give its box. Answer in one word.",
        "Objects: red circle (120,340),(560,780) left of the blue square.",
    ]  # fmt: skip
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 40), model_prefix=str(path / "tokenizer"), vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(str(path))


def save_llm(path, tokenizer, seed=0, **sizes):
    """A tiny LlamaForCausalLM + its tokenizer saved in the real format; `sizes` override its widths."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    widths = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **{**widths, **sizes},
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return model


def save_vision(path, seed=0):
    """A tiny CLIPVisionModel + CLIPImageProcessor (PIL backend) saved in the real format."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8))
    model.save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))
    return model


RECIPE_SHAPES = [("red", "circle"), ("blue", "square"), ("green", "circle"), ("yellow", "square")]


def recipe_world(root):
    """What the recipes train on in tests and `bench/gpu.py`'s end-to-end check: 8 drawn images with
    COCO captions (`captions.json`), a toy-refiner store, and tiny CLIP / MQ-Former tokenizer / LLaMA
    checkpoints in their real formats. Returns `root`."""
    import json
    from pathlib import Path

    from PIL import Image, ImageDraw

    from lyrics.presets import load_config
    from lyrics.refiner.job import run_job
    from lyrics.toyworld.spec import COLOURS

    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": []}
    for i in range(8):
        colour, shape = RECIPE_SHAPES[i % 4]
        img = Image.new("RGB", (64, 64), (225, 225, 220))
        draw = ImageDraw.Draw(img)
        box = (8 + 3 * i, 10, 40 + 3 * i, 42)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        img.save(images / f"{i:03d}.png")
        coco["images"].append({"id": i, "file_name": f"{i:03d}.png", "width": 64, "height": 64})
        coco["annotations"].append({"id": i, "image_id": i, "caption": f"a {colour} {shape}"})
    (root / "captions.json").write_text(json.dumps(coco))
    refiner = load_config("tiny").refiner_config
    refiner.tagger = "toy"
    run_job(images, root / "store", refiner, progress=False)
    save_vision(root / "vision")
    mqformer_tokenizer().save_pretrained(str(root / "mq_tokenizer"))
    save_llm(root / "llm", llm_tokenizer())
    return root

