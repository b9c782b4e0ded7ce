"""`lyrics demo-ui`: a web page to show a checkpoint to people (gradio).

Upload an image: the refiner runs at once and its tags and boxes are drawn. Drag on the image to draw
regions; they are numbered on the image in drawing order, and region k fills the question's k-th
`<region>` (a question without one gets one per box: `lyrics.inference.regions`, the rule every
surface follows). Ask questions in the chat (multi-turn; clear and redraw the boxes between turns):
the answer streams in, and the picture is redrawn with the refiner's objects and the answer's boxes
(magenta, numbered). The details panel lists the regions asked about, the answer's boxes, the tags
and the refiner's objects, all in pixels of the uploaded image.

Drawing is `gradio_image_annotation.image_annotator` (pinned in the `serve` extra). It keeps boxes in
the pixels of its display with the display's scale, and its `preprocess_boxes` divides by that scale,
so regions reach the model in pixels of the original image whatever size the page shows it at. Its
events run with `preprocess=False`: the image stays the uploaded file (gradio still checks that it
is an upload) and is decoded once, by the pipeline, with the pixel limit checked from the header and
mode and EXIF orientation handled as in training; the component's own preprocessing would decode it
without that limit and re-encode a JPEG.

The page must never reach the internet: analytics and hub telemetry are switched off before gradio
is imported, the theme uses system fonts (no web fonts), server-side rendering (a Node process) is
off, and only uploads (bounded by `max_file_size` and the pixel limit) come in. The annotator's
bundle loads no remote script, style or font (its fonts are inline `data:` URLs); its share button,
the one part that would upload to huggingface.co, is off.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

for _name, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                      ("GRADIO_TELEMETRY_ENABLED", "False"), ("DO_NOT_TRACK", "1")):  # fmt: skip
    os.environ.setdefault(_name, _value)

from PIL import Image  # noqa: E402

from lyrics.inference.inputs import InputError  # noqa: E402
from lyrics.inference.pipeline import LyricsPipeline, PipelineResult  # noqa: E402

CSS = "#picture img { object-fit: contain; }"
# The annotator's `orientation` (quarter turns clockwise, its rotate buttons) as PIL transposes.
TURNS = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_90}
Region = tuple[float, float, float, float]


def details(result: PipelineResult | None, record=None) -> dict[str, Any]:
    """The details panel: after an answer, the regions it was asked about (the pixel boxes the
    pipeline received) and the boxes it answered with, first; then what the refiner found."""
    record = result.record if result is not None else record
    out: dict[str, Any] = {}
    if result is not None:
        out["regions"] = [{"region": k, "box": list(box)} for k, box in enumerate(result.regions, 1)]
        out["answer_boxes"] = [box.to_dict() for box in result.boxes]
    out["tags"] = list(record.tags) if record is not None else []
    out["refiner_objects"] = [{k: v for k, v in o.to_dict().items() if k != "mask_rle"} for o in record.objects] if record is not None else []
    return out


# --- the annotator's value ({"image": FileData, "boxes": [...], "orientation": int}, unprocessed) ---
def drawn_boxes(value: dict | None) -> list[dict]:
    """The boxes in drawing order (the component lists the newest first)."""
    return list(reversed((value or {}).get("boxes") or []))


def numbered(value: dict | None) -> dict | None:
    """`value` with each box labelled by its number (1 = drawn first), the label the component draws
    on it; None when the labels are already right, or while a box is being drawn: the component adds
    it with zero area on pointer-down, and a new value then would drop the box under the pointer."""
    boxes = (value or {}).get("boxes") or []
    if any(b.get("xmax", 0) - b.get("xmin", 0) < 1 or b.get("ymax", 0) - b.get("ymin", 0) < 1 for b in boxes):
        return None
    labels = [str(len(boxes) - i) for i in range(len(boxes))]
    if [b.get("label") for b in boxes] == labels:
        return None
    return {**value, "boxes": [{**b, "label": label} for b, label in zip(boxes, labels)]}


def without_boxes(value: dict | None) -> dict | None:
    """`value` with its boxes removed (None when it has none)."""
    return {**value, "boxes": []} if value and value.get("boxes") else None


def drawn_regions(annotator: Any, value: dict | None, width: int, height: int) -> list[Region]:
    """The boxes as x1,y1,x2,y2 in pixels of the `width` x `height` original image, in drawing order.

    The component's own conversion (`preprocess_boxes`: divide by its display scale, round) is the
    one that knows the coordinates it keeps. A box drawn to the right or bottom edge can come out up
    to one display pixel past it, because the component rounds the displayed size to whole pixels:
    within that much of the edge a coordinate is the edge. A box further out stays as it is, and
    the pipeline refuses it (`lyrics.inference.regions`), as it refuses one without area."""
    try:
        raw = drawn_boxes(value)
        boxes = annotator.preprocess_boxes(raw)
        slack = [1 / float(b.get("scaleFactor", 1)) for b in raw]  # one display pixel, in image pixels
        return [
            (b["xmin"], b["ymin"], to_edge(b["xmax"], width, s), to_edge(b["ymax"], height, s)) for b, s in zip(boxes, slack)
        ]  # fmt: skip
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise InputError("a drawn box is malformed: expected numbers xmin, ymin, xmax, ymax", param="regions") from None


def to_edge(value: float, edge: int, slack: float) -> float:
    """`edge` for a coordinate at most `slack` past it (the component's rounding), else `value`."""
    return edge if edge < value <= edge + slack else value


def drawn_image(pipeline: LyricsPipeline, value: dict | None) -> Image.Image | None:
    """The uploaded image as the pipeline decodes it, turned as the user turned it in the page
    (the boxes are drawn on the turned image)."""
    if not value or not value.get("image"):
        return None
    image = pipeline.load_image(value["image"]["path"])
    turn = TURNS.get(int(value.get("orientation") or 0) % 4)
    return image.transpose(turn) if turn is not None else image


# --- the page --------------------------------------------------------------------------------------
def build_demo(pipeline: LyricsPipeline, title: str = "Lyrics", max_new_tokens: int = 128):
    """The gradio Blocks app (not launched)."""
    import gradio as gr
    from gradio_image_annotation import image_annotator

    from lyrics.inference.drawing import draw_result
    from lyrics.refiner.visualize import draw_record

    def page_error(exc: Exception):
        """A message in the page (a toast). It is shown as HTML, where `<region>` would vanish."""
        return gr.Error(html.escape(str(exc)))

    def on_image(value):
        """New image: refine it, draw its objects, start a new dialogue."""
        try:
            image = drawn_image(pipeline, value)
        except (InputError, ValueError) as exc:
            raise page_error(exc) from None
        if image is None:
            return None, {}, [], None, ""
        record = pipeline.refine([image])[0]
        return draw_record(image, record), details(None, record), [], None, ""

    def on_ask(value, question, tokens, temperature, chat, history):
        """Stream an answer about the drawn regions into the chat, then draw its boxes."""
        question = (question or "").strip()
        if not question:
            raise gr.Error("type a question first")
        try:
            image = drawn_image(pipeline, value)
            regions = drawn_regions(annotator, value, *image.size) if image is not None else []
            stream = pipeline.stream(
                image, question, history=history, regions=regions or None,
                max_new_tokens=int(tokens), do_sample=temperature > 0, temperature=temperature or 1.0,
            )  # fmt: skip
        except (InputError, ValueError) as exc:
            raise page_error(exc) from None
        try:
            yield from answer(stream, image, question, chat)
        except InputError as exc:  # what the pipeline refuses before the first token (a region outside the image, ...)
            raise page_error(exc) from None

    def answer(stream, image, question, chat):
        """The chat as the answer streams in; at the end the dialogue, the picture and the details."""
        chat = list(chat or []) + [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        text = ""
        for piece in stream:
            text += piece
            chat[-1] = {"role": "assistant", "content": text}
            yield chat, gr.skip(), gr.skip(), gr.skip(), ""
        result = stream.result
        chat[-1] = {"role": "assistant", "content": result.text}
        picture = draw_result(image, result) if image is not None else None
        yield chat, result.conversation, picture, details(result), ""

    def on_boxes(value):
        new = numbered(value)
        return gr.skip() if new is None else new

    def on_clear_boxes(value):
        new = without_boxes(value)
        return gr.skip() if new is None else new

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {title}\nUpload an image, drag on it to draw regions, then ask about it. Region 1 (the first drawn) fills the "
            "question's first `<region>`, region 2 the second; a question without `<region>` gets one per box. Boxes from "
            "the refiner are drawn with their tags; boxes in the answer are magenta and numbered."
        )  # fmt: skip
        history = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                annotator = image_annotator(
                    label="Image: drag to draw regions", elem_id="image-input", sources=["upload"], image_type="filepath",
                    disable_edit_boxes=True, show_remove_button=True, show_share_button=False, show_download_button=False,
                )  # fmt: skip
                clear_boxes = gr.Button("Clear boxes", elem_id="clear-boxes", size="sm")
                tokens = gr.Slider(1, max_new_tokens, value=min(64, max_new_tokens), step=1, label="max new tokens")
                temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
            with gr.Column(scale=1):
                chat = gr.Chatbot(label="Chat", elem_id="chat", render_markdown=False, height=320)
                question = gr.Textbox(label="Question", elem_id="question", placeholder="What is the object in <region>?")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear chat", elem_id="clear")
        with gr.Row():
            picture = gr.Image(label="Refiner objects and answer boxes", type="pil", format="png", interactive=False, elem_id="picture")
            info = gr.JSON(label="Regions asked about, answer boxes, tags, refiner objects", elem_id="details", open=True)
        # preprocess=False everywhere the annotator is an input (see the module docstring).
        annotator.upload(on_image, [annotator], [picture, info, chat, history, question], preprocess=False)
        annotator.clear(lambda: (None, {}, [], None), None, [picture, info, chat, history])
        # Numbering is quick and must not wait behind an answer being generated.
        box_events = dict(preprocess=False, postprocess=False, concurrency_limit=None, show_progress="hidden", api_visibility="private")
        annotator.change(on_boxes, [annotator], [annotator], trigger_mode="always_last", **box_events)
        clear_boxes.click(on_clear_boxes, [annotator], [annotator], **box_events)
        inputs = [annotator, question, tokens, temperature, chat, history]
        outputs = [chat, history, picture, info, question]
        send.click(on_ask, inputs, outputs, preprocess=False)
        question.submit(on_ask, inputs, outputs, preprocess=False)
        clear.click(lambda: ([], None), None, [chat, history])
    demo.queue(default_concurrency_limit=1)
    demo.lyrics_theme, demo.lyrics_css = theme, CSS  # handed to launch() (gradio 6 takes them there)
    return demo


def launch(model: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", dtype: str | None = None,
           max_new_tokens: int = 128, max_file_size: str = "20mb") -> None:  # fmt: skip
    """Load the checkpoint and serve the demo until interrupted."""
    pipeline = LyricsPipeline.from_pretrained(model, device=device, dtype=dtype)
    demo = build_demo(pipeline, f"Lyrics — {Path(model).resolve().name}", max_new_tokens)
    demo.launch(
        server_name=host, server_port=port, share=False, ssr_mode=False, show_error=True, max_file_size=max_file_size,
        theme=demo.lyrics_theme, css=demo.lyrics_css, footer_links=[], mcp_server=False, pwa=False,
    )  # fmt: skip
