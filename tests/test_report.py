"""The report: pictures exist and are referenced, the Pareto front for a multi-objective study, boundary
warnings, and a note instead of importances when there are too few trials."""

from __future__ import annotations

import re

import matplotlib
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo.cli import main
from hpo.display import summary_rows
from hpo.results import plots
from hpo.results.plots import _bar, plot_importances
from hpo.results.report import boundary_warnings, write_report
from tests.test_export import smoke_study


def _pictures(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def test_report_of_a_pareto_study_draws_the_front_without_a_compare(tmp_path, monkeypatch, tiny_mnist):
    smoke_study(tmp_path, monkeypatch, objectives="[accuracy, params]", n_trials=6, sampler="random")
    assert main(["report", "t", "--smoke"]) == 0
    folder = tmp_path / "runs" / "t-smoke"
    report = (folder / "report.md").read_text()
    assert "### Pareto front: accuracy against parameter count" in report
    assert "Not run yet: `hpo compare t --smoke`" in report  # a smoke study's next step is a smoke one
    for name in _pictures(report):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert "params.png" in _pictures(report) and "Pareto front" in report


def _study_with_best(tmp_path, space: str, params: dict, dists: dict) -> optuna.Study:
    (tmp_path / "sp.yaml").write_text(space)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space_file", str(tmp_path / "sp.yaml"))
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=0.9,
                                              user_attrs={"config": {}, "n_params": 100, "val_curve": [0.8, 0.9]}))
    return study


def test_boundary_warnings_name_the_parameter_and_the_edge(tmp_path):
    space = ("depth: 1\nwidth: {low: 8, high: 64}\nlr: {low: 1e-4, high: 1e-1, log: true}\n"
             "dropout: {low: 0.0, high: 0.5}\nbatch_size: {choices: [32, 64, 128]}\n")
    dists = {"width": IntDistribution(8, 64), "lr": FloatDistribution(1e-4, 1e-1, log=True),
             "dropout": FloatDistribution(0.0, 0.5), "batch_size": CategoricalDistribution((32, 64, 128))}
    study = _study_with_best(tmp_path, space, {"width": 30, "lr": 0.1, "dropout": 0.0, "batch_size": 128}, dists)
    warnings = boundary_warnings(study)
    assert len(warnings) == 2, warnings  # dropout 0 is "off", not an edge anything lies beyond
    assert "`lr` = 0.1 sits at the high end of [0.0001, 0.1] (log)" in warnings[0]
    assert "`batch_size` = 128 sits at the high end of choices [32, 64, 128]" in warnings[1]

    inside = _study_with_best(tmp_path, space, {"width": 30, "lr": 0.003, "dropout": 0.2, "batch_size": 64}, dists)
    assert boundary_warnings(inside) == []
    report = write_report(inside, None, tmp_path / "r").read_text()
    assert "inside its search space" in report


def test_best_trials_crowding_an_edge_are_a_warning_though_the_best_sits_inside(tmp_path):
    (tmp_path / "sp.yaml").write_text("depth: 1\nwidth: 32\nlabel_smoothing: {low: 0.0, high: 0.2}\n"
                                      "dropout: {low: 0.0, high: 0.5}\n")
    dists = {"label_smoothing": FloatDistribution(0.0, 0.2), "dropout": FloatDistribution(0.0, 0.5)}

    def study(smoothing):
        s = optuna.create_study(direction="maximize")
        s.set_user_attr("space_file", str(tmp_path / "sp.yaml"))
        for i, ls in enumerate(smoothing):  # dropout near 0 in every trial: "off", nothing lies below it
            s.add_trial(optuna.trial.create_trial(params={"label_smoothing": ls, "dropout": 0.01}, distributions=dists,
                                                  value=0.9 - 0.001 * i))
        return s

    crowded = boundary_warnings(study([0.18, 0.17, 0.19, 0.165, 0.175, 0.185, 0.17, 0.162, 0.02, 0.18, 0.05, 0.1]))
    assert crowded == ["The best 10 searched trials: `label_smoothing` in the highest fifth of [0.0, 0.2] in 9 "
                       f"of them ({tmp_path / 'sp.yaml'}); the search presses against that edge: widen the range "
                       "and run more trials."], crowded
    assert boundary_warnings(study([0.18, 0.17, 0.02, 0.165, 0.05, 0.1, 0.17, 0.16, 0.02, 0.18, 0.05, 0.1])) == []
    assert boundary_warnings(study([0.18] * 9)) == []  # fewer than 10 searched trials: no claim


