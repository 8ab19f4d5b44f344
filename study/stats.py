"""The study's figures: rates with Wilson intervals, exact binomial tests against chance, the
paper's numbers beside them, per-image and per-participant tables, CSV files and a plot.

The paper (section IV, Fig. 12): 100 participants, 22 images each, 881 wrong of 2,200 answers,
reported as 40.08 % and read as "the fakes duped the user 40.08 % of the time" (881 / 2,200 is
in fact 40.05 %), mean score 13.24 of 22. That rate counts wrong answers on real and generated
images together, so it is compared with this study's overall error rate; the fool rate (share
of generated images judged real) and the accuracy on real images are reported beside it.

Intervals and tests treat answers as independent; answers of one participant are correlated,
so with few participants the intervals are too narrow. The per-participant table shows the
spread.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from cyclemask.image_files import write_bytes_atomic

PAPER_WRONG = 881
PAPER_ANSWERS = 2200
PAPER_ERROR_RATE = 0.4008  # as printed in the paper
PAPER_PARTICIPANTS = 100
PAPER_PER_PERSON = 22
PAPER_MEAN_SCORE = 13.24
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95 % by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    # Rounding can put a bound a hair past the proportion itself (0/3 gave a lower bound of
    # 5.6e-17): an interval always holds its own point estimate.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def binomial_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability, under success rate p, of an outcome at
    most as likely as k of n (the rule of R's binom.test and scipy's binomtest)."""
    if n <= 0:
        return 1.0
    if p <= 0.0 or p >= 1.0:
        return 1.0 if (k == 0 and p <= 0.0) or (k == n and p >= 1.0) else 0.0

    def logpmf(i: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)

    ref = logpmf(k)
    total = sum(math.exp(lp) for lp in (logpmf(i) for i in range(n + 1)) if lp <= ref + 1e-7)
    return min(1.0, total)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson(self.k, self.n) if self.n else None

    def text(self) -> str:
        if not self.n:
            return "no answers yet"
        lo, hi = self.ci
        return f"{100 * self.value:.2f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %; {self.k:,} of {self.n:,})"


@dataclass
class Summary:
    participants: int
    complete: int
    answers: int
    error: Rate            # wrong answers / all answers: the paper's 40.08 %
    fool: Rate             # generated judged real / answers on generated images
    real_accuracy: Rate    # real judged real / answers on real images
    accuracy: Rate         # right answers / all answers
    p_accuracy_vs_chance: float
    p_fool_vs_chance: float
    mean_score: float | None  # right answers per complete participant
    score_of: int | None      # their sequence length (when all complete ones share one)
    images: list[dict] = field(default_factory=list)
    people: list[dict] = field(default_factory=list)

    @property
    def paper_in_ci(self) -> bool | None:
        ci = self.error.ci
        return None if ci is None else ci[0] <= PAPER_ERROR_RATE <= ci[1]


