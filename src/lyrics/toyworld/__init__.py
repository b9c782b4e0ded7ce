"""The toy world: procedurally drawn scenes that exercise the whole Lyrics pipeline on a CPU.

    spec        the vocabulary (shapes, colours, sizes, zero-shot pairs)
    scenes      drawing a scene and its ground truth (tags, boxes, visible masks, draw order)
    language    relations, referring expressions and captions (the definitions answers follow)
    questions   VQA, multiple choice, MME yes/no pairs, referential dialogue
    pope        POPE questions with random / popular / adversarial negatives
    annotate    everything about one image, in one record
    layouts     the official dataset layouts (COCO, VQAv2, RefCOCO, POPE, MME, A-OKVQA, Shikra)
    world       `generate_world`: all splits, written atomically, with the `world.json` manifest
    vision      classical shape analysis of a toy scene's pixels (colour components, template fits)
    refiner_backend  the refiner's "toy" tagger, detector and segmenter over `vision`
    standins    the frozen pretrained parts: a tiny CLIP and a WordPiece vocabulary trained on the
                world, and SmolLM2-135M-Instruct (converted from GGUF) as the LLM
"""
