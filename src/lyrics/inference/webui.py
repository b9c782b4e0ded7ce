"""`lyrics demo-ui`: a web page to show a checkpoint to people (gradio).

Upload an image: the refiner runs at once and its tags and boxes are drawn. Ask questions in the
chat (multi-turn; an optional pixel region fills `<region>` for referential dialogue): the answer
streams in, and the picture is redrawn with the refiner's objects and the answer's boxes (magenta,
numbered). The details panel lists the tags, the refiner's objects and the answer's boxes.

The page must never reach the internet: analytics and hub telemetry are switched off before gradio
is imported, the theme uses system fonts (no web fonts), server-side rendering (a Node process) is
off, and only uploads (bounded by `max_file_size` and the pixel limit) come in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

for _name, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                      ("GRADIO_TELEMETRY_ENABLED", "False"), ("DO_NOT_TRACK", "1")):  # fmt: skip
    os.environ.setdefault(_name, _value)

from lyrics.inference.chat import parse_region, with_regions  # noqa: E402
from lyrics.inference.limits import InputError  # noqa: E402
from lyrics.inference.pipeline import LyricsPipeline, PipelineResult  # noqa: E402

CSS = "#picture img { object-fit: contain; }"


def details(result: PipelineResult | None, record=None) -> dict[str, Any]:
    record = result.record if result is not None else record
    out: dict[str, Any] = {
        "tags": list(record.tags) if record is not None else [],
        "refiner_objects": [{k: v for k, v in o.to_dict().items() if k != "mask_rle"} for o in record.objects] if record is not None else [],
    }
    if result is not None:
        out["answer_boxes"] = [box.to_dict() for box in result.boxes]
    return out


def build_demo(pipeline: LyricsPipeline, title: str = "Lyrics", max_new_tokens: int = 128):
    """The gradio Blocks app (not launched)."""
    import gradio as gr

    from lyrics.inference.drawing import draw_result
    from lyrics.refiner.visualize import draw_record

    def on_image(path: str | None):
        """New image: refine it, draw its objects, start a new dialogue."""
        if not path:
            return None, {}, [], None, ""
        try:
            image = pipeline.load_image(path)
        except (InputError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        record = pipeline.refine([image])[0]
        return draw_record(image, record), details(None, record), [], None, ""

    def on_ask(path, question, region, tokens, temperature, chat, history):
        """Stream an answer into the chat, then draw its boxes."""
        question = (question or "").strip()
        if not question:
            raise gr.Error("type a question first")
        try:
            image = pipeline.load_image(path) if path else None
            regions = [parse_region(region)] if region and region.strip() else []
            stream = pipeline.stream(
                image, with_regions(question, regions), history=history, regions=regions or None,
                max_new_tokens=int(tokens), do_sample=temperature > 0, temperature=temperature or 1.0,
            )  # fmt: skip
        except (InputError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        chat = list(chat or []) + [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        text = ""
        for piece in stream:
            text += piece
            chat[-1] = {"role": "assistant", "content": text}
            yield chat, history, gr.skip(), gr.skip(), ""
        result = stream.result
        chat[-1] = {"role": "assistant", "content": result.text}
        picture = draw_result(image, result) if image is not None else None
        yield chat, result.conversation, picture, details(result), ""

    def on_clear():
        return [], None

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {title}\nUpload an image, then ask about it. Boxes from the refiner are drawn with their tags; boxes in the answer are magenta and numbered.")
        history = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Image", sources=["upload"], elem_id="image-input")
                region = gr.Textbox(label="Region x1,y1,x2,y2 in pixels (optional, fills <region>)", elem_id="region")
                tokens = gr.Slider(1, max_new_tokens, value=min(64, max_new_tokens), step=1, label="max new tokens")
                temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
            with gr.Column(scale=1):
                chat = gr.Chatbot(label="Chat", elem_id="chat", render_markdown=False, height=320)
                question = gr.Textbox(label="Question", elem_id="question", placeholder="What is in the picture?")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear chat", elem_id="clear")
        with gr.Row():
            picture = gr.Image(label="Refiner objects and answer boxes", type="pil", interactive=False, elem_id="picture")
            info = gr.JSON(label="Tags, refiner objects, answer boxes", elem_id="details")
        image.change(on_image, [image], [picture, info, chat, history, question])
        inputs = [image, question, region, tokens, temperature, chat, history]
        outputs = [chat, history, picture, info, question]
        send.click(on_ask, inputs, outputs)
        question.submit(on_ask, inputs, outputs)
        clear.click(on_clear, None, [chat, history])
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