def summarize(answers: list[dict], participants: list[dict], images: list[dict]) -> Summary:
    """answers / participants / images: rows as `Store.answer_rows()` etc. give them."""
    n = len(answers)
    right = sum(a["answer"] == a["source"] for a in answers)
    gen = [a for a in answers if a["source"] == "generated"]
    real = [a for a in answers if a["source"] == "real"]
    fooled = sum(a["answer"] == "real" for a in gen)
    real_ok = sum(a["answer"] == "real" for a in real)

    per_image = {im["image_id"]: {**im, "answers": 0, "judged_real": 0, "correct": 0, "conf": []} for im in images}
    per_person = {p["participant"]: {**p, "correct": 0, "gen": 0, "fooled": 0, "real": 0, "real_ok": 0}
                  for p in participants}
    for a in answers:
        row = per_image.get(a["image_id"])
        if row is not None:
            row["answers"] += 1
            row["judged_real"] += a["answer"] == "real"
            row["correct"] += a["answer"] == a["source"]
            if a["confidence"] is not None:
                row["conf"].append(a["confidence"])
        p = per_person.get(a["participant"])
        if p is not None:
            p["correct"] += a["answer"] == a["source"]
            if a["source"] == "generated":
                p["gen"] += 1
                p["fooled"] += a["answer"] == "real"
            else:
                p["real"] += 1
                p["real_ok"] += a["answer"] == "real"

    image_table = []
    for row in per_image.values():
        conf = row.pop("conf")
        row["judged_real_rate"] = row["judged_real"] / row["answers"] if row["answers"] else None
        row["correct_rate"] = row["correct"] / row["answers"] if row["answers"] else None
        row["mean_confidence"] = sum(conf) / len(conf) if conf else None
        image_table.append(row)
    people_table = []
    for p in per_person.values():
        p["complete"] = p["answered"] >= p["n_items"]
        p["score"] = p["correct"]
        p["error_rate"] = 1 - p["correct"] / p["answered"] if p["answered"] else None
        p["fool_rate"] = p.pop("fooled") / p["gen"] if p["gen"] else None
        p["real_accuracy"] = p.pop("real_ok") / p["real"] if p["real"] else None
        del p["correct"], p["gen"], p["real"]
        people_table.append(p)

    complete = [p for p in people_table if p["complete"]]
    lengths = {p["n_items"] for p in complete}
    return Summary(
        participants=len(participants),
        complete=len(complete),
        answers=n,
        error=Rate(n - right, n),
        fool=Rate(fooled, len(gen)),
        real_accuracy=Rate(real_ok, len(real)),
        accuracy=Rate(right, n),
        p_accuracy_vs_chance=binomial_two_sided(right, n),
        p_fool_vs_chance=binomial_two_sided(fooled, len(gen)),
        mean_score=sum(p["score"] for p in complete) / len(complete) if complete else None,
        score_of=lengths.pop() if len(lengths) == 1 else None,
        images=image_table,
        people=people_table,
    )


def _p(p: float) -> str:
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def report_lines(s: Summary) -> list[str]:
    """The summary as plain sentences (the CLI prints them; the results page shows them)."""
    lines = [f"participants: {s.participants} ({s.complete} finished), answers: {s.answers:,}"]
    if not s.answers:
        return lines + ["no answers yet"]
    inside = "inside" if s.paper_in_ci else "outside"
    lines += [
        f"overall error rate (wrong answers, real and generated together): {s.error.text()}",
        f"  the paper: {100 * PAPER_ERROR_RATE:.2f} % as reported ({PAPER_WRONG} of {PAPER_ANSWERS:,} answers, "
        f"which is {100 * PAPER_WRONG / PAPER_ANSWERS:.2f} %; "
        f"{PAPER_PARTICIPANTS} participants x {PAPER_PER_PERSON} images), {inside} this interval",
        f"fool rate (generated images judged real): {s.fool.text()}",
        f"accuracy on real images (real judged real): {s.real_accuracy.text()}",
    ]
    acc = s.accuracy.value
    if s.p_accuracy_vs_chance < 0.05:
        verdict = "better than chance" if acc > 0.5 else "worse than chance"
    else:
        verdict = "no different from chance"
    lines.append(f"against chance: accuracy {100 * acc:.2f} % vs 50 %, exact binomial p = {_p(s.p_accuracy_vs_chance)}: "
                 f"telling real from generated, people did {verdict} (5 % level; answers taken as independent)")
    if s.fool.n:
        lines.append(f"  fool rate vs 50 %: p = {_p(s.p_fool_vs_chance)}")
    if s.mean_score is not None:
        of = f" of {s.score_of}" if s.score_of else ""
        paper = f" (the paper: {PAPER_MEAN_SCORE} of {PAPER_PER_PERSON})" if s.score_of == PAPER_PER_PERSON else \
            f" (the paper: {PAPER_MEAN_SCORE} of {PAPER_PER_PERSON}, {100 * PAPER_MEAN_SCORE / PAPER_PER_PERSON:.1f} % right)"
        lines.append(f"mean score of finished participants: {s.mean_score:.2f}{of}{paper}")
    return lines