def test_too_few_trials_give_a_note_instead_of_importances(tmp_path):
    study = _study_with_best(tmp_path, "depth: 1\nlr: {low: 1e-4, high: 1e-1, log: true}\n", {"lr": 0.01},
                             {"lr": FloatDistribution(1e-4, 1e-1, log=True)})
    drawn, note = plot_importances(study, tmp_path / "imp.png")
    assert not drawn and "at least 3 completed trials" in note and not (tmp_path / "imp.png").exists()
    report = write_report(study, None, tmp_path / "r").read_text()
    assert "at least 3 completed trials" in report and "importances.png" not in _pictures(report)
    # no paper: one panel, and the words say so (not "left … right, a close-up of the paper's configurations")
    assert "Left, every completed trial" not in report and "Every completed trial (validation)" in report
    for name in _pictures(report):
        assert (tmp_path / "r" / name).is_file()


def test_the_trials_section_is_a_markdown_table(tmp_path, monkeypatch, tiny_mnist):
    smoke_study(tmp_path, monkeypatch)
    assert main(["report", "t", "--smoke"]) == 0
    report = (tmp_path / "runs" / "t-smoke" / "report.md").read_text()
    section = report.split("## Trials (validation)")[1]
    assert "| trial | kind | configuration | val acc | reported | params | epochs | time | outcome |" in section
    assert "```" not in section.split("\n## ")[0] and "┃" not in report and "│" not in report


def test_params_picture_bars_follow_the_number_of_seeds_and_outliers_do_not_set_the_axis(tmp_path, monkeypatch):
    assert _bar({"n": 3, "mean": 0.88, "std": 0.01, "min": 0.87, "max": 0.89}) == (0.88, [[0.01], [0.01]])
    mean, (lo, hi) = _bar({"n": 2, "mean": 0.88, "std": 0.014, "min": 0.87, "max": 0.89})  # the range, not a std
    assert mean == 0.88 and abs(lo[0] - 0.01) < 1e-12 and abs(hi[0] - 0.01) < 1e-12
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("paper", "youn_hong_2024")
    study.set_user_attr("tables", [3])
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for i, acc in enumerate([0.86, 0.87, 0.1]):  # 0.1: a diverged trial
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=acc,
                                                  user_attrs={"n_params": 40000 + i, "config": {}}))
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, tight=True: seen.update(ylim=fig.axes[0].get_ylim()))
    plots.plot_params(study, None, tmp_path / "p.png")
    assert 0.7 < seen["ylim"][0] < 0.86 and seen["ylim"][1] > 0.9707  # the paper's 97% and the trials, not 0.1


def test_before_compare_the_params_picture_rings_the_best_searched_trial_as_the_optimum(tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("paper", "youn_hong_2024")
    study.set_user_attr("tables", [3])
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for i, acc in enumerate([0.86, 0.88, 0.87]):
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=acc,
                                                  user_attrs={"n_params": 40000 + 1000 * i, "config": {}}))
    seen = {}

    def keep(fig, path, tight=True):
        rings = [(tuple(c.get_offsets()[0]), c.get_facecolors().size) for a in fig.axes for c in a.collections
                 if len(c.get_offsets()) == 1 and c.get_facecolors().size == 0]  # an unfilled one-point marker
        seen.update(rings=rings, legend=[t.get_text() for t in fig.legends[0].get_texts()],
                    close_up=fig.axes[1].get_xlim(), ticks=len(fig.axes[1].get_xticks()))
    monkeypatch.setattr(plots, "save", keep)
    plots.plot_params(study, None, tmp_path / "p.png")
    assert [xy for xy, _ in seen["rings"]] == [(41000.0, 0.88)] * 2  # both panels, trial 1
    assert "automated optimum (ring: its trial, validation)" in seen["legend"]
    assert seen["close_up"][0] < 41000 < seen["close_up"][1]
    assert seen["ticks"] <= 7  # written-out labels side by side must not run into each other


def test_the_history_legend_names_only_the_kinds_of_trial_it_draws(tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize")  # searched trials only: no baselines, nothing pruned
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for acc in (0.86, 0.88):
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=acc))
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, tight=True: seen.update(
        legend=[t.get_text() for t in fig.axes[0].get_legend().get_texts()]))
    plots.plot_history(study, tmp_path / "h.png")
    assert seen["legend"] == ["searched trial", "best so far"]


