"""``trust.json``, ``trust.csv`` and ``trust.png`` of a :class:`~rlviz.faithfulness.TrustReport`
(written atomically, :mod:`rlviz.io`), and reading a trust file back for the default methods of
videos and the explorer."""

from __future__ import annotations

import json
from pathlib import Path

from rlviz.io import json_ready, save_csv, save_figure, save_json

CSV_COLUMNS = (
    "row", "method", "target", "ms_per_frame", "rho_output", "rho_full", "emprt",
    "random_logit_rho", "deletion_auc", "deletion_random_auc", "deletion_gain",
    "insertion_auc", "insertion_random_auc", "insertion_gain", "pointing", "mass_ratio",
    "gt_frames", "randomisation", "random_logit", "deletion", "insertion", "ground_truth",
    "faithful", "verdict",
)  # fmt: skip


def flat_row(row: dict) -> dict:
    """One report row as the flat record of ``trust.csv``."""
    flat = {k: row[k] for k in ("row", "method", "target", "ms_per_frame", "random_logit_rho")}
    flat.update({k: row["randomisation"][k] for k in ("rho_output", "rho_full", "emprt")})
    for part in ("deletion", "insertion"):
        flat.update({f"{part}_{k}": row[part][k] for k in ("auc", "random_auc", "gain")})
    gt = row["ground_truth"] or {}
    flat.update(pointing=gt.get("pointing"), mass_ratio=gt.get("mass_ratio"))
    flat.update(gt_frames=gt.get("frames"), faithful=row["faithful"], verdict=row["verdict"])
    flat.update(row["checks"])
    return flat


def figure(report):
    """The trust figure: rank correlation along the randomisation cascade per row, and each row's
    deletion / insertion gain over a random pixel order."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = report.rows
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 3.5))
    for i, row in enumerate(rows):
        layers = row["randomisation"]["layers"]
        # tab20 and two line styles: a dozen rows stay apart (the default cycle repeats at 10)
        style = dict(color=plt.cm.tab20(i % 20), ls="-" if i % 2 == 0 else "--", marker="o")
        ax1.plot(range(len(layers) + 1), [1.0, *layers.values()], label=row["row"], **style)
    if rows:
        names = list(rows[0]["randomisation"]["layers"])
        ax1.set_xticks(range(len(names) + 1), ["trained", *names], rotation=30, ha="right")
    ax1.axhline(report.thresholds["rho"], color="k", ls="--", lw=0.8, label="pass below")
    ax1.set_ylabel("Spearman with the trained model's maps")
    ax1.set_title("cascading randomisation (output layer first)")
    ax1.legend(fontsize=7)
    y = range(len(rows))
    gains_d = [row["deletion"]["gain"] for row in rows]
    gains_i = [row["insertion"]["gain"] for row in rows]
    ax2.barh([v - 0.2 for v in y], gains_d, 0.4, label="deletion: random AUC - AUC")
    ax2.barh([v + 0.2 for v in y], gains_i, 0.4, label="insertion: AUC - random AUC")
    ax2.set_yticks(list(y), [f"{r['row']} {'ok' if r['faithful'] else 'x'}" for r in rows])
    ax2.invert_yaxis()
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel("gain over a random pixel order (nats of log pi(a_t|s_t))")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write(report, out: str | Path) -> list[Path]:
    """Write ``trust.json``, ``trust.csv`` and ``trust.png`` into the folder ``out``."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = [
        {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in flat_row(row).items()}
        for row in report.rows
    ]
    paths = [
        save_json(json_ready(report.to_dict()), out / "trust.json"),
        save_csv(cells, CSV_COLUMNS, out / "trust.csv"),
    ]
    fig = figure(report)
    try:
        paths.append(save_figure(fig, out / "trust.png"))
    finally:
        plt.close(fig)
    return paths


def methods_from(path: str | Path, limit: int = 2) -> list[str]:
    """Up to ``limit`` methods a trust file finds faithful (target: the taken action), the one
    with most mass on the ground-truth object first (when the env has masks), then the largest
    deletion + insertion gain (nats of log pi, which favour a method whose fill is the deletion
    fill, so they only break ties); a file with none raises ``ValueError`` saying so."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        rows = data["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"cannot read a trust file at {str(path)!r} ({exc}); write one with `rlviz trust`"
        ) from None
    good = [r for r in rows if r.get("faithful") and r.get("target") == "taken"]
    if not good:
        raise ValueError(
            f"no method passes every check in {str(path)!r}; pass --methods yourself (the "
            "verdicts are in that file)"
        )

    def rank(row: dict) -> tuple[float, float]:
        gt = row.get("ground_truth") or {}
        return (
            -(gt.get("mass_ratio") or 0.0),
            -(row["deletion"]["gain"] + row["insertion"]["gain"]),
        )

    good.sort(key=rank)
    return [r["method"] for r in good[:limit]]
