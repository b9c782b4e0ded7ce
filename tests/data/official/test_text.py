import json

import pytest

from data.layouts import write_alpaca
from lyrics.data.official import FormatError, read_alpaca


def test_alpaca(tmp_path):
    files = write_alpaca(tmp_path)
    samples = read_alpaca(files["file"])
    assert samples[1].instruction == "Translate to French." and samples[1].input == "Hello" and samples[1].output == "Bonjour"
    files["file"].write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(FormatError, match=r"\[0\]: field 'output': missing"):
        read_alpaca(files["file"])
