"""Small display filters for the portal's templates."""
from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def eta(seconds) -> str:
    """Seconds as a short duration ("1 min 05 s"); an em dash when unknown."""
    if seconds is None:
        return "—"
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def percent(value) -> str:
    try:
        return f"{100 * float(value):.0f}%"
    except (TypeError, ValueError):
        return ""
