"""The metric names a PromQL expression reads, and the names a ``/metrics`` page exposes.

Not a PromQL parser: a tokenizer that drops string literals, label matchers (``{...}``), grouping lists
(``by (...)``, ``without (...)``, ``on (...)``, ``ignoring (...)``, ``group_left (...)``) and durations
(``[5m]``), then keeps every identifier that is not a function, an aggregation, a keyword or a Grafana
variable. That is enough for the dashboard's expressions (tests/unit/test_deploy_files.py holds examples)
and fails loudly the other way: a word it wrongly takes for a metric name fails the dashboard test.
"""

from __future__ import annotations

import re

# Functions and aggregations of PromQL (Prometheus 3), and its keywords.
FUNCTIONS = frozenset(
    """
    abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time
    day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
    double_exponential_smoothing hour idelta increase irate label_join label_replace last_over_time ln log10 log2
    mad_over_time max_over_time min_over_time minute month predict_linear present_over_time quantile_over_time
    rate resets round scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time time timestamp vector year acos acosh asin asinh atan atanh cos cosh deg pi
    rad sin sinh tan tanh
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    by without on ignoring group_left group_right bool and or unless offset inf nan
    """.split()
)
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGE = re.compile(r"\[[^\]]*\]")
VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
# A number or a duration (0.99, 1e3, 5m, 1h30m) is one token, so its letters never read as a name.
TOKEN = re.compile(r"\d[\w.]*|[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` reads."""
    text = STRING.sub(" ", expr)
    text = VARIABLE.sub(" ", text)
    text = MATCHERS.sub(" ", text)
    text = RANGE.sub(" ", text)
    text = GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in TOKEN.finditer(text):
        word = match.group(0)
        if word[0].isdigit() or word.lower() in FUNCTIONS:
            continue
        names.add(word)
    return names


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
COUNTER_SUFFIXES = ("_total", "_created")


def exposed_names(metrics_text: str) -> set[str]:
    """The sample names a Prometheus text page has or will have: every sample line's name, and for each
    ``# TYPE`` line the names its type implies (a labelled family shows no sample before its first
    observation, but its TYPE line is there from the start)."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
            elif kind == "summary":
                names.update(name + suffix for suffix in ("_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
