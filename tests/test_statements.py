"""Every sentence the report prints is computed: no fixed claim about results in analysis/,
and the verdicts turn when the numbers turn (synthetic runs, no training)."""

import pathlib
import re

import numpy as np
import pandas as pd
import pytest

from analysis import compare, report

ANALYSIS = pathlib.Path(__file__).resolve().parents[1] / "analysis"
# a finding attributed to a paper, or a fixed statement of what a metric does here
CLAIMS = re.compile(r"(paper|Eldan|et al\.)[^.\n]{0,40}\b(found|finds|showed|shows|reported)\b"
                    r"|does not rank models", re.IGNORECASE)


def test_no_fixed_claim_about_results_in_analysis():
    hits = [f"{path.name}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}"
            for path in sorted(ANALYSIS.glob("*.py"))
            for text in [path.read_text()] for m in CLAIMS.finditer(text)]
    assert not hits, hits
    assert CLAIMS.search("The TinyStories paper found depth matters more")  # it would catch it


def runs(deep_consistency: float, one_consistency: float) -> pd.DataFrame:
    """Three depth-1 runs and three depth-4 runs at matched non-embedding parameters."""
    rows = []
    for i, n in enumerate((1e4, 3e4, 1e5)):
        for depth, consistency in ((1, one_consistency), (4, deep_consistency)):
            rows.append({"run": f"L{depth}-{i}", "depth": depth, "params_non_embedding": n,
                         "consistency": consistency + 0.01 * i, "consistency_se": 0.02,
                         "eval_loss": 2.0 - 0.1 * i, "eval_loss_se": 0.01})
    return pd.DataFrame(rows)


def test_the_one_vs_deep_verdict_turns_with_the_data():
    deeper = compare.statement(compare.matched_pairs(runs(0.8, 0.4)))
    assert "for consistency, deeper is better (3 of 3 pairs, 0 worse)" in deeper
    assert "for eval loss, it cannot tell them apart" in deeper  # equal losses
    flipped = compare.statement(compare.matched_pairs(runs(0.4, 0.8)))
    assert "for consistency, one block is better (3 of 3 pairs, 0 worse)" in flipped
    same = compare.statement(compare.matched_pairs(runs(0.6, 0.6)))
    assert "for consistency, it cannot tell them apart" in same
    # one pair of fifteen is no verdict; eleven against three is one, with the split said
    assert compare.verdict("grammar", 1, 0, 15) == (
        "grammar, mostly indistinguishable (1 favour depth, 0 one block, 14 neither)")
    assert compare.verdict("coherence", 3, 11, 15) == (
        "coherence, one block is better (11 of 15 pairs, 3 worse)")
    assert compare.verdict("loss", 6, 5, 15).startswith("loss, the pairs disagree")
    for text in (deeper, flipped, same):
        assert "paper" not in text


@pytest.mark.parametrize("sign, verdict", [(-1, "ranks these runs as held-out loss does"),
                                           (+1, "ranks these runs against held-out loss")])
def test_the_fluency_sentence_follows_its_correlation_with_loss(sign, verdict):
    loss = np.linspace(1.0, 3.0, 8)
    final = pd.DataFrame({"eval_loss": loss, "fluency": 0.05 + sign * 0.01 * loss})
    text = report._fluency_on_synthstories(final, bootstrap=200)
    assert verdict in text and f"ρ = {sign:+.2f}" in text
    assert "fluency spans 0.020–0.040" in text or "fluency spans 0.060–0.080" in text


def test_matched_pairs_pair_seed_with_seed():
    """Three seeds of a depth-1 and of a depth-4 shape of equal size: each deeper run is
    compared with the depth-1 run of its own seed, not always with seed 0."""
    rows = [{"run": f"L{depth}-s{seed}", "depth": depth, "seed": seed,
             "params_non_embedding": 1e5, "consistency": 0.1 * seed + depth / 10,
             "consistency_se": 0.01} for depth in (1, 4) for seed in range(3)]
    pairs = compare.matched_pairs(pd.DataFrame(rows))
    assert list(zip(pairs["deep"], pairs["one_block"])) == [
        ("L4-s0", "L1-s0"), ("L4-s1", "L1-s1"), ("L4-s2", "L1-s2")]
    assert np.allclose(pairs["consistency_diff"], 0.3)
