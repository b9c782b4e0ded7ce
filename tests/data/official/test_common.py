import pytest

from lyrics.data.official.common import FormatError, MissingFilesError, find_files, get, read_json, read_jsonl


def test_format_error_is_a_value_error_naming_file_record_and_field(tmp_path):
    err = FormatError(tmp_path / "a.json", "missing", "questions[3]", "question_id")
    assert isinstance(err, ValueError)
    assert str(err) == f"{tmp_path / 'a.json'}: questions[3]: field 'question_id': missing"
    assert (err.where, err.field) == ("questions[3]", "question_id")


def test_read_json_reports_the_line_of_bad_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(FormatError, match=r"bad.json: not valid JSON .* line 2"):
        read_json(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(tmp_path / "nope.json")


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{oops}\n')
    with pytest.raises(FormatError, match="line 3"):
        read_jsonl(path)


def test_get_checks_presence_and_type_and_refuses_bool_for_int():
    assert get({"a": 3}, "a", int, "f", "w") == 3
    assert get({}, "a", int, "f", "w", default=None) is None
    with pytest.raises(FormatError, match="field 'a': missing"):
        get({}, "a", int, "f", "w")
    with pytest.raises(FormatError, match="expected int, got bool"):
        get({"a": True}, "a", int, "f", "w")
    with pytest.raises(FormatError, match="expected an object"):
        get([1], "a", int, "f", "w")


def test_find_files_lists_every_missing_file(tmp_path):
    (tmp_path / "q.json").write_text("{}")
    with pytest.raises(MissingFilesError) as info:
        find_files(tmp_path, {"q": ["q.json"], "a": ["a.json", "b_*.json"], "c": ["c.json"]}, "thing")
    assert info.value.missing == ["a.json or b_*.json", "c.json"]
    assert "not a complete thing folder" in str(info.value) and isinstance(info.value, FileNotFoundError)
