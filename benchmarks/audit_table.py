"""The selection-audit table of docs/benchmarks.md from the stored runs.

Reads ``benchmarks/results/audit/*/selection_audit.json`` (written by ``fr-mer evaluate
--audit-selection``; docs/protocols.md, "The selection audit") and prints, per model, the honest
last-epoch UF1 / UAR beside what choosing epochs on the held-out subjects would have printed, with
the MEB authors' published pairs (../shared/specs/protocol.md) as the reference. Nothing is
recomputed: the figures are those the report step wrote from the runs' per-epoch logs.

    python benchmarks/audit_table.py [benchmarks/results/audit]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: MEB's notebook ("Table 3. Early stopping"), composite UF1: last epoch, best epoch per subject.
MEB_PUBLISHED = {"ststnet": (0.7127, 0.7740), "off_apexnet": (0.7032, 0.8390)}
FIGURES = (("last_epoch", "honest (last epoch)"), ("best_epoch_per_subject", "best epoch per subject"),
           ("best_single_epoch", "best single epoch for all"))


def cell(scope: dict) -> str:
    seeds = len(scope["per_seed"])
    spread = f" ± {scope['uf1_std']:.4f} sd" if seeds > 1 else ""
    return f"{scope['uf1']:.4f}{spread} / {scope['uar']:.4f}"


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "audit"
    lines = ["| model | seeds | " + " | ".join(f"{title} UF1 / UAR" for _, title in FIGURES)
             + " | inflation (per subject - honest) UF1 | MEB published: last / best per subject UF1 |",
             "|---|---|" + "---|" * (len(FIGURES) + 2)]
    for path in sorted(root.glob("*/selection_audit.json")):
        audit = json.loads(path.read_text())
        full = {key: audit[key]["full"] for key, _ in FIGURES}
        inflation = full["best_epoch_per_subject"]["uf1"] - full["last_epoch"]["uf1"]
        meb = MEB_PUBLISHED.get(audit["model"])
        lines.append(f"| `{audit['model']}` | {', '.join(map(str, audit['seeds']))} | "
                     + " | ".join(cell(full[key]) for key, _ in FIGURES)
                     + f" | {inflation:+.4f} | {f'{meb[0]:.4f} / {meb[1]:.4f}' if meb else '-'} |")
    lines.append("")
    lines.append("Per database (UF1, honest -> best epoch per subject):")
    lines.append("")
    for path in sorted(root.glob("*/selection_audit.json")):
        audit = json.loads(path.read_text())
        parts = [f"{db} {audit['last_epoch'][db]['uf1']:.4f} -> {audit['best_epoch_per_subject'][db]['uf1']:.4f}"
                 for db in ("casme2", "samm", "smic") if db in audit["last_epoch"]]
        lines.append(f"- `{audit['model']}`: " + "; ".join(parts))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
