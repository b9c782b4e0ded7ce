"""Tiny random checkpoints of the refiner's transformers models, saved in the real on-disk format.

Each builder writes `config.json` + `model.safetensors` + the processor / tokenizer files to a
directory, which the refiner then loads through the same `from_pretrained` calls it makes for the real
ids (`IDEA-Research/grounding-dino-tiny`, `syscv-community/sam-hq-vit-huge`, `facebook/sam-vit-huge`,
`openai/clip-vit-large-patch14`). Nothing is downloaded: tokenizers are built from tiny vocabularies.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

# Grounding-DINO hard-codes BERT's ids of [CLS]=101, [SEP]=102, "."=1012 and "?"=1029 to cut the
# prompt into phrases, so the tiny WordPiece vocabulary keeps those ids.
GDINO_WORDS = ["red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "star",
               "hexagon", "diamond", "cat", "dog", "traffic", "light", "a", "the", "##s", ","]
GDINO_D_MODEL = 32
SAM_CHANNELS = 32
CLIP_PROJECTION = 16


def bert_vocab() -> dict[str, int]:
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(100)] + ["[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    while len(tokens) < 1012:
        tokens.append(f"[unused{len(tokens)}]")
    tokens.append(".")
    while len(tokens) < 1029:
        tokens.append(f"[unused{len(tokens)}]")
    tokens += ["?"] + GDINO_WORDS
    return {token: i for i, token in enumerate(tokens)}


def save_grounding_dino(path: Path, max_text_len: int = 24, num_queries: int = 30, seed: int = 0) -> Path:
    from transformers import BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor, SwinConfig
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    torch.manual_seed(seed)
    vocab = bert_vocab()
    swin = SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=64, out_indices=[2, 3, 4])
    text = dict(model_type="bert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                max_position_embeddings=max_text_len + 8, vocab_size=len(vocab))
    config = GroundingDinoConfig(
        d_model=GDINO_D_MODEL, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=num_queries, encoder_n_points=2, decoder_n_points=2,
        backbone_config=swin, max_text_len=max_text_len, text_config=text,
    )
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 96, "longest_edge": 128}),
        tokenizer=BertTokenizer(vocab=vocab, do_lower_case=True),
    )
    model.save_pretrained(str(path))
    processor.save_pretrained(str(path))
    return path


def save_sam(path: Path, hq: bool, seed: int = 0) -> Path:
    from transformers import SamConfig, SamHQConfig, SamHQModel, SamHQProcessor, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(seed)
    vision = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
                  output_channels=SAM_CHANNELS, window_size=4, global_attn_indexes=[1], mlp_dim=32, num_pos_feats=16)
    prompt = dict(hidden_size=SAM_CHANNELS, image_size=64, patch_size=8)
    decoder = dict(hidden_size=SAM_CHANNELS, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16)
    if hq:
        model = SamHQModel(SamHQConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=dict(decoder, vit_dim=16)))
        processor_class = SamHQProcessor
    else:
        model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
        processor_class = SamProcessor
    processor = processor_class(image_processor=SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    model.eval().save_pretrained(str(path))
    processor.save_pretrained(str(path))
    return path


def clip_vocab() -> dict[str, int]:
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for char in string.ascii_lowercase + string.digits + ".,'-":
        tokens += [char, char + "</w>"]
    return {token: i for i, token in enumerate(tokens)}


def save_clip(path: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(seed)
    vocab = clip_vocab()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=40, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=CLIP_PROJECTION,
    )
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[]),
    )
    model.save_pretrained(str(path))
    processor.save_pretrained(str(path))
    return path
