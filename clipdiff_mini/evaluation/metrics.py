"""The standard caption metrics, computed by the COCO caption evaluation code
(``pycocoevalcap``), the way captioning papers report them.

Pipeline (as in ``pycocoevalcap.eval.COCOEvalCap``):

1. PTB tokenisation (Stanford CoreNLP's PTBTokenizer, Java): lower-case,
   split off punctuation, then drop the punctuation tokens.
2. BLEU-1..4 (Papineni et al. 2002): corpus-level modified n-gram precision
   with a brevity penalty; the ``closest`` reference length.
3. METEOR 1.5 (Java): unigram matching with stems, synonyms and paraphrases.
4. ROUGE-L: F-measure (beta = 1.2) of the longest common subsequence.
5. CIDEr (pycocoevalcap's is the CIDEr-D variant): TF-IDF weighted n-gram
   cosine similarity x 10. The IDF weights come from the references *of the
   evaluated set*, so the score of a caption depends on the other images
   scored with it: always score a whole split in one call.
6. SPICE (optional): needs Stanford CoreNLP 3.6.0, which pycocoevalcap
   downloads on first use; without it SPICE is reported as unavailable,
   never as a number.

The scores are returned as fractions (BLEU-4 0.35, CIDEr 1.18), not x 100.

METEOR starts a Java process that takes seconds to load; `CaptionScorer`
keeps one open across several evaluations (``with CaptionScorer() as s: ...``),
`caption_metrics` is the one-shot version.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SPICE_CORENLP = "stanford-corenlp-3.6.0"  # what pycocoevalcap's SPICE needs in spice/lib/


class MetricsError(RuntimeError):
    """The metrics cannot run here (no Java); the message says what to install."""


def check_java() -> str:
    """Path of the ``java`` executable, or a `MetricsError` naming what to install."""
    java = shutil.which("java")
    if java is None:
        raise MetricsError(
            "Java was not found: pycocoevalcap's PTB tokenizer and METEOR run on Java. Install a Java runtime, "
            "e.g. `sudo apt-get install default-jre-headless` (Debian/Ubuntu; Colab has Java), then restart.")
    return java


def spice_lib_dir() -> Path:
    import pycocoevalcap.spice.spice as spice_module

    return Path(spice_module.__file__).resolve().parent / "lib"


def spice_status() -> tuple[bool, str]:
    """(available, reason). SPICE is available only if the Stanford CoreNLP
    jars it needs are already in pycocoevalcap's ``spice/lib`` folder;
    this function never downloads anything."""
    try:
        lib = spice_lib_dir()
    except ImportError as exc:  # pragma: no cover - pycocoevalcap is a dependency
        return False, f"pycocoevalcap's SPICE module cannot be imported ({exc})"
    jars = [lib / f"{SPICE_CORENLP}.jar", lib / f"{SPICE_CORENLP}-models.jar"]
    missing = [j.name for j in jars if not j.is_file()]
    if missing:
        return False, (f"SPICE needs Stanford CoreNLP ({', '.join(missing)} in {lib}), which pycocoevalcap "
                       f"downloads from nlp.stanford.edu on first use; it is not there and this run does not "
                       f"download it. With network access run clipdiff_mini.evaluation.metrics.download_spice_models().")
    return True, "available"


def download_spice_models() -> None:
    """Fetch Stanford CoreNLP for SPICE (about 400 MB, needs network)."""
    from pycocoevalcap.spice.get_stanford_models import get_stanford_models

    get_stanford_models()


def validate_inputs(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> list:
    """The image ids, after checking that both dicts describe the same images:
    one caption string per image in `predictions`, a non-empty list of
    non-blank caption strings per image in `references`."""
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise TypeError("predictions and references must be dicts keyed by image id: "
                        "{id: 'caption'} and {id: ['reference 1', 'reference 2', ...]}")
    if not predictions:
        raise ValueError("no predictions to score (empty dict)")
    pred_ids, ref_ids = set(predictions), set(references)
    if pred_ids != ref_ids:
        no_ref, no_pred = sorted(pred_ids - ref_ids, key=str), sorted(ref_ids - pred_ids, key=str)
        raise ValueError(
            f"predictions and references must have the same image ids: {len(no_ref)} prediction id(s) have no "
            f"references (e.g. {no_ref[:5]}), {len(no_pred)} reference id(s) have no prediction (e.g. {no_pred[:5]}). "
            f"Use split.references() restricted to the predicted ids.")
    for i, p in predictions.items():
        if not isinstance(p, str):
            raise TypeError(f"prediction for image {i!r} must be one caption string, got {type(p).__name__}")
    for i, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references for image {i!r} must be a list of caption strings, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"references for image {i!r} are an empty list; every image needs at least one reference")
        for r in refs:
            if not isinstance(r, str) or not r.strip():
                raise ValueError(f"references for image {i!r} contain a blank or non-string entry {r!r}")
    return list(predictions)


class CaptionScorer:
    """Scores caption sets with pycocoevalcap, keeping one METEOR process
    alive between calls (its start-up costs several seconds).

    The METEOR process is started when the scorer is made, so its Java
    start-up runs in the background while other work goes on: make the scorer
    early, score later.
    """

    def __init__(self, start: bool = True):
        check_java()
        self._meteor = None
        if start:
            self._start_meteor()

    def _start_meteor(self):
        from pycocoevalcap.meteor.meteor import Meteor

        if self._meteor is None:
            self._meteor = Meteor()  # Popen: returns at once, Java loads its paraphrase table meanwhile
        return self._meteor

    def __enter__(self) -> "CaptionScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR Java process."""
        m, self._meteor = self._meteor, None
        if m is not None:
            with m.lock:
                try:
                    m.meteor_p.stdin.close()
                except OSError:  # the process already died; nothing to flush
                    pass
                m.meteor_p.kill()
                m.meteor_p.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def score(self, predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
              spice: bool = False, per_image: bool = False) -> dict[str, Any]:
        """The metrics of `predictions` against `references` (see `caption_metrics`)."""
        return self.score_many({"": predictions}, references, spice=spice, per_image=per_image)[""]

    def score_many(self, conditions: Mapping[str, Mapping[Hashable, str]],
                   references: Mapping[Hashable, Sequence[str]], spice: bool = False,
                   per_image: bool = False) -> dict[str, dict[str, Any]]:
        """`score` of several prediction sets on the same references,
        ``{name: predictions}`` -> ``{name: metrics}``, with one PTB
        tokenizer call for all of them (each Java start costs time)."""
        for preds in conditions.values():
            validate_inputs(preds, references)
        gts, results = ptb_tokenize_many(conditions, references)
        return {name: self._score_tokenized(gts, res, spice, per_image) for name, res in results.items()}

    def _score_tokenized(self, gts, res, spice: bool, per_image: bool) -> dict[str, Any]:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        ids = list(gts)
        out: dict[str, Any] = {}
        per: dict[str, dict] = {}
        bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            out[f"BLEU-{n + 1}"] = float(bleu[n])
            per[f"BLEU-{n + 1}"] = dict(zip(ids, map(float, bleu_each[n])))
        meteor, meteor_each = self._meteor_score(gts, res)
        out["METEOR"], per["METEOR"] = float(meteor), dict(zip(ids, map(float, meteor_each)))
        rouge, rouge_each = Rouge().compute_score(gts, res)
        out["ROUGE-L"], per["ROUGE-L"] = float(rouge), dict(zip(ids, map(float, rouge_each)))
        cider, cider_each = Cider().compute_score(gts, res)
        out["CIDEr"], per["CIDEr"] = float(cider), dict(zip(ids, map(float, cider_each)))
        if spice:
            ok, reason = spice_status()
            if ok:
                from pycocoevalcap.spice.spice import Spice

                s, s_each = Spice().compute_score(gts, res)
                out["SPICE"] = float(s)
                per["SPICE"] = {i: float(e["All"]["f"]) for i, e in zip(sorted(ids), s_each)}
            else:
                out["SPICE"] = None
                out["SPICE_unavailable"] = reason
        out["n_images"] = len(ids)
        if per_image:
            out["per_image"] = per
        return out

    def _meteor_score(self, gts, res):
        meteor = self._start_meteor()
        try:
            return meteor.compute_score(gts, res)
        except (ValueError, BrokenPipeError) as exc:  # the Java process died (e.g. not enough memory for -Xmx2G)
            meteor.meteor_p.kill()
            err = meteor.meteor_p.stderr.read().decode(errors="replace")
            self._meteor = None
            raise MetricsError(f"METEOR's Java process failed ({exc}). Java said: {err.strip()[:500]}") from exc


