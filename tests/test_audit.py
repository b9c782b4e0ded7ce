from lyrics.audit import PAPER_FIGURES, TOLERANCE, audit, audit_json
from lyrics.presets import load_config


def test_paper_preset_reproduces_the_paper_parameter_counts():
    rows = audit(load_config("paper"), PAPER_FIGURES)
    report = audit_json(rows)
    for key in ("mqformer", "projection", "lora", "trainable"):
        assert abs(report[key] - PAPER_FIGURES[key]) / PAPER_FIGURES[key] <= TOLERANCE, key
    assert report["within_tolerance"] is True
    assert abs(report["total"] - PAPER_FIGURES["total"]) / PAPER_FIGURES["total"] < 0.05
    assert report["projection"] == 768 * 5120 + 5120
    tagger = next(r for r in rows if r.component == "refiner.tagger")
    assert "cannot be built" in tagger.note


def test_released_preset_trains_only_lora():
    report = audit_json(audit(load_config("released")))
    assert report["lora"] == 40 * 3 * 8 * (5120 + 5120)
    assert report["trainable"] == report["lora"]
    assert report["mqformer"] > report["trainable"]
