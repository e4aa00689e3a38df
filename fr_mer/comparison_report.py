"""``fr-mer compare``'s report of a :class:`~fr_mer.compare.Comparison`: the verdict line, the
Markdown tables and the JSON record (the statistics themselves are computed in :mod:`fr_mer.compare`)."""
from __future__ import annotations

import dataclasses

from fr_mer.compare import METRIC_NAMES, Comparison, seed_list
from fr_mer.metrics import mean_sd_text
from fr_mer.results_folder import FULL_SCOPE


def verdict(comparison: Comparison) -> str:
    """One line on the headline metric (UF1, all samples); "beats" only when the interval excludes 0."""
    row = comparison.row(FULL_SCOPE, "uf1")
    a, b = comparison.label_a, comparison.label_b
    low, high = row.interval
    level = f"{comparison.confidence:.0%}"
    figures = (f"UF1 difference {row.mean_difference:+.4f} (se {_number(row.se_difference)}) over "
               f"{len(row.difference)} paired seeds, {level} bootstrap interval over subjects "
               f"[{low:+.4f}, {high:+.4f}]")
    seeds_line = f"{a} ahead on {row.wins_a} of {len(row.difference)} seeds, {b} on {row.wins_b}"
    if low > 0 or high < 0:
        winner, loser = (a, b) if low > 0 else (b, a)
        line = f"{winner} beats {loser}: {figures} excludes 0; {seeds_line}."
    else:
        line = f"No difference shown between {a} and {b}: {figures} includes 0; {seeds_line}."
    if len(row.difference) < 3:
        line += " Fewer than 3 seeds: the seed-to-seed spread is barely measured."
    return line


def _number(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


def _p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def to_markdown(comparison: Comparison) -> str:
    """The summary table, the per-seed table and the verdict, in Markdown."""
    c = comparison
    level = f"{c.confidence:.0%}"
    full = c.row(FULL_SCOPE, "uf1")
    lines = [f"# Paired comparison: {c.label_a} vs {c.label_b}", "",
             f"- A: {c.run_a}" + (f" (model {c.model_a})" if c.model_a else ""),
             f"- B: {c.run_b}" + (f" (model {c.model_b})" if c.model_b else ""),
             f"- seeds {seed_list(c.seeds)}, paired; {full.n_samples} samples, {full.n_subjects} subjects",
             "", "Δ = A − B. A run's ± is the sd over seeds; Δ's ± is the se of the mean difference "
             "(sd of the per-seed differences / √seeds). The interval is a percentile bootstrap over subjects "
             f"({c.n_bootstrap} resamples, seed {c.bootstrap_seed}). See docs/comparing.md.", "",
             f"| scope | metric | n | subjects | A (mean ± sd) | B (mean ± sd) | Δ (mean ± se) | {level} interval "
             "| seeds A > B / A < B / tied |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in c.metrics:
        lines.append(f"| {m.scope} | {METRIC_NAMES[m.metric]} | {m.n_samples} | {m.n_subjects} | "
                     f"{mean_sd_text(m.mean_a, m.sd_a)} | {mean_sd_text(m.mean_b, m.sd_b)} | "
                     f"{mean_sd_text(m.mean_difference, m.se_difference, signed=True)} | "
                     f"[{m.interval[0]:+.4f}, {m.interval[1]:+.4f}] | {m.wins_a} / {m.wins_b} / {m.ties} |")
    lines += ["", "## Per seed", "",
              "McNemar: samples only A classifies correctly / only B does; exact two-sided p-value.", "",
              "| seed | scope | UF1 A | UF1 B | Δ UF1 | UAR A | UAR B | Δ UAR | McNemar only A / only B | p |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for scope in c.scopes:
        f1, recall = c.row(scope, "uf1"), c.row(scope, "uar")
        tests = [t for t in c.mcnemar if t.scope == scope]
        for i, test in enumerate(tests):
            lines.append(f"| {test.seed} | {scope} | {f1.a[i]:.4f} | {f1.b[i]:.4f} | {f1.difference[i]:+.4f} | "
                         f"{recall.a[i]:.4f} | {recall.b[i]:.4f} | {recall.difference[i]:+.4f} | "
                         f"{test.only_a_correct} / {test.only_b_correct} | {_p_value(test.p_value)} |")
    lines += ["", verdict(c), ""]
    return "\n".join(lines)


def comparison_record(comparison: Comparison) -> dict:
    """A JSON-ready dict of everything computed (NaN, e.g. the se of a single seed, as null)."""
    record = dataclasses.asdict(comparison)
    record["verdict"] = verdict(comparison)
    return _without_nan(record)


def _without_nan(value):
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value
