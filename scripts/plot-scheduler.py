#!/usr/bin/env python3
"""Plots the scheduler benchmark's CSV (benches/scheduler.rs --csv) as an
SVG: medic's CPU (% of one core) and max RSS (MB) against the number of
checks, the median of each size with its min-max range. Standard library
only.

    python3 scripts/plot-scheduler.py scheduler.csv docs/bench/scheduler-scaling.svg
"""
import csv
import statistics
import sys
from collections import defaultdict


def load(path):
    by_size = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            by_size[int(row["checks"])].append(row)
    return dict(sorted(by_size.items()))


def panel(x0, y0, w, h, title, unit, points, xmax, fmt):
    """One chart: points are (checks, lo, median, hi)."""
    ymax = max(p[3] for p in points) * 1.15 or 1
    sx = lambda v: x0 + v / xmax * w
    sy = lambda v: y0 + h - v / ymax * h
    out = [
        f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="bold">{title}</text>',
        f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="black"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="black"/>',
    ]
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<line x1="{x0 - 4}" y1="{sy(v):.1f}" x2="{x0 + w}" y2="{sy(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 8}" y="{sy(v) + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    for checks, *_ in points:
        out.append(f'<text x="{sx(checks):.1f}" y="{y0 + h + 18}" text-anchor="middle">{checks // 1000}k</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 38}" text-anchor="middle">checks (every 10 s)</text>')
    out.append(
        f'<text x="{x0 - 48}" y="{y0 + h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 - 48} {y0 + h / 2})">{unit}</text>'
    )
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(c):.1f},{sy(m):.1f}" for i, (c, _, m, _) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for c, lo, m, hi in points:
        out.append(f'<line x1="{sx(c):.1f}" y1="{sy(lo):.1f}" x2="{sx(c):.1f}" y2="{sy(hi):.1f}" stroke="#1f77b4"/>')
        out.append(f'<circle cx="{sx(c):.1f}" cy="{sy(m):.1f}" r="3.5" fill="#1f77b4"/>')
        out.append(f'<text x="{sx(c) + 6:.1f}" y="{sy(m) - 6:.1f}">{fmt(m)}</text>')
    return out


def main():
    src, dst = sys.argv[1], sys.argv[2]
    data = load(src)
    xmax = max(data) * 1.05

    def series(key, scale=1.0):
        return [
            (c, min(float(r[key]) for r in rows) * scale,
             statistics.median(float(r[key]) for r in rows) * scale,
             max(float(r[key]) for r in rows) * scale)
            for c, rows in data.items()
        ]

    runs = min(len(rows) for rows in data.values())
    svg = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="760" height="330" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    svg += panel(70, 40, 270, 220, "medic CPU", "% of one core", series("cpu_pct"), xmax, lambda v: f"{v:.0f}")
    svg += panel(450, 40, 270, 220, "medic max RSS", "MB", series("max_rss_kb", 1 / 1024), xmax, lambda v: f"{v:.0f}")
    svg.append(
        f'<text x="380" y="322" text-anchor="middle" fill="#555">median of {runs}+ runs per size, '
        f"bar: min to max (benches/scheduler.rs)</text>"
    )
    svg.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
