"""Pass / fail per check of a ``rlviz trust`` row, with the thresholds every report states, and
the row's one-line verdict."""

from __future__ import annotations

#: Pass thresholds, stated in every report.
THRESHOLDS = {
    # mean Spearman of maps with the trained model's after randomisation: below = the map changed
    "rho": 0.5,
    # Efficient MPRT: the map's entropy must rise by > 10% when the whole model is randomised
    # (set from an untrained network re-randomised: -0.15..0.03 on BoxReach frames, no rise)
    "emprt": 0.1,
    # deletion / insertion: mean gain over a random pixel order, in standard errors
    "gain_se": 2.0,
    # ground truth: mass in the mask over the mask's pixel share
    "mass_ratio": 2.0,
}


def judge(row: dict, thresholds: dict | None = None) -> dict[str, bool | None]:
    """Pass / fail per check of a row (None: not applicable)."""
    t = thresholds or THRESHOLDS
    r, gt, logit = row["randomisation"], row["ground_truth"], row["random_logit_rho"]

    def gained(part: str) -> bool:  # above zero and above gain_se standard errors
        return row[part]["gain"] > 0 and row[part]["gain"] > t["gain_se"] * row[part]["se"]

    return {
        "randomisation": r["rho_output"] < t["rho"]
        and r["rho_full"] < t["rho"]
        and r["emprt"] > t["emprt"],
        "random_logit": None if logit is None else logit < t["rho"],
        "deletion": gained("deletion"),
        "insertion": gained("insertion"),
        "ground_truth": gt["mass_ratio"] >= t["mass_ratio"] if gt and gt.get("frames") else None,
    }


def verdict(row: dict) -> str:
    """``"occlusion: faithful here"``, or the checks it fails with their figures."""
    r = row["randomisation"]
    why = {
        "randomisation": f"randomisation (rho output {r['rho_output']:.2f}, all "
        f"{r['rho_full']:.2f}, eMPRT {r['emprt']:.2f})",
        "random_logit": f"random logit (rho {row['random_logit_rho'] or 0:.2f})",
        "deletion": f"deletion (gain {row['deletion']['gain']:+.3f})",
        "insertion": f"insertion (gain {row['insertion']['gain']:+.3f})",
        "ground_truth": "ground truth (mass/share "
        f"{(row['ground_truth'] or {}).get('mass_ratio', float('nan')):.2f})",
    }
    failed = [why[k] for k, ok in row["checks"].items() if ok is False]
    if not failed:
        return f"{row['row']}: faithful here"
    return f"{row['row']}: fails " + "; ".join(failed)
