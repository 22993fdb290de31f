"""The human-readable report of :func:`tinydl.reproduce.reproduce` and its noise plot."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

__all__ = ["format_report", "plot_noise"]

# -- reporting ------------------------------------------------------------------------------

_APP_NAMES = {"smart-sensing": "smart sensing (Daily and Sports Activities)",
              "indoor-localization": "indoor localization (UJIIndoorLoc)",
              "speech-recognition": "speech recognition (ISOLET)"}


def _x(v):
    if v is None:
        return "-"
    return f"{v:.1f}x" if v >= 1 else f"{v:.2g}x"   # below 1 the slower side must still show


def format_report(results: Dict[str, dict]) -> str:
    """The human-readable tables: Table I per data set, then the noise experiment."""
    lines = []
    for key, r in results.items():
        p, q = r["measured"], r["predicted"]
        paper = r["paper"] or {}
        t = r["tinydl"]
        lines += [
            f"== {key}: {_APP_NAMES.get(r['application'], 'not one of the paper data sets')}; "
            f"m={r['m']}, {r['n_classes']} classes",
            f"   split: {r['split']}; stream: {r['n_stream']} samples, {r['order']} order; "
            f"validation {r['n_validation']}; test {r['n_test']}",
            f"   raw DNN  {'-'.join(map(str, r['raw']['sizes']))} ({r['raw']['params']:,} "
            f"params, dropout {r['raw']['dropout']:g}, standardized input; recipe "
            f"{r['raw']['recipe']}, {r['raw']['recipe_rule']})",
            "   raw DNN by recipe: " + "; ".join(
                f"{name} test {100 * v['accuracy']:.2f}% (validation "
                f"{100 * v['val_accuracy']:.2f}%, trained {v['train_s']:.1f} s)"
                if v else f"{name} diverged" for name, v in r["raw"]["recipes"].items()),
            f"   TinyDL   l={t['l']}, k={t['k']}, alpha={t['alpha']:g} -> "
            f"{'-'.join(map(str, t['sizes']))} ({t['params']:,} params); recipe "
            f"{t['recipe']}, input scaling {t['scaling']} (chosen on validation at l="
            f"{t['reference']['l']}, k={t['reference']['k']}, hidden "
            f"{tuple(t['reference']['hidden'])}); size: {t['chosen']}; "
            f"{len(t['candidates_tried'])} run(s); {t['atoms']} atoms",
            f"   test accuracy: raw {100 * r['accuracy_raw']:.2f}%, TinyDL "
            f"{100 * r['accuracy_tinydl']:.2f}% "
            f"({100 * (r['accuracy_tinydl'] - r['accuracy_raw']):+.2f} points)",
        ]
        w = (36, 15, 15, 13)
        hdr = ("", "this machine", q["profile"] + "*", "paper (TK1)")
        lines.append("   " + "".join(f"{h:<{w[0]}}" if i == 0 else f"{h:>{w[i]}}"
                                     for i, h in enumerate(hdr)))
        rows = [
            ("pre-processing (ms/sample)", f"{p['preprocess_ms']:.3f}",
             f"{q['preprocess_ms']:.3f}", f"{paper['preprocess_ms']:.2f}" if paper else "-"),
            ("training energy ratio", _x(p["train_energy_ratio"]) + " m",
             _x(q["train_energy_ratio"]) + " m", _x(paper.get("train_energy_ratio"))),
            ("  with the transform included", _x(p["train_energy_ratio_with_transform"])
             + " m", _x(q["train_energy_ratio_with_transform"]) + " m", "-"),
            ("training runtime ratio", _x(p["train_time_ratio"]), _x(q["train_time_ratio"]),
             _x(paper.get("train_time_ratio"))),
            ("  with the transform included", _x(p["train_time_ratio_with_transform"]),
             _x(q["train_time_ratio_with_transform"]), "-"),
            ("execution runtime ratio (network)", _x(p["exec_time_ratio"]),
             _x(q["exec_time_ratio"]), _x(paper.get("exec_time_ratio"))),
            ("  with the transform included", _x(p["exec_time_ratio_with_transform"]),
             _x(q["exec_time_ratio_with_transform"]), "-"),
            ("network size reduction", _x(r["size_reduction"]), _x(r["size_reduction"]),
             _x(paper.get("size_reduction"))),
        ]
        for row in rows:
            lines.append("   " + "".join(f"{c:<{w[0]}}" if i == 0 else f"{c:>{w[i]}}"
                                         for i, c in enumerate(row)))
        lines.append(f"   m = modeled energy. this machine: {p['energy_source']}. "
                     f"* predicted by hal.cost for {q['profile']} (modeled).")
        for d in r.get("departures", []):
            a = d["accuracy_paper_rule"]
            lines.append(f"   departure: {d['name']}: TinyDL {100 * d['accuracy_ours']:.2f}%; "
                         f"paper's rule ({d['paper_rule']}): "
                         + ("diverged" if a is None else f"{100 * a:.2f}%"))
        if "noise" in r:
            lines.append(f"   noise experiment (Fig. 2): {r['noise']['definition']}")
            lines.append(f"   {'SNR (dB)':<10}{'TinyDL %':>10}{'change':>9}{'raw DNN %':>11}"
                         f"{'change':>9}{'TinyDL s':>10}{'raw s':>9}")
            for n in r["noise"]["rows"]:
                snr = "none" if n["snr_db"] is None else f"{n['snr_db']:g}"
                lines.append(f"   {snr:<10}{100 * n['accuracy_tinydl']:>10.2f}"
                             f"{n['delta_tinydl_points']:>+9.2f}{100 * n['accuracy_raw']:>11.2f}"
                             f"{n['delta_raw_points']:>+9.2f}{n['train_s_tinydl']:>10.2f}"
                             f"{n['train_s_raw']:>9.2f}")
            if r["noise"].get("plot"):
                lines.append(f"   plot: {r['noise']['plot']}")
        lines.append("")
    return "\n".join(lines)


def plot_noise(result: dict, path: str) -> Optional[str]:
    """Fig. 2: test error over training time at each SNR, TinyDL and the raw DNN; ``path``
    written as PNG, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        return None
    from ..io import save_png
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = ["C0", "C1", "C2", "C3", "C4"]
    for i, row in enumerate(result["noise"]["rows"]):
        snr = "no noise" if row["snr_db"] is None else f"SNR {row['snr_db']:g} dB"
        for kind, style in (("tinydl", "-"), ("raw", "--")):
            c = row[f"curve_{kind}"]
            if c["seconds"]:
                ax.plot(c["seconds"], np.array(c["error"]) * 100, style,
                        color=colors[i % len(colors)], marker="." if len(c["seconds"]) < 30
                        else None, label=f"{'TinyDL' if kind == 'tinydl' else 'DNN (raw)'}, "
                                         f"{snr}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # labels overlapped
    ax.set_xlabel("training time on this machine (s; TinyDL includes its transform)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{result['dataset']}: test error over time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)