# -- files ---------------------------------------------------------------------------------------

ANSWER_COLUMNS = ("participant", "position", "image", "source", "answer", "correct", "confidence", "answered_at")
IMAGE_COLUMNS = ("image", "source", "assigned", "answers", "judged_real", "judged_real_rate", "correct_rate", "mean_confidence")
PEOPLE_COLUMNS = ("participant", "started_at", "n_items", "answered", "complete", "score", "error_rate", "fool_rate",
                  "real_accuracy")


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r[k])) for k in columns})
    return buf.getvalue()


def answers_csv(answers: list[dict]) -> str:
    return _csv([{**a, "correct": int(a["answer"] == a["source"])} for a in answers], ANSWER_COLUMNS)


def images_csv(s: Summary) -> str:
    return _csv(s.images, IMAGE_COLUMNS)


def people_csv(s: Summary) -> str:
    return _csv(s.people, PEOPLE_COLUMNS)


def plot_png(s: Summary) -> bytes:
    """Left: the three rates with their 95 % intervals, the paper's 40.08 % and chance.
    Right: the scores of finished participants."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax, hx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    names = ["overall error", "fool rate\n(generated → real)", "accuracy on real"]
    rates = [s.error, s.fool, s.real_accuracy]
    colors = ["#4c72b0", "#dd8452", "#55a868"]
    for i, (r, c) in enumerate(zip(rates, colors)):
        if r.n:
            lo, hi = r.ci
            ax.bar(i, 100 * r.value, color=c, width=0.6)
            ax.errorbar(i, 100 * r.value, yerr=[[100 * (r.value - lo)], [100 * (hi - r.value)]], color="black", capsize=6)
            ax.text(i, 100 * hi + 2, f"{100 * r.value:.1f} %\nn={r.n}", ha="center", va="bottom", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.axhline(100 * PAPER_ERROR_RATE, color="#c44e52", ls="--", lw=1.2, label=f"paper: {100 * PAPER_ERROR_RATE:.2f} % error")
    ax.axhline(50, color="grey", ls=":", lw=1.2, label="chance: 50 %")
    ax.set_xticks(range(3), names, fontsize=8)
    ax.set_ylim(0, 115)
    ax.set_ylabel("% of answers")
    ax.set_title("rates with 95 % Wilson intervals", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    scores = [p["score"] for p in s.people if p["complete"]]
    if scores:
        top = max(p["n_items"] for p in s.people if p["complete"])
        hx.hist(scores, bins=[b - 0.5 for b in range(top + 2)], color="#8172b2", edgecolor="white")
        hx.axvline(sum(scores) / len(scores), color="black", lw=1.2, label=f"mean {sum(scores) / len(scores):.2f}")
        hx.legend(fontsize=7)
        hx.set_xlim(-0.5, top + 0.5)
        hx.yaxis.set_major_locator(MaxNLocator(integer=True))
        hx.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        hx.text(0.5, 0.5, "no finished participants yet", ha="center", va="center", transform=hx.transAxes)
    hx.set_xlabel("score (right answers)")
    hx.set_ylabel("participants")
    hx.set_title(f"scores of {len(scores)} finished participants", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(s: Summary, answers: list[dict], out: Path) -> list[Path]:
    """answers.csv, images.csv, participants.csv, plot.png and summary.txt into out, atomically."""
    files = {
        "answers.csv": answers_csv(answers).encode(),
        "images.csv": images_csv(s).encode(),
        "participants.csv": people_csv(s).encode(),
        "summary.txt": ("\n".join(report_lines(s)) + "\n").encode(),
        "plot.png": plot_png(s),
    }
    written = []
    for name, data in files.items():
        write_bytes_atomic(out / name, data)
        written.append(out / name)
    return written
