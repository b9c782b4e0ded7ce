import collections
import os
import pickle

import pytest

from data.layouts import write_refcoco
from lyrics.data.official import FormatError, MissingFilesError, load_builtins_pickle, read_refcoco


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_refcoco_reads_refs_with_boxes_and_images(tmp_path):
    files = write_refcoco(tmp_path)
    samples = read_refcoco(files["folder"], files["images"])
    assert [s.ref_id for s in samples] == [1, 2, 3]
    first = samples[0]
    assert first.sentences == ["man on the left", "person in red"]
    assert first.box_xyxy == (10.0, 20.0, 40.0, 60.0) and (first.width, first.height) == (100, 80)
    assert first.box_norm == pytest.approx((0.1, 0.25, 0.4, 0.75))
    assert first.category == "person" and first.split == "train"
    assert first.image_path == files["images"] / "train2014" / "COCO_train2014_000000000009.jpg" and first.image_path.is_file()
    assert [s.ref_id for s in read_refcoco(files["folder"], split="val")] == [2]


def test_refcocog_uses_umd_split(tmp_path):
    write_refcoco(tmp_path, "refcocog", "umd")
    write_refcoco(tmp_path, "refcocog", "google")
    assert len(read_refcoco(tmp_path / "refcocog")) == 3
    with pytest.raises(MissingFilesError, match=r"refs\(umd\).p"):
        (tmp_path / "refcocog" / "refs(umd).p").unlink()
        read_refcoco(tmp_path / "refcocog")


def test_restricted_unpickler_refuses_every_global(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(FormatError, match="refused or invalid pickle.*not allowed"):
        load_builtins_pickle(path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")
    # Even harmless classes are refused: only builtins data may come through.
    path.write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(FormatError, match="global .* is not allowed"):
        load_builtins_pickle(path)
    path.write_bytes(pickle.dumps([{"a": (1, 2.5, "x", None, True)}], protocol=2))
    assert load_builtins_pickle(path) == [{"a": (1, 2.5, "x", None, True)}]
    # Python 2 pickles (the released refs files) store str as byte strings: decoded as UTF-8.
    path.write_bytes(b"\x80\x02]q\x00U\x05caf\xc3\xa9q\x01a.")
    assert load_builtins_pickle(path) == ["caf\u00e9"]


def test_refcoco_errors_name_the_ref(tmp_path):
    files = write_refcoco(tmp_path)
    refs = files["refs"]
    refs[1]["ann_id"] = 777
    (files["folder"] / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(FormatError, match=r"refs\[1\] \(ref_id=2\): field 'ann_id': ann_id 777 is not in instances.json"):
        read_refcoco(files["folder"])
    (files["folder"] / "refs(unc).p").write_bytes(b"not a pickle")
    with pytest.raises(FormatError, match="refs\\(unc\\).p"):
        read_refcoco(files["folder"])
