"""Caption metrics. Java start-up is slow, so the cases share as few calls as possible."""
import pytest

from clipdiff_mini.evaluation import metrics
from clipdiff_mini.evaluation.metrics import MetricsError, caption_metrics, validate_inputs

REFS = {
    1: ["A red circle left of a blue square.", "a blue square and a red circle"],
    2: ["Two green triangles above a small yellow star.", "two triangles and a star"],
    3: ["a large purple diamond", "one big purple diamond on a dark background"],
    4: ["a cyan cross below an orange circle", "an orange circle above a cyan cross"],
    5: ["a small red square", "a tiny red square on a light background"],
}
PREDS = {
    1: "a red circle left of a blue square",  # identical to a reference (after PTB tokenisation)
    2: "two green triangles below a small yellow star",  # fluent but wrong
    3: "zebra quantum spoon",  # garbage
    4: "",  # empty
    5: "a red square",
}


def direct_pycocoevalcap(preds, refs, meteor):
    """The COCO evaluation code called directly, as COCOEvalCap does it
    (`meteor`: a running pycocoevalcap Meteor, to save a second JVM start)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in refs.items()})
    res = tok.tokenize({i: [{"caption": p}] for i, p in preds.items()})
    out, per = {}, {}
    b, b_each = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"BLEU-{n + 1}"], per[f"BLEU-{n + 1}"] = b[n], b_each[n]
    out["METEOR"], per["METEOR"] = meteor.compute_score(gts, res)
    out["ROUGE-L"], per["ROUGE-L"] = Rouge().compute_score(gts, res)
    out["CIDEr"], per["CIDEr"] = Cider().compute_score(gts, res)
    return out, per, list(gts)


def test_metrics_match_pycocoevalcap_and_behave(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "spice_lib_dir", lambda: tmp_path)  # no CoreNLP there
    with metrics.CaptionScorer() as scorer:
        # two prediction sets at once; the second: every prediction equal to a reference
        both = scorer.score_many({"mixed": PREDS, "perfect": {i: r[0] for i, r in REFS.items()}}, REFS,
                                 spice=True, per_image=True)
        got, perfect = both["mixed"], both["perfect"]
        single = scorer.score(PREDS, REFS)  # one set alone: the same numbers (CIDEr's IDF uses the references only)
        assert all(single[m] == got[m] for m in metrics.METRICS)
        # pycocoevalcap's own Meteor object (the one the scorer started) called directly
        want, want_each, order = direct_pycocoevalcap(PREDS, REFS, scorer._meteor)

    for m in metrics.METRICS:
        assert got[m] == pytest.approx(float(want[m]), abs=1e-9), m
        for k, i in enumerate(order):
            assert got["per_image"][m][i] == pytest.approx(float(want_each[m][k]), abs=1e-9), (m, i)
    assert got["n_images"] == 5

    # sanity: identical caption -> sentence BLEU-1 = 1 and ROUGE-L = 1; garbage and empty -> 0
    per = got["per_image"]
    assert per["BLEU-1"][1] == pytest.approx(1.0, abs=1e-6) and per["ROUGE-L"][1] == pytest.approx(1.0)
    for i in (3, 4):
        assert per["BLEU-1"][i] < 1e-6 and per["CIDEr"][i] == 0.0 and per["METEOR"][i] == 0.0
    assert per["CIDEr"][1] > per["CIDEr"][2] > per["CIDEr"][3]  # right > one word wrong > garbage
    for m in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert perfect[m] == pytest.approx(1.0, abs=1e-6), m
    assert perfect["CIDEr"] > 2 * got["CIDEr"]

    # SPICE without CoreNLP: reported unavailable with the reason, never a number
    assert got["SPICE"] is None and "CoreNLP" in got["SPICE_unavailable"]


def test_spice_status_reports_missing_corenlp(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "spice_lib_dir", lambda: tmp_path)
    ok, reason = metrics.spice_status()
    assert not ok and "stanford-corenlp-3.6.0.jar" in reason and str(tmp_path) in reason
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / name).write_bytes(b"")
    assert metrics.spice_status() == (True, "available")


def test_input_validation_errors():
    with pytest.raises(ValueError, match="same image ids"):
        validate_inputs({1: "a", 2: "b"}, {1: ["a"], 3: ["c"]})
    with pytest.raises(ValueError, match="at least one reference"):
        validate_inputs({1: "a"}, {1: []})
    with pytest.raises(ValueError, match="blank"):
        validate_inputs({1: "a"}, {1: ["a red circle", "  "]})
    with pytest.raises(TypeError, match="list of caption strings"):
        validate_inputs({1: "a"}, {1: "a red circle"})
    with pytest.raises(TypeError, match="one caption string"):
        validate_inputs({1: ["a"]}, {1: ["a"]})
    with pytest.raises(ValueError, match="no predictions"):
        validate_inputs({}, {})
    with pytest.raises(ValueError, match="same image ids"):
        caption_metrics({1: "a"}, {2: ["b"]})  # checked before any Java process starts


def test_missing_java_names_the_package(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(MetricsError, match="default-jre-headless"):
        caption_metrics({1: "a"}, {1: ["a"]})