def ptb_tokenize(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]):
    """PTB-tokenise predictions and references in one Java call.

    Returns ``(gts, res)`` in pycocoevalcap's layout: ``{id: [tokenised refs]}``
    and ``{id: [tokenised prediction]}``, both in the order of `predictions`.
    """
    gts, results = ptb_tokenize_many({"": predictions}, references)
    return gts, results[""]


def ptb_tokenize_many(conditions: Mapping[str, Mapping[Hashable, str]], references: Mapping[Hashable, Sequence[str]]):
    """PTB-tokenise the references and several prediction sets in one Java call.

    (pycocoevalcap tokenises references and predictions in two calls; one call
    saves JVM starts and gives the same result, because the tokenizer works
    line by line. References go last so the file never ends with an empty
    caption, which the wrapper would lose.) Every prediction set must have the
    ids of `references`; all outputs follow the id order of the first set,
    since every scorer walks ``gts.keys()`` and returns per-image scores in
    that order.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not conditions:
        raise ValueError("no prediction sets to tokenise")
    order = list(next(iter(conditions.values())))
    groups: dict[tuple, list[dict]] = {}
    for n, preds in enumerate(conditions.values()):
        groups.update({("res", n, i): [{"caption": preds[i]}] for i in order})
    groups.update({("gts", i): [{"caption": r} for r in references[i]] for i in order})
    tok = PTBTokenizer().tokenize(groups)
    missing = [k for k in groups if k not in tok]
    if missing:  # pragma: no cover - guards against the tokenizer dropping lines
        raise MetricsError(f"the PTB tokenizer lost {len(missing)} caption group(s), e.g. {missing[:3]}")
    gts = {i: tok[("gts", i)] for i in order}
    results = {name: {i: tok[("res", n, i)] for i in order} for n, name in enumerate(conditions)}
    return gts, results


def caption_metrics(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                    spice: bool = False, per_image: bool = False) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of one caption per image.

    `predictions` maps image id -> caption, `references` image id -> list of
    reference captions (same ids). Returns ``{"BLEU-1": .., ..., "CIDEr": ..,
    "n_images": N}``; with ``spice=True`` also ``"SPICE"`` (None plus
    ``"SPICE_unavailable"``: the reason, when CoreNLP is missing); with
    ``per_image=True`` also ``"per_image": {metric: {id: score}}``.
    BLEU and CIDEr are corpus-level: not the mean of per-image BLEU.
    """
    validate_inputs(predictions, references)  # before starting any Java process
    with CaptionScorer() as scorer:
        return scorer.score(predictions, references, spice=spice, per_image=per_image)


def quick_caption_scores(predictions: Mapping[Hashable, str],
                         references: Mapping[Hashable, Sequence[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr-D of one caption per image with pycocoevalcap's (pure Python) scorers on
    lower-cased words (`simple_tokenize`) instead of the Java PTB tokenizer: quick enough to choose
    checkpoints during training on a real dataset. Not the reported numbers (use `caption_metrics`)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    from clipdiff_mini.data.tokenizers import simple_tokenize

    validate_inputs(predictions, references)
    ids = list(predictions)
    gts = {i: [" ".join(simple_tokenize(r)) for r in references[i]] for i in ids}
    res = {i: [" ".join(simple_tokenize(predictions[i]))] for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-4": float(bleu[3]), "CIDEr": float(cider)}
