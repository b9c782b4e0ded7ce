import pytest

from data.layouts import write_mme
from lyrics.data.official import MME_SUBTASKS, FormatError, MissingFilesError, read_mme


def test_mme_reads_both_layouts_and_all_subtasks(tmp_path):
    write_mme(tmp_path)
    samples = read_mme(tmp_path)
    assert len(samples) == 2 * 14
    assert {s.subtask for s in samples} == set(MME_SUBTASKS)
    artwork = [s for s in samples if s.subtask == "artwork"]  # layout (a)
    assert artwork[0].image_path == tmp_path / "artwork" / "images" / "0001.jpg"
    count = [s for s in samples if s.subtask == "count"]  # layout (b)
    assert count[0].image_path == tmp_path / "count" / "0001.png"
    assert [s.answer for s in count] == ["Yes", "No"] and count[0].category == "perception"
    assert {s.category for s in samples if s.subtask == "code_reasoning"} == {"cognition"}


def test_mme_missing_subtasks_and_bad_lines(tmp_path):
    write_mme(tmp_path, ["existence", "count"])
    with pytest.raises(MissingFilesError) as info:
        read_mme(tmp_path)
    assert "position/" in info.value.missing and len(info.value.missing) == 12
    assert len(read_mme(tmp_path, ["existence", "count"])) == 4
    (tmp_path / "count" / "0001.txt").write_text("How many? Please answer yes or no.\tMaybe\n")
    with pytest.raises(FormatError, match=r"0001.txt: line 1: field 'answer': must be 'Yes' or 'No'"):
        read_mme(tmp_path, ["count"])
    (tmp_path / "count" / "0001.png").unlink()
    with pytest.raises(FormatError, match="no image 0001.jpg or .png"):
        read_mme(tmp_path, ["count"])
