"""The selection-audit table of docs/benchmarks.md from the stored runs.

Reads ``benchmarks/results/audit/*/selection_audit.json`` (written by ``fr-mer evaluate
--audit-selection``; docs/protocols.md, "The selection audit") and prints, per model, the honest
last-epoch UF1 / UAR beside what choosing epochs on the held-out subjects would have printed, with
the MEB authors' published pairs (../shared/specs/protocol.md) as the reference. Nothing is
retrained. A folder that keeps its run's per-epoch held-out predictions (``epoch_predictions.npz``,
written by the report step of an ``--audit-selection`` run; the runs archived before 2026-12-07 lack
it) has its figures recomputed from them
(:func:`fr_mer.selection_audit.recomputed_audit`), and the stored ``selection_audit.json`` must equal
the recomputation (else the script stops and names the file); an older folder, whose per-epoch
logs were not kept, can only have the per-seed figures of its ``selection_audit.json`` re-aggregated.

A model's seeds may lie in several folders (``fr/`` holds seed 0, ``fr-s1/`` seeds 1 and 2, run by
``--first-seed 1 --seeds 2`` in another session): their per-seed figures are pooled into one row,
mean ± sd (sample sd, as ``metrics.json``) over all of them; a seed found twice is an error.

    python benchmarks/audit_table.py [benchmarks/results/audit]
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from fr_mer.errors import FrMerError
from fr_mer.results_folder import EPOCH_PREDICTIONS_FILE
from fr_mer.selection_audit import AUDIT_FILE, recomputed_audit

#: MEB's notebook ("Table 3. Early stopping"), composite UF1: last epoch, best epoch per subject.
MEB_PUBLISHED = {"ststnet": (0.7127, 0.7740), "off_apexnet": (0.7032, 0.8390)}
FIGURES = (("last_epoch", "honest (last epoch)"), ("best_epoch_per_subject", "best epoch per subject"),
           ("best_single_epoch", "best single epoch for all"))
SCOPES = ("full", "casme2", "samm", "smic")


def read_audit(folder: Path) -> tuple[dict, bool]:
    """The folder's audit, and whether it was recomputed from its per-epoch predictions; stops naming the file
    where the stored audit is not what they give, or the archive is unsound."""
    stored = json.loads((folder / AUDIT_FILE).read_text())
    if not (folder / EPOCH_PREDICTIONS_FILE).exists():
        return stored, False
    try:
        recomputed = json.loads(json.dumps(recomputed_audit(folder)))  # as JSON stores it (tuples as lists)
    except FrMerError as error:
        raise SystemExit(str(error)) from None
    if recomputed != stored:
        differ = sorted(key for key in stored.keys() | recomputed.keys() if stored.get(key) != recomputed.get(key))
        raise SystemExit(f"{folder / AUDIT_FILE}: not what {EPOCH_PREDICTIONS_FILE} beside it recomputes (differing: "
                         f"{', '.join(differ)}); one of them was changed or comes from another run: write both again "
                         "with the run's report step, or restore them from the archive")
    return recomputed, True


def load_models(root: Path) -> dict[str, dict]:
    """Per model: its folders (and which were recomputed), the machines they ran on, and per figure and scope,
    seed -> (UF1, UAR)."""
    models: dict[str, dict] = {}
    for path in sorted(root.glob(f"*/{AUDIT_FILE}")):
        audit, recomputed = read_audit(path.parent)
        entry = models.setdefault(audit["model"], {"folders": [], "recomputed": [], "machines": [], "best_epochs": {},
                                                   "figures": {k: {s: {} for s in SCOPES} for k, _ in FIGURES}})
        if recomputed:
            entry["recomputed"].append(path.parent.name)
        environment = json.loads((path.parent / "metrics.json").read_text()).get("environment", {})
        entry["folders"].append(path.parent.name)
        entry["machines"].append(f"{environment.get('cpu', '?')} {environment.get('cpu_vector_extension', '?')}")
        for key, _ in FIGURES:
            for scope in SCOPES:
                for seed, m in audit[key].get(scope, {}).get("per_seed", {}).items():
                    seen = entry["figures"][key][scope]
                    if seed in seen:
                        raise SystemExit(f"{path}: seed {seed} of {audit['model']} is also in another folder "
                                         f"({', '.join(entry['folders'][:-1])}); keep each seed once")
                    seen[seed] = (m["uf1"], m["uar"])
        for seed, chosen in audit["selected_epochs"].items():
            entry["best_epochs"][seed] = chosen["best_single_epoch"]
    return models


def summary(per_seed: dict[str, tuple[float, float]]) -> tuple[float, float, float]:
    uf1s = [v[0] for v in per_seed.values()]
    sd = statistics.stdev(uf1s) if len(uf1s) > 1 else 0.0
    return statistics.fmean(uf1s), sd, statistics.fmean(v[1] for v in per_seed.values())


def cell(per_seed: dict[str, tuple[float, float]]) -> str:
    uf1, sd, uar = summary(per_seed)
    spread = f" ± {sd:.4f} sd" if len(per_seed) > 1 else ""
    return f"{uf1:.4f}{spread} / {uar:.4f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else Path(__file__).parent / "results" / "audit"
    models = load_models(root)
    lines = ["| model | seeds | " + " | ".join(f"{title} UF1 / UAR" for _, title in FIGURES)
             + " | inflation (per subject - honest) UF1 | MEB published: last / best per subject UF1 |",
             "|---|---|" + "---|" * (len(FIGURES) + 2)]
    for model, entry in models.items():
        full = {key: entry["figures"][key]["full"] for key, _ in FIGURES}
        inflation = summary(full["best_epoch_per_subject"])[0] - summary(full["last_epoch"])[0]
        meb = MEB_PUBLISHED.get(model)
        seeds = sorted(full["last_epoch"], key=int)
        lines.append(f"| `{model}` | {', '.join(seeds)} | "
                     + " | ".join(cell(full[key]) for key, _ in FIGURES)
                     + f" | {inflation:+.4f} | {f'{meb[0]:.4f} / {meb[1]:.4f}' if meb else '-'} |")
    lines += ["", "Per database (UF1, mean over seeds, honest -> best epoch per subject):", ""]
    for model, entry in models.items():
        parts = [f"{db} {summary(entry['figures']['last_epoch'][db])[0]:.4f} -> "
                 f"{summary(entry['figures']['best_epoch_per_subject'][db])[0]:.4f}"
                 for db in SCOPES[1:] if entry["figures"]["last_epoch"][db]]
        lines.append(f"- `{model}`: " + "; ".join(parts))
    lines += ["", "Best single epoch per seed, and where each folder ran:", ""]
    for model, entry in models.items():
        epochs = ", ".join(f"seed {s}: {e}" for s, e in sorted(entry["best_epochs"].items(), key=lambda x: int(x[0])))
        where = "; ".join(f"`{f}` {m}" for f, m in zip(entry["folders"], entry["machines"]))
        lines.append(f"- `{model}`: {epochs} ({where})")
    recomputed = [f"`{folder}`" for entry in models.values() for folder in entry["recomputed"]]
    n_folders = sum(len(entry["folders"]) for entry in models.values())
    lines += ["", f"Recomputed from the folder's per-epoch predictions ({EPOCH_PREDICTIONS_FILE}): "
              f"{', '.join(recomputed) or 'none'}; re-aggregated from {AUDIT_FILE} alone (per-epoch predictions "
              f"not kept): {n_folders - len(recomputed)} of {n_folders} folders."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