def test_the_params_picture_s_log_axis_holds_the_paper_s_configurations_as_well_as_the_trials(tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("paper", "youn_hong_2024")
    study.set_user_attr("tables", [3])  # 784-50-30-10 .. 784-60-40-10: 41,090 to 50,890 parameters
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for i, acc in enumerate([0.86, 0.87]):  # trials of one size, far below the paper's
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=acc,
                                                  user_attrs={"n_params": 30000 + i, "config": {}}))
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, tight=True: seen.update(xlim=fig.axes[0].get_xlim()))
    plots.plot_params(study, None, tmp_path / "p.png")
    assert seen["xlim"][0] < 30000 and seen["xlim"][1] > 50890 * 1.05  # no marker on (or past) the edge


def test_importances_keep_optuna_s_plot_style_to_their_own_picture(tmp_path):
    """optuna's matplotlib importances switch to its ggplot style globally; the report's other pictures keep
    matplotlib's own."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1), n_trials=12)
    before = dict(matplotlib.rcParams)
    drawn, _ = plot_importances(study, tmp_path / "imp.png")
    assert drawn and (tmp_path / "imp.png").is_file()
    assert matplotlib.rcParams["axes.facecolor"] == before["axes.facecolor"]


def test_importances_of_two_parameters_get_room_and_no_legend_over_the_bars(tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1), n_trials=12)
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, tight=True: seen.update(
        legend=fig.axes[0].get_legend(), height=fig.get_size_inches()[1]))
    drawn, _ = plot_importances(study, tmp_path / "imp.png")
    assert drawn and seen["legend"] is None and seen["height"] >= 2.8


def test_the_curves_legend_says_which_choices_its_lines_are(tmp_path, monkeypatch):
    study = optuna.create_study(direction="maximize")  # the activations study's kind: one choice and a seed vary
    dist = {"activation": CategoricalDistribution(["relu", "tanh"]), "seed": IntDistribution(0, 2),
            "lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for act, seed, acc in (("relu", 0, 0.88), ("tanh", 2, 0.87)):
        study.add_trial(optuna.trial.create_trial(
            params={"activation": act, "seed": seed, "lr": 1e-3}, distributions=dist, value=acc,
            user_attrs={"val_curve": [acc - 0.01, acc]}))
    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path, tight=True: seen.update(
        legend=[t.get_text() for t in fig.axes[0].get_legend().get_texts()]))
    plots.plot_curves(study, tmp_path / "c.png")
    assert seen["legend"] == ["trial 0 (activation=relu, seed=0): 0.8800", "trial 1 (activation=tanh, seed=2): 0.8700"]


def test_replicates_that_differ_only_in_seed_get_a_sentence_not_an_importance_of_1(tmp_path):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 0.8 + 0.001 * t.suggest_int("seed", 0, 4), n_trials=8)
    drawn, note = plot_importances(study, tmp_path / "imp.png")
    assert not drawn and "only the seed varies" in note and not (tmp_path / "imp.png").exists()


def test_a_rarely_drawn_conditional_parameter_gets_a_sentence_not_a_stderr_warning(tmp_path, recwarn):
    """A parameter drawn in one completed trial only (augment_shift under augment: shift_flip) makes optuna's
    PED-ANOVA warn; the report's note says it, and no warning reaches the user's terminal."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(t):
        acc = t.suggest_float("lr", 0, 1)
        if t.number == 3:  # the one trial that drew shift_flip
            acc += 0.01 * t.suggest_int("augment_shift", 0, 2)
        return acc
    study.optimize(objective, n_trials=20)
    assert sum("augment_shift" in t.params for t in study.trials) == 1
    drawn, note = plot_importances(study, tmp_path / "imp.png")
    assert drawn and "The importance of `augment_shift` may be inaccurate" in note
    assert not [w for w in recwarn if "Some regimes" in str(w.message)]


def test_the_trials_table_has_a_reported_column_only_when_a_baseline_has_a_reported_number(tmp_path, monkeypatch,
                                                                                             tiny_mnist):
    """The ground floor knows no paper: `reported` is a baseline's own `paper_reported` number, and a study
    whose baselines report none (or that has none) gets no empty column."""
    study = smoke_study(tmp_path, monkeypatch)
    _, columns, rows = summary_rows(study)
    at = columns.index("reported")
    assert {r[at] for r in rows if r[1] == "baseline"} >= {"0.9698"} and all(len(r) == len(columns) for r in rows)
    bare = optuna.create_study(direction="maximize")
    for i, baseline in enumerate(("a configuration without a reported number", None)):
        trial = bare.ask()
        trial.set_user_attr("config", {"widths": [8], "activation": "relu", "optimizer": "adam", "lr": 1e-3})
        if baseline:
            trial.set_user_attr("baseline", baseline)
        bare.tell(trial, 0.5 + i / 10)
    _, columns, rows = summary_rows(bare)
    assert "reported" not in columns and len(rows) == 2 and all(len(r) == len(columns) for r in rows)
