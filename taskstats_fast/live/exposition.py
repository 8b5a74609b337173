"""The text exposition formats of /metrics: Prometheus text 0.0.4 and OpenMetrics 1.0.0.

Registry entries chosen by the HTTP ``Accept`` header, and the renderer both share: a family is
its header plus one cached ``name{labels} `` prefix and one value per sample, joined in one pass
(``prometheus_client``'s own exposition costs microseconds per sample: bench/bench_exporter.py).
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from .series import Labels, label_text

__all__ = ["ExpositionFormat", "TEXT_FORMAT", "OPENMETRICS_FORMAT", "negotiate", "Samples", "scalar", "render"]


class ExpositionFormat(NamedTuple):
    """One text exposition format: how a counter family's header is named and how the text ends."""
    content_type: str
    counter_header_suffix: str   # the 0.0.4 text format names a counter family with its _total
    trailer: str


TEXT_FORMAT = ExpositionFormat("text/plain; version=0.0.4; charset=utf-8", "_total", "")
OPENMETRICS_FORMAT = ExpositionFormat("application/openmetrics-text; version=1.0.0; charset=utf-8", "", "# EOF\n")
_FORMAT_BY_MEDIA_TYPE = {"application/openmetrics-text": OPENMETRICS_FORMAT}


def negotiate(accept: Optional[str]) -> ExpositionFormat:
    """The format an HTTP ``Accept`` header asks for: OpenMetrics when offered, else the text format."""
    for part in (accept or "").split(","):
        fmt = _FORMAT_BY_MEDIA_TYPE.get(part.split(";")[0].strip())
        if fmt is not None:
            return fmt
    return TEXT_FORMAT


_SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "summary": ("_count", "_sum")}


class Samples(NamedTuple):
    """A metric family at scrape time, ready for either output."""
    name: str
    type: str
    help: str
    sample_names: Sequence[str]     # per sample
    labels: Sequence[Labels]        # per sample (only when asked for: the text needs the prefixes alone)
    prefixes: Sequence[str]         # per sample: 'name{labels} ', cached for the series
    values: Sequence[Any]           # per sample


def scalar(name: str, typ: str, help: str, samples: Sequence[Tuple[Labels, Any]]) -> Samples:
    """A small family built per scrape (no cache): a summary's value is a (count, sum) pair."""
    names, labels, prefixes, values = [], [], [], []
    suffixes = _SAMPLE_SUFFIXES[typ]
    for lbl, value in samples:
        for suffix, part in zip(suffixes, value if len(suffixes) > 1 else (value,)):
            names.append(name + suffix)
            labels.append(lbl)
            prefixes.append(f"{name}{suffix}{label_text(lbl)} ")
            values.append(part)
    return Samples(name, typ, help, names, labels, prefixes, values)


def render(families: Sequence[Samples], fmt: ExpositionFormat) -> bytes:
    out: List[str] = []
    for fam in families:
        header = fam.name + (fmt.counter_header_suffix if fam.type == "counter" else "")
        out.append(f"# HELP {header} {fam.help}\n# TYPE {header} {fam.type}\n")
        if fam.prefixes:
            out.append("\n".join(map(str.__add__, fam.prefixes, map(repr, fam.values))))
            out.append("\n")
    out.append(fmt.trailer)
    return "".join(out).encode()


