"""The study's figures: Wilson intervals, exact binomial tests, the summary, CSV and the plot."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from cyclemask.study import stats


@pytest.mark.parametrize("k,n,lo,hi", [
    # Roots of (1 + z^2/n) x^2 - (2k/n + z^2/n) x + (k/n)^2, solved separately with numpy.roots.
    (5, 10, 0.236593, 0.763407),
    (0, 10, 0.0, 0.277533),        # z^2 / (n + z^2): Wilson never leaves [0, 1], unlike the Wald interval
    (10, 10, 0.722467, 1.0),
    (881, 2200, 0.380170, 0.421086),
])
def test_wilson_known_values(k, n, lo, hi):
    got = stats.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=2e-6)


def test_wilson_matches_its_definition(rng):
    # The interval's ends are the p where the z-test of p just rejects: (k/n - p)^2 = z^2 p(1-p)/n.
    z = stats.Z95
    for _ in range(50):
        n = int(rng.integers(1, 500))
        k = int(rng.integers(0, n + 1))
        for p in stats.wilson(k, n):
            if 0.0 < p < 1.0:
                assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("k,n,p", [
    (60, 100, 0.056887),    # R: binom.test(60, 100)$p.value
    (50, 100, 1.0),
    (3, 3, 0.25),
    (0, 10, 0.001953125),   # 2 / 2^10
])
def test_binomial_two_sided_known_values(k, n, p):
    assert stats.binomial_two_sided(k, n) == pytest.approx(p, rel=1e-3)


@pytest.mark.parametrize("n,p0", [(30, 0.3), (2200, 0.5)])
def test_binomial_two_sided_matches_exact_arithmetic(n, p0):
    from fractions import Fraction
    from math import comb

    q = Fraction(p0).limit_denominator(100)
    pmf = [comb(n, i) * q ** i * (1 - q) ** (n - i) for i in range(n + 1)]
    for k in ([*range(n + 1)] if n < 100 else [1100, 1160, 1250, 1319]):
        want = sum(x for x in pmf if x <= pmf[k] * Fraction(1 + 10 ** -7))
        assert stats.binomial_two_sided(k, n, p0) == pytest.approx(min(1.0, float(want)), rel=1e-6)


def _answers(spec):
    """spec: (participant, source, answer) triples -> answer rows as the store gives them."""
    rows = []
    for i, (p, source, answer) in enumerate(spec):
        rows.append({"participant": p, "position": i, "image_id": f"{source[0]}{i % 3}", "image": f"{source}/{i % 3}.jpg",
                     "source": source, "answer": answer, "confidence": 1 + i % 3, "answered_at": "t"})
    return rows


def test_summarize_counts_and_rates():
    spec = ([(1, "generated", "real")] * 3 + [(1, "generated", "generated")] * 1 + [(1, "real", "real")] * 2
            + [(2, "real", "generated")] * 1 + [(2, "generated", "generated")] * 1)
    answers = _answers(spec)
    people = [{"participant": 1, "started_at": "t", "n_items": 6, "answered": 6},
              {"participant": 2, "started_at": "t", "n_items": 6, "answered": 2}]
    images = [{"image_id": f"{s}{j}", "image": f"{s}/{j}", "source": src, "assigned": 1}
              for s, src in (("g", "generated"), ("r", "real")) for j in range(3)]
    s = stats.summarize(answers, people, images)
    assert (s.participants, s.complete, s.answers) == (2, 1, 8)
    assert (s.error.k, s.error.n) == (4, 8)           # 3 fooled + 1 real called generated
    assert (s.fool.k, s.fool.n) == (3, 5)
    assert (s.real_accuracy.k, s.real_accuracy.n) == (2, 3)
    assert (s.accuracy.k, s.accuracy.n) == (4, 8)
    assert s.mean_score == 3 and s.score_of == 6     # only the finished participant counts
    p1, p2 = s.people
    assert (p1["score"], p1["complete"], p1["fool_rate"], p1["real_accuracy"]) == (3, True, 0.75, 1.0)
    assert (p2["score"], p2["complete"], p2["error_rate"]) == (1, False, 0.5)
    assert sum(im["answers"] for im in s.images) == 8
    g0 = next(im for im in s.images if im["image_id"] == "g0")
    assert g0["answers"] == sum(1 for a in answers if a["image_id"] == "g0")


def test_report_lines_compare_with_the_paper_and_chance():
    # The paper's own counts: 881 wrong of 2,200.
    answers = _answers([(1, "real", "real")] * 1319 + [(1, "real", "generated")] * 881)
    s = stats.summarize(answers, [{"participant": 1, "started_at": "t", "n_items": 2200, "answered": 2200}], [])
    text = "\n".join(stats.report_lines(s))
    assert "40.05 % (95 % CI 38.0-42.1 %; 881 of 2,200)" in text
    assert "the paper: 40.08 % as reported (881 of 2,200 answers, which is 40.05 %" in text and "inside this interval" in text
    assert "people did better than chance" in text
    assert s.paper_in_ci is True
    few = stats.summarize(_answers([(1, "real", "real"), (1, "generated", "real")]), [], [])
    assert "no different from chance" in "\n".join(stats.report_lines(few))
    none = stats.summarize([], [], [])
    assert stats.report_lines(none)[-1] == "no answers yet" and none.error.ci is None


def test_csv_and_plot():
    import cv2

    answers = _answers([(1, "real", "real"), (1, "generated", "real"), (1, "generated", "generated")])
    people = [{"participant": 1, "started_at": "t", "n_items": 3, "answered": 3}]
    s = stats.summarize(answers, people, [])
    rows = list(csv.DictReader(io.StringIO(stats.answers_csv(answers))))
    assert [r["correct"] for r in rows] == ["1", "0", "1"] and rows[0]["source"] == "real"
    prow = list(csv.DictReader(io.StringIO(stats.people_csv(s))))[0]
    assert prow["score"] == "2" and prow["fool_rate"] == "0.5000"
    png = stats.plot_png(s)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 900 and img.std() > 10
    assert stats.plot_png(stats.summarize([], [], []))[:4] == b"\x89PNG"


def test_every_interval_holds_its_own_rate_and_all_right_or_all_wrong_still_plots():
    for n in range(1, 40):
        for k in range(n + 1):
            lo, hi = stats.wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)
    # Nobody fooled and every real image judged real (0 % and 100 %): the plot's error bars
    # once came out a hair negative and the results page showed a broken image.
    answers = _answers([(1, "real", "real"), (1, "generated", "generated"), (1, "real", "real")])
    s = stats.summarize(answers, [{"participant": 1, "started_at": "t", "n_items": 3, "answered": 3}], [])
    assert s.fool.value == 0.0 and s.real_accuracy.value == 1.0
    assert stats.plot_png(s)[:4] == b"\x89PNG"
