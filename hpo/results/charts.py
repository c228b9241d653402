"""A chart drawn by optuna-dashboard itself (plotly, stored with `save_plotly_graph_object`): accuracy against
parameter count, every completed trial beside what the paper reports for its configurations and, after
`hpo compare`, the test re-runs. Interactive where the report's PNG is not: hover names the trial."""

from __future__ import annotations

import plotly.graph_objects as go
from optuna_dashboard import save_plotly_graph_object

from hpo.display import MIN_SPREAD_N
from hpo.search.papers import study_paper
from hpo.sources import recorded_shape
from hpo.training.models import mlp_param_count, param_count
from hpo.trials import completed, searched, study_attrs

# A fixed id: every report replaces the chart instead of adding one.
PARAMS_CHART_ID = "hpo-accuracy-vs-params"


def params_figure(study, result: dict | None) -> go.Figure:
    """Accuracy (validation for trials, the paper's numbers and test re-runs as marked) against parameters."""
    fig = go.Figure()
    complete = searched(completed(study))  # a confirmation run repeats its trial's configuration
    for label, trials, symbol in (("searched trial (validation)",
                                   [t for t in complete if not t.user_attrs.get("baseline")], "circle"),
                                  ("paper configuration, trained here (validation)",
                                   [t for t in complete if t.user_attrs.get("baseline")], "diamond")):
        # Rounded: the figure is stored as study system attributes, which the dashboard reads on every load.
        fig.add_trace(go.Scatter(x=[t.user_attrs.get("n_params", 0) for t in trials],
                                 y=[round(t.values[0], 4) for t in trials], customdata=[t.number for t in trials],
                                 mode="markers", name=label, marker={"symbol": symbol, "size": 7},
                                 hovertemplate="trial %{customdata}: %{y:.2%} with %{x:,} parameters<extra></extra>"))
    s = study_attrs(study)
    shape, n_classes = recorded_shape(s.get("split") or {})
    paper = study_paper(study_attrs(study))
    if paper:
        rows = [r for t in s.get("tables", []) for r in paper.table(t)]
        fig.add_trace(go.Scatter(x=[mlp_param_count(shape, r.widths, n_classes) for r in rows],
                                 y=[r.reported for r in rows], text=[r.name for r in rows], mode="markers",
                                 name="paper-reported",
                                 marker={"symbol": "star-open", "size": 12, "color": "red"},
                                 hovertemplate="%{text}: the paper reports %{y:.2%}<extra></extra>"))
    if result:
        n = len(result["seeds"])
        spread = n >= MIN_SPREAD_N  # a std from fewer runs is no basis for error bars (hpo.display)
        shown = "mean ± std" if spread else f"mean of {n} seed{'s' * (n > 1)}"
        for kind, label, color in (("paper", "paper configuration", "black"),
                                   ("optimum", "automated optimum", "green")):
            entries = [e for e in result["entries"] if e["kind"] == kind]
            fig.add_trace(go.Scatter(
                x=[param_count(e["hp"], shape, n_classes) for e in entries], y=[e["stats"]["mean"] for e in entries],
                error_y={"type": "data", "array": [e["stats"]["std"] for e in entries], "visible": spread},
                text=[e["name"] for e in entries],
                mode="markers", name=f"{label}, {result['dataset']} test re-run ({shown})",
                marker={"symbol": "square", "size": 8, "color": color},
                hovertemplate="%{text}: %{y:.2%} test<extra></extra>"))
    # template "none": plotly's default theme alone is 6.5 kB of JSON in every stored figure.
    fig.update_layout(title=f"{study.study_name}: accuracy against parameter count", xaxis_title="parameters",
                      yaxis_title="accuracy", xaxis_type="log",
                      legend={"font": {"size": 10}, "orientation": "h", "y": -0.25}, template="none",
                      xaxis_showgrid=True, yaxis_showgrid=True)
    return fig


def save_params_chart(study, result: dict | None) -> None:
    save_plotly_graph_object(study, params_figure(study, result), graph_object_id=PARAMS_CHART_ID)
