import numpy as np
import torch
from PIL import Image

from lyrics.refiner import rle
from lyrics.refiner.record import RefinedObject, RefinerRecord
from lyrics.refiner.visualize import draw_record, save_visualization, tag_colour, visualization_path


def record_with_square():
    mask = np.zeros((60, 80), dtype=bool)
    mask[20:40, 30:50] = True
    obj = RefinedObject("red square", 0.87, (30.0, 20.0, 50.0, 40.0), (30 / 80, 20 / 60, 50 / 80, 40 / 60), rle.encode(mask))
    return RefinerRecord("dir/img.jpg", 80, 60, ["red square"], [obj], "", torch.zeros(1, 4)), mask


def test_masks_boxes_and_labels_are_drawn():
    record, mask = record_with_square()
    image = Image.new("RGB", (80, 60), (0, 0, 0))
    out = np.asarray(draw_record(image, record)).astype(int)
    colour = np.array(tag_colour("red square"))
    assert out.shape == (60, 80, 3)
    inside = out[30, 40]  # inside the mask, away from the box outline
    assert np.abs(inside - np.round(0.45 * colour)).max() <= 1  # 45% tint over black
    assert (out[20, 40] == colour).all()  # top edge of the box
    assert (out[55, 5] == 0).all()  # untouched background
    label_area = out[:20, 30:80]
    assert (label_area == colour).all(axis=-1).sum() > 50  # the label's background strip above the box
    assert tag_colour("red square") == tag_colour("red square") != tag_colour("blue star")


def test_records_without_masks_still_draw_boxes():
    record, _ = record_with_square()
    record.objects[0].mask_rle = None
    out = np.asarray(draw_record(Image.new("RGB", (80, 60)), record))
    assert (out[30, 40] == 0).all() and (out[20, 40] == tag_colour("red square")).all()


def test_file_names_are_flat_and_safe(tmp_path):
    assert visualization_path(tmp_path, "a/b/c.jpg") == tmp_path / "a__b__c.jpg.png"
    assert visualization_path(tmp_path, "../../etc/passwd").parent == tmp_path
    record, _ = record_with_square()
    path = save_visualization(Image.new("RGB", (80, 60)), record, tmp_path / "vis")
    assert path == tmp_path / "vis" / "dir__img.jpg.png" and Image.open(path).size == (80, 60)
    assert [p.name for p in (tmp_path / "vis").iterdir()] == ["dir__img.jpg.png"]  # no temporary files left
