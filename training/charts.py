"""A loss curve as inline SVG, drawn on the server (no chart library to ship)."""

from django.utils.html import format_html, format_html_join

WIDTH, HEIGHT, PAD = 420, 160, 28


def _polyline(points: list[tuple[float, float]], x_max: float, y_min: float, y_max: float):
    span = (y_max - y_min) or 1.0
    coords = (
        (
            PAD + (x / (x_max or 1)) * (WIDTH - 2 * PAD),
            HEIGHT - PAD - ((y - y_min) / span) * (HEIGHT - 2 * PAD),
        )
        for x, y in points
    )
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)


def loss_curve_svg(history: list[dict]) -> str:
    """Training loss (solid) and validation loss (dashed) against step."""
    train = [(p["step"], p["loss"]) for p in history if p.get("loss") is not None]
    val = [(p["step"], p["val_loss"]) for p in history if p.get("val_loss") is not None]
    if not train and not val:
        return format_html('<p class="muted">{}</p>', "No loss reported yet.")
    values = [y for _, y in train + val]
    y_min, y_max = min(values), max(values)
    x_max = max(x for x, _ in train + val)
    lines = [
        (_polyline(series, x_max, y_min, y_max), css)
        for series, css in ((train, "train"), (val, "val"))
        if series
    ]
    return format_html(
        '<svg class="loss-curve" viewBox="0 0 {w} {h}" role="img" aria-label="loss curve">'
        '<line x1="{p}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>'
        '<line x1="{p}" y1="{p}" x2="{p}" y2="{b}" class="axis"/>'
        '<text x="2" y="{p}" class="tick">{ymax}</text>'
        '<text x="2" y="{b}" class="tick">{ymin}</text>'
        '<text x="{r}" y="{h}" class="tick" text-anchor="end">step {xmax}</text>'
        "{lines}</svg>",
        w=WIDTH,
        h=HEIGHT,
        p=PAD,
        b=HEIGHT - PAD,
        r=WIDTH - PAD,
        ymax=f"{y_max:.3f}",
        ymin=f"{y_min:.3f}",
        xmax=x_max,
        lines=format_html_join("", '<polyline points="{}" class="series {}" fill="none"/>', lines),
    )
