"""The tuning budget (bench.tuning): declared spaces, seeded and exact budgets, selection on
validation with the test split sealed, ties, resume, and how the report shows a search."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import CellConfig
from bench.errors import UserError
from bench.grid import GridRequest, method_settings, plan
from bench.harness import run_cell as real_run_cell
from bench.records import load_records
from bench.tuning import run_tuning
from bench.tuning_plan import TuneRequest, resolve_space, search_groups
from bench.tuning_select import select, trial_result
from methods import get_method, list_methods
from methods.registry import TRAIN_KEYS

runner = CliRunner()


def request(data_root: Path, results: Path, methods: list[str], *, budget: int = 4,
            seed: int = 0, seeds=(0,), spaces=None, sets=None, epochs: int = 2,
            **kw) -> GridRequest:  # fmt: skip
    req = GridRequest(methods=methods, datasets=["pneumoniamnist"], seeds=list(seeds),
                     backbone="test_vit", pretrained=False, img_size=32, epochs=epochs,
                     batch_size=16,
                     results=results, data_root=data_root, sets=sets or {},
                     tune=TuneRequest(budget=budget, seed=seed, spaces=spaces or {}), **kw)  # fmt: skip
    return req


def planted(peak: float = 1e-2):
    """A validation AUC that peaks at learning rate `peak` and weight decay 1e-3."""

    def val(cell: CellConfig) -> float:
        off = abs(math.log10(cell.lr) - math.log10(peak))
        return 0.9 - 0.1 * off - (0.05 if cell.weight_decay != 1e-3 else 0.0)

    return val


def fake_cell(score=None, calls=None, stop_after=None):
    """A run_cell that trains nothing: trials score `score(cell)` on validation, finals report
    a test score; it fails the test if a trial is handed the test split."""

    def run(cell, data, source, *, on_step=None, on_preload=None):
        if calls is not None:
            calls.append(cell)
            if stop_after is not None and len(calls) > stop_after:
                raise KeyboardInterrupt  # what the first Ctrl-C raises mid-cell
        record = {"schema": 1, "run_id": cell.run_id, "error": None, "config": cell.to_dict(),
                  "cost": {"wall_s": 0.0}, "started_at": f"2026-01-01T00:00:{len(calls or [])}"}  # fmt: skip
        if cell.role == "trial":
            assert "test" not in data.splits, "a trial was handed the test split"
            value = (score or planted())(cell)
            record.update(status="trial", trial=trial_result("ok", "auc", value),
                          metrics={"primary_metric": "auc", "primary": None, "test": {},
                                   "val": {"auc": value}})  # fmt: skip
        else:
            record.update(status="ok", metrics={"primary_metric": "auc", "primary": 0.8,
                                                "test": {"auc": 0.8}})  # fmt: skip
        return record

    return run


# ------------------------------------------------------------------------- declared spaces


def test_every_method_declares_a_space_for_its_own_optimizer():
    for name in list_methods():
        spec = get_method(name)
        space = spec.space_for(spec.optimizer)
        assert space is not None, f"{name} declares no search space for {spec.optimizer}"
        for key, values in space.axes.items():
            assert key in TRAIN_KEYS or key in spec.hparams, (name, key)
            default = spec.train_defaults[key] if key in TRAIN_KEYS else spec.hparams[key]
            assert values and len(set(values)) == len(values), (name, key, values)
            for v in values:  # each value has the default's type, as --set would coerce it
                assert isinstance(v, type(default)) or (
                    isinstance(default, float) and isinstance(v, (int, float))
                ), (name, key, v)
        assert all(v > 0 for v in space.lr) and all(v >= 0 for v in space.weight_decay)


def test_a_method_without_a_declared_space_searches_its_lr_around_the_default(monkeypatch):
    """The 22 methods whose papers give no grid declare nothing: their space is the default lr
    x {0.1, 0.3, 1, 3, 10} and the shared weight decays."""
    from methods import registry, search

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("no-space", lr=2e-3)(lambda model, *, k=1: model)
    space = get_method("no-space").space_for("adamw")
    assert space.lr == (2e-4, 6e-4, 2e-3, 6e-3, 2e-2)
    assert space.weight_decay == search.WD_GRID and space.hparams == {}
    assert space.source == search.DEFAULT_SPACE_SOURCE
    assert get_method("ia3").space_for("adamw").lr == (3e-4, 9e-4, 3e-3, 9e-3, 3e-2)


def test_vpt_searches_the_papers_grid_and_scales_lr_by_batch_over_256(tiny_data_root, tmp_path):
    spec = get_method("vpt")
    space = spec.space_for("sgd")
    assert space.lr == (5.0, 2.5, 1.0, 50.0, 25.0, 10.0, 0.5, 0.25, 0.1)
    assert space.weight_decay == (0.01, 1e-3, 1e-4, 0.0)
    assert space.hparams == {"prompt_length": (1, 5, 10, 50, 100, 200)}
    # the default is base 0.5 for batch 256: 0.0625 at 32 (the old default, so old run ids hold)
    assert spec.default_lr(32) == 0.0625 and spec.default_lr(128) == 0.25
    req = request(tiny_data_root, tmp_path, ["vpt"])
    req = req.replace(batch_size=64)
    assert method_settings("vpt", req)[0]["lr"] == 0.125
    req = req.replace(sets={"vpt": {"lr": "0.3"}})  # a rate given by hand is used as it is
    assert method_settings("vpt", req)[0]["lr"] == 0.3
    # lora declares no rule: its default is the same at any batch size
    assert get_method("lora").default_lr(4) == get_method("lora").default_lr(256) == 1e-3


def test_trial_and_default_records_say_the_rule_and_the_effective_lr(tiny_data_root, tmp_path):
    req = request(tiny_data_root, tmp_path, ["vpt"], budget=3,
                  spaces={"vpt": {"prompt_length": "1", "weight_decay": "0"}})  # fmt: skip
    the_plan = plan(req, progress=False)
    (cell,) = the_plan.cells
    note = the_plan.annotations[cell.run_id]["hyperparameters"]
    assert note["regime"] == "fixed" and note["source"] == "method defaults"
    assert note["lr"] == {"effective": 0.5 * 16 / 256, "rule": "lr = base lr x batch/256",
                          "base": 0.5, "batch_size": 16}  # fmt: skip
    (group,) = search_groups(the_plan, req)
    for config, trial in zip(group.configs, group.trials, strict=True):
        assert trial.lr == config["lr"] * 16 / 256  # base x batch/256
        assert trial.hparams["prompt_length"] == 1 and trial.weight_decay == 0.0
        assert trial.seed == 0 and trial.role == "trial"


# ------------------------------------------------------------------ order, budget, resume


def test_search_order_is_seeded_and_a_larger_budget_extends_a_smaller_one(tiny_data_root, tmp_path):
    def trials(budget, seed):
        req = request(tiny_data_root, tmp_path, ["lora"], budget=budget, seed=seed)
        (group,) = search_groups(plan(req, dry_run=True), req)
        return group

    a, b = trials(5, 0), trials(5, 0)
    assert [c.run_id for c in a.trials] == [c.run_id for c in b.trials]  # same seed, same trials
    assert a.configs == b.configs and a.mode == "random" and a.space.size == 100
    assert trials(9, 0).configs[:5] == a.configs  # budget 9 tries budget 5's trials first
    assert trials(5, 1).configs != a.configs  # another seed, another sample
    whole = a.space.order(0)
    axes = a.space.axes
    assert len(whole) == 100 and sorted(map(json.dumps, whole)) == sorted(
        json.dumps(dict(zip(axes, v, strict=True))) for v in itertools.product(*axes.values())
    )


@pytest.mark.parametrize(("budget", "space", "expect_trials", "mode"), [
    (7, None, 7, "random"),  # linear's AdamW space has 20 configurations
    (1, None, 1, "random"),
    (5, {"lr": "1e-3,1e-2", "weight_decay": "0"}, 2, "grid"),  # a smaller space runs whole
])  # fmt: skip
def test_the_budget_is_respected_exactly(tiny_data_root, tmp_path, budget, space, expect_trials,
                                         mode):  # fmt: skip
    calls: list[CellConfig] = []
    req = request(tiny_data_root, tmp_path / "r", ["linear"], budget=budget, seeds=(0, 1, 2),
                  spaces={"linear": space} if space else None)  # fmt: skip
    the_plan = plan(req, progress=False)
    out = run_tuning(the_plan, req, progress=False, run_cell=fake_cell(calls=calls))
    trials = [c for c in calls if c.role == "trial"]
    assert len(trials) == expect_trials and len({c.run_id for c in trials}) == expect_trials
    assert out.trials.ran == expect_trials
    (group,) = search_groups(the_plan, req)
    assert group.mode == mode
    finals = [c for c in calls if c.role == "final"]
    assert [c.seed for c in finals] == [0, 1, 2]  # the selected config at every seed
    assert len({(c.lr, c.weight_decay) for c in finals}) == 1
    records = load_records(tmp_path / "r").records
    assert sum(r["status"] == "trial" for r in records) == expect_trials
    assert sum(r["status"] == "ok" for r in records) == 3


def test_a_killed_search_resumes_without_repeating_a_finished_trial(tiny_data_root, tmp_path):
    spaces = {"linear": {"lr": "1e-4,1e-3,1e-2,1e-1", "weight_decay": "0,1e-3"}}
    calls: list[CellConfig] = []
    req = request(tiny_data_root, tmp_path / "r", ["linear"], budget=6, spaces=spaces)
    out = run_tuning(plan(req, progress=False), req, progress=False,
                     run_cell=fake_cell(calls=calls, stop_after=3))  # fmt: skip
    assert out.interrupted and out.finals is None  # nothing selected from a partial search
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("*.json")}
    assert len(done) == 3
    again: list[CellConfig] = []
    out = run_tuning(
        plan(req, progress=False), req, progress=False, run_cell=fake_cell(calls=again)
    )
    assert not out.interrupted
    assert [c.role for c in again] == ["trial"] * 3 + ["final"]  # only the 3 missing trials
    assert not {f"{c.run_id}.json" for c in again} & set(done)
    for name, mtime in done.items():  # the finished trials' records are untouched
        assert (tmp_path / "r" / name).stat().st_mtime_ns == mtime
    # ...and it selects what an uninterrupted search selects
    whole: list[CellConfig] = []
    req2 = request(tiny_data_root, tmp_path / "r2", ["linear"], budget=6, spaces=spaces)
    run_tuning(plan(req2, progress=False), req2, progress=False, run_cell=fake_cell(calls=whole))
    assert again[-1].run_id == whole[-1].run_id


def test_a_failed_trial_holds_back_selection_until_a_rerun_finishes_it(tiny_data_root, tmp_path):
    spaces = {"linear": {"lr": "1e-3,1e-2", "weight_decay": "1e-3"}}
    req = request(tiny_data_root, tmp_path, ["linear"], budget=2, spaces=spaces)
    crash = fake_cell()

    def flaky(cell, data, source, **kw):
        rec = crash(cell, data, source, **kw)
        if cell.lr == 1e-2:  # the planted best crashes for an environmental reason
            rec.update(status="failed", error="OSError: disk", trial=None)
        return rec

    out = run_tuning(plan(req, progress=False), req, progress=False, run_cell=flaky)
    assert out.waiting == ["pneumoniamnist/linear"] and not out.finals.records
    out = run_tuning(plan(req, progress=False), req, progress=False, run_cell=fake_cell())
    assert out.selected == {"pneumoniamnist/linear": {"lr": 1e-2, "weight_decay": 1e-3}}


# ---------------------------------------------------------------------------- selection


def test_the_planted_best_learning_rate_is_selected(tiny_data_root, tmp_path):
    # full searches KMnP's base grid {1e-3, 1e-4, 5e-4, 5e-3} x batch/256 and the decays its
    # AdamW runs, {0.01, 0} (any wd > 0 becomes 0.01 there); the validation score peaks at base
    # 5e-4 (effective 5e-4 x 16/256), and both decays score alike: the tie goes to the smaller
    assert get_method("full").space_for("adamw").weight_decay == (0.01, 0.0)
    req = request(tiny_data_root, tmp_path, ["full"], budget=8)  # the whole 4 x 2 grid
    out = run_tuning(plan(req, progress=False), req, progress=False,
                     run_cell=fake_cell(planted(5e-4 * 16 / 256)))  # fmt: skip
    (final,) = out.finals.records
    assert final["config"]["lr"] == pytest.approx(5e-4 * 16 / 256)
    assert final["config"]["weight_decay"] == 0.0
    assert final["tuning"]["mode"] == "grid" and len(final["tuning"]["trials"]) == 8
    assert final["hyperparameters"]["lr"]["base"] == 5e-4
    assert final["hyperparameters"]["regime"] == "tuned"


def test_ties_go_to_the_smaller_lr_then_the_smaller_weight_decay(tiny_data_root, tmp_path):
    req = request(tiny_data_root, tmp_path, ["vpt"], budget=200,
                  spaces={"vpt": {"prompt_length": "1"}})  # fmt: skip
    (group,) = search_groups(plan(req, dry_run=True), req)
    flat = [
        {"status": "trial", "trial": trial_result("ok", "accuracy", 0.75)} for _ in group.trials
    ]
    best = select(group, flat)
    assert group.configs[best]["lr"] == 0.1 and group.configs[best]["weight_decay"] == 0.0
    # a better score wins whatever its lr; diverged trials never win
    records = list(flat)
    big = next(i for i, c in enumerate(group.configs) if c["lr"] == 50.0)
    records[big] = {"status": "trial", "trial": trial_result("ok", "accuracy", 0.8)}
    assert select(group, records) == big
    records[big] = {"status": "trial", "trial": trial_result("diverged", "accuracy", None)}
    assert group.configs[select(group, records)]["lr"] == 0.1
    # a lower-is-better metric selects the smallest value
    low = [{"status": "trial", "trial": trial_result("ok", "ece", 0.2)} for _ in group.trials]
    low[big] = {"status": "trial", "trial": trial_result("ok", "ece", 0.1)}
    assert select(group, low) == big
    assert select(group, [None] * len(group.trials)) is None


# ------------------------------------------------------------- real training, test sealed


class Tripwire:
    """Stands in for the test split and counts every touch; armed, a touch raises."""

    def __init__(self, split) -> None:
        self._split, self.armed, self.touched_armed, self.touched = split, False, 0, 0

    def _touch(self) -> None:
        if self.armed:
            self.touched_armed += 1
            raise AssertionError("the test split was read during the search")
        self.touched += 1

    def __getattr__(self, name):
        self._touch()
        return getattr(self._split, name)

    def __len__(self) -> int:
        self._touch()
        return len(self._split)


@pytest.mark.slow
def test_the_test_split_is_never_read_during_the_search(tiny_data_root, tmp_path):
    # linear on cached features (--augment none) preloads frozen features per split, and vpt
    # trains end to end: neither may reach test before its final evaluation.
    req = request(tiny_data_root, tmp_path, ["linear", "vpt"], budget=2, augment="none",
                  spaces={"vpt": {"prompt_length": "1,2"}})  # fmt: skip
    the_plan = plan(req, progress=False)
    (data,) = the_plan.datasets.values()
    wire = Tripwire(data.splits["test"])
    data.splits["test"] = wire
    roles: list[str] = []

    def guarded(cell, data, source, **kw):
        roles.append(cell.role)
        wire.armed = cell.role == "trial"  # the search: any touch fails
        return real_run_cell(cell, data, source, **kw)

    out = run_tuning(the_plan, req, progress=False, run_cell=guarded)
    assert roles == ["trial"] * 4 + ["final"] * 2  # every trial before any final
    assert wire.touched_armed == 0
    trials = [r for r in out.trials.records]
    assert [r["status"] for r in trials] == ["trial"] * 4, [r.get("error") for r in trials]
    for r in trials:
        assert r["metrics"]["test"] == {} and set(r["dataset"]["sizes"]) == {"train", "val"}
        assert r["trial"]["val_primary"] == r["metrics"]["val"][r["trial"]["metric"]]
        if r["config"]["method"] == "linear":
            assert set(r["feature_cache"]["splits"]) == {"train", "val"}
    assert wire.touched > 0  # the finals did read test, once they were allowed to
    assert all(r["status"] == "ok" and r["metrics"]["test"] for r in out.finals.records)
    # and the wire does catch a read: an ordinary cell run with it armed fails on it
    wire.armed = True
    with pytest.raises(AssertionError, match="read during the search"):
        real_run_cell(the_plan.cells[0], data, the_plan.source)


@pytest.mark.slow
def test_real_search_selects_the_planted_lr_and_a_rerun_picks_the_same(tiny_data_root, tmp_path):
    # 1e-7 leaves the head at its initialisation; 0.03 learns the planted brightness signal
    spaces = {"linear": {"lr": "1e-7,0.03,3e-7"}}
    sets = {"linear": {"weight_decay": "0"}}
    picks = []
    for folder in ("a", "b"):
        req = request(tiny_data_root, tmp_path / folder, ["linear"], budget=3, spaces=spaces,
                      sets=sets, augment="none", epochs=3)  # fmt: skip
        out = run_tuning(plan(req, progress=False), req, progress=False)
        picks.append((out.selected, [r["run_id"] for r in out.finals.records]))
        (final,) = out.finals.records
        scores = [t["val_primary"] for t in final["tuning"]["trials"]]
        assert final["config"]["lr"] == 0.03 and max(scores) > min(scores) + 0.1
    assert picks[0] == picks[1]


# ------------------------------------------------------------------------- bad input, CLI


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tune_args(data_root: Path, results: Path, *extra: str) -> list[str]:
    return ["tune", "--methods", "linear", "--datasets", "pneumoniamnist", "--data-root",
            str(data_root), "--backbone", "test_vit", "--no-pretrained", "--img-size", "32",
            "--epochs", "1", "--batch-size", "16", "--results", str(results), "--no-progress",
            *extra]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), [
    (["--space", "linear.rank=1,2"], "no such hyperparameter; valid: lr, weight_decay, preload"),
    (["--space", "linear.lr=0.1", "--set", "linear.lr=0.2"], "both pinned (--set) and searched"),
    (["--space", "linear.lr=0,0.1"], "every learning rate in the space must be > 0"),
    (["--space", "linear.lr=fast"], "expected a value of type float"),
    (["--space", "linear.optimizer=sgd"], "the optimizer is not searched"),
    (["--space", "vpt.lr=1"], "not a method of this grid"),
    (["--budget", "0"], "--budget must be >= 1"),
    (["--space", "linear.lr=" + ",".join(f"{i + 1}e-4" for i in range(1001)),
      "--space", "linear.weight_decay=" + ",".join(f"{i}e-5" for i in range(1000))],
     "the search space has 1,001,000 configurations"),
])  # fmt: skip
def test_bad_search_options_fail_before_anything_runs(tiny_data_root, tmp_path, extra, message):
    result = invoke(*tune_args(tiny_data_root, tmp_path / "r", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_sgd_switches_linear_to_the_vpt_repos_scaled_grid(tiny_data_root, tmp_path):
    result = invoke(*tune_args(tiny_data_root, tmp_path, "--dry-run", "--budget", "3",
                               "--set", "linear.optimizer=sgd"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 of 40 configuration(s) (random)" in result.output
    assert "lr x batch/256" in result.output


def test_search_options_without_tune_are_refused(tiny_data_root, tmp_path):
    args = tune_args(tiny_data_root, tmp_path, "--budget", "3")
    args[0] = "run"
    result = invoke(*args)
    assert result.exit_code == 2 and "--budget configure the search: add --tune" in result.output


def test_an_optimizer_without_a_declared_space_needs_a_space(tiny_data_root, tmp_path):
    req = request(tiny_data_root, tmp_path, ["lora"], sets={"lora": {"optimizer": "sgd"}})
    with pytest.raises(UserError, match="declares no search space for optimizer sgd"):
        resolve_space("lora", req, req.tune)
    req.tune.spaces = {"lora": {"lr": "0.1,1"}}
    space = resolve_space("lora", req, req.tune)
    assert space.axes["lr"] == (0.1, 1.0) and space.lr_rule is None


@pytest.mark.slow
def test_bench_tune_end_to_end_and_the_report_shows_the_search(tiny_data_root, tmp_path):
    results, out = tmp_path / "r", tmp_path / "rep"
    args = tune_args(tiny_data_root, results, "--budget", "2", "--seeds", "0,1")
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert (
        "search: 2 trial(s) run" in first.output
        and "selected pneumoniamnist/linear" in first.output
    )
    again = invoke(*args)  # resumes: nothing runs twice
    assert "search: 0 trial(s) run, 2 already done" in again.output
    assert "0 selected cell(s) run, 2 already done" in again.output
    fixed = invoke("run", *args[1:args.index("--results")], "--results", str(results),
                   "--no-progress")  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    recs = {r["run_id"]: r for r in load_records(results).records}
    assert sum(r["status"] == "trial" for r in recs.values()) == 2
    assert sum(r["status"] == "ok" for r in recs.values()) == 3  # 2 tuned + 1 fixed
    status = runner.invoke(app, ["status", "--results", str(results)], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert "linear (search trials)" in status.output and "linear (tuned, budget 2)" in status.output
    line = next(x for x in status.output.splitlines() if "linear (search trials)" in x)
    assert line.split("trials)")[1].split() == ["2", "0", "0", "0", "0", "2"]  # done, not failed
    rep = invoke("report", "--results", str(results), "--out", str(out))
    assert rep.exit_code == 0, rep.output
    summary = (out / "summary.md").read_text()
    assert "| linear (tuned, budget 2) |" in summary and "| linear " in summary
    assert "## Hyperparameter search" in summary and "Trial records: 2 ok." in summary
    assert "budget 2, the same N for every method" in summary
    assert "tuned rows: budget 2 on validation" in (out / "scores.tex").read_text()
    assert list((out / "figures").glob("budget-*.png"))
    html = (out / "index.html").read_text()
    assert "Hyperparameter search" in html
    # trial records never reach the score tables: two rows, the tuned and the fixed
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and sum("(tuned, budget 2)" in r for r in rows) == 1


def test_paper_tables_say_which_regime_their_numbers_come_from(tmp_path):
    from bench.protocols import get_protocol
    from bench.report import records_frame
    from bench.report.paper import render_paper_table

    def rec(tuned: bool, value: float) -> dict:
        cfg = {"method": "ept", "dataset": "isic2018", "seed": 0, "shots": 1, "split_seed": 0,
               "backbone": "vit_base_patch16_224.orig_in21k", "pretrained": True,
               "img_size": 224, "epochs": 20, "batch_size": 4, "augment": "ept",
               **get_protocol("ept-table4").training, "precision": "fp32",
               "tuning": {"role": "final", "budget": 4, "tune_seed": 0, "space": "x"}
               if tuned else None}  # fmt: skip
        return {"run_id": f"r{tuned}", "status": "ok", "config": cfg,
                "metrics": {"primary_metric": "accuracy", "primary": value,
                            "test": {"accuracy": value}}}  # fmt: skip

    long = records_frame([rec(False, 0.30), rec(True, 0.40)])
    fixed = render_paper_table("ept-table4", long)
    tuned = render_paper_table("ept-table4", long, "tuned")
    assert "with fixed hyperparameters" in fixed and "30.00" in fixed and "40.00" not in fixed
    assert "1 record(s) of this protocol's datasets and methods have tuned" in fixed
    assert "selected on validation" in tuned and "40.00" in tuned and "30.00" not in tuned


def test_tuning_cells_have_their_own_ids_and_trial_records_are_type_checked():
    # `tuning` at its default (None) stays out of the id, so records written before it existed
    # keep theirs (test_config pins such an id); a trial or final is another cell.
    cell = CellConfig(method="linear", dataset="d", seed=0, backbone="b", pretrained=False,
                      weights=None, weights_sha256=None, epochs=1, batch_size=8, img_size=32,
                      device="cpu", precision="fp32", optimizer="adamw", lr=1e-3,
                      weight_decay=0.0, warmup_epochs=0.0, grad_clip=0.0)  # fmt: skip
    tuned = dataclasses.replace(cell, tuning={"role": "trial"})
    final = dataclasses.replace(cell, tuning={"role": "final", "budget": 4})
    assert len({cell.run_id, tuned.run_id, final.run_id}) == 3
    rec = {"schema": 1, "run_id": "x", "status": "trial", "config": tuned.to_dict(),
           "trial": {"outcome": "ok", "val_primary": 0.5}}  # fmt: skip
    from bench.record_types import wrong_types

    assert wrong_types(rec) is None
    assert wrong_types({**rec, "trial": {"outcome": 3}}) is not None
    assert wrong_types({**rec, "config": {**rec["config"], "tuning": "trial"}}) is not None


def test_the_search_order_depends_on_the_values_searched_not_their_wording(tiny_data_root,
                                                                           tmp_path):  # fmt: skip
    req = request(tiny_data_root, tmp_path, ["lora"])
    space = resolve_space("lora", req, req.tune)
    reworded = dataclasses.replace(space, source="reworded")
    assert reworded.digest() == space.digest() and reworded.order(0) == space.order(0)
    narrower = dataclasses.replace(space, axes={**space.axes, "rank": (1, 4)})
    assert narrower.digest() != space.digest()


def test_a_trial_value_the_method_refuses_fails_before_any_training(tiny_data_root, tmp_path):
    args = tune_args(tiny_data_root, tmp_path / "r", "--space", "lora.rank=0",
                     "--space", "lora.lr=1e-3", "--space", "lora.weight_decay=0")  # fmt: skip
    args[args.index("linear")] = "lora"
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "--space lora.rank: each value must be an integer >= 1, got 0" in result.output
    assert not list((tmp_path / "r").glob("*.json"))  # no trial record, failed or otherwise


# ------------------------------------------------------------------------ successive halving


def test_halving_rungs():
    from bench.tuning_plan import rungs

    assert rungs(9, 9, "none", 3) == [(9, 9)]
    assert rungs(9, 9, "halving", 3) == [(1, 9), (3, 3), (9, 1)]
    assert rungs(8, 10, "halving", 3) == [(3, 8), (10, 2)]
    assert rungs(8, 10, "halving", 2) == [(1, 8), (2, 4), (5, 2), (10, 1)]
    assert rungs(9, 2, "halving", 3) == [(2, 9)]  # too few epochs to halve: one rung
    assert rungs(1, 9, "halving", 3) == [(9, 1)]


def test_halving_promotes_the_best_third_and_selects_at_the_full_epochs(tiny_data_root, tmp_path):
    # 9 learning rates; at short schedules the largest looks best, at the full one 1e-2 wins
    lrs = "1e-4,3e-4,1e-3,3e-3,1e-2,3e-2,1e-1,3e-1,1"
    spaces = {"linear": {"lr": lrs, "weight_decay": "1e-3"}}

    def val(cell):
        return planted(1.0 if cell.epochs < 9 else 1e-2)(cell) + 0.001 * cell.epochs

    calls: list[CellConfig] = []
    req = request(tiny_data_root, tmp_path / "r", ["linear"], budget=9, spaces=spaces, epochs=9)
    req.tune.scheduler = "halving"
    out = run_tuning(plan(req, progress=False), req, progress=False,
                     run_cell=fake_cell(val, calls=calls))  # fmt: skip
    trials = [c for c in calls if c.role == "trial"]
    assert [c.epochs for c in trials] == [1] * 9 + [3] * 3 + [9]  # the budget: 9 configurations
    assert sorted(c.lr for c in trials if c.epochs == 3) == [0.1, 0.3, 1.0]  # the best third
    # only the best of rung 1 reaches the last rung: halving's known trade-off, 1e-2 (best at
    # the full schedule) was cut at rung 0; the final trains the survivor's full epochs
    (final,) = out.finals.records
    assert final["config"]["lr"] == 1.0 and final["config"]["epochs"] == 9
    assert final["config"]["tuning"]["scheduler"] == "halving"
    sched = final["tuning"]["scheduler"]
    assert [r["epochs"] for r in sched["rungs"]] == [1, 3, 9]
    assert [len(r["trials"]) for r in sched["rungs"]] == [9, 3, 1]
    assert sorted(t["epochs"] for t in final["tuning"]["trials"]) == [1] * 6 + [3] * 2 + [9]
    # a rerun repeats nothing; a kill in the middle rung resumes from there
    again: list[CellConfig] = []
    run_tuning(plan(req, progress=False), req, progress=False, run_cell=fake_cell(val, calls=again))
    assert again == []
    killed: list[CellConfig] = []
    req2 = request(tiny_data_root, tmp_path / "r2", ["linear"], budget=9, spaces=spaces, epochs=9)
    req2.tune.scheduler = "halving"
    out = run_tuning(plan(req2, progress=False), req2, progress=False,
                     run_cell=fake_cell(val, calls=killed, stop_after=10))  # fmt: skip
    assert out.interrupted and len(killed) == 11  # 9 at rung 0, 1 at rung 1, the 11th stopped
    rest: list[CellConfig] = []
    out = run_tuning(plan(req2, progress=False), req2, progress=False,
                     run_cell=fake_cell(val, calls=rest))  # fmt: skip
    assert [c.epochs for c in rest] == [3, 3, 9, 9]  # 2 left at rung 1, the last rung, the final
    assert out.finals.records[0]["run_id"] == final["run_id"]


def test_halving_options_need_tune_and_sane_values(tiny_data_root, tmp_path):
    args = tune_args(tiny_data_root, tmp_path, "--scheduler", "asha")
    refused = invoke(*args)  # by click, listing the choices (in a panel: drop its borders)
    assert refused.exit_code == 2
    assert "'asha' is not one of 'none', 'halving'" in " ".join(
        refused.output.replace("│", "").split()
    )
    args = tune_args(tiny_data_root, tmp_path, "--eta", "3")
    assert "goes with --scheduler halving" in invoke(*args).output
    args = tune_args(tiny_data_root, tmp_path, "--scheduler", "halving", "--eta", "1")
    assert "--eta must be >= 2" in invoke(*args).output
    args = tune_args(tiny_data_root, tmp_path, "--scheduler", "halving", "--budget", "9",
                     "--epochs", "9", "--dry-run")  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "halving: 9 x 1 epoch(s) -> 3 x 3 epoch(s) -> 1 x 9 epoch(s)" in result.output


def test_the_budget_curve_is_the_best_so_far_of_the_largest_search():
    from bench.report.tuning import curve_frame

    def final(budget, vals, seed=0):
        trials = [{"run_id": f"t{i}", "config": {"lr": i}, "outcome": "ok" if v else "diverged",
                   "val_primary": v} for i, v in enumerate(vals)]  # fmt: skip
        cfg = {"method": "vpt", "dataset": "demo", "backbone": "b", "pretrained": True,
               "seed": seed, "split_seed": 0,
               "tuning": {"role": "final", "budget": budget, "tune_seed": 0, "space": "s"}}  # fmt: skip
        return {"run_id": f"f{budget}-{seed}", "status": "ok", "config": cfg,
                "tuning": {"budget": budget, "tune_seed": 0, "space": {"size": 9},
                           "selected_by": "validation accuracy", "trials": trials}}  # fmt: skip

    vals = [0.5, None, 0.7, 0.6, 0.9]
    curves = curve_frame([final(3, vals[:3]), final(5, vals), final(5, vals, seed=1)])
    assert curves["budget"].unique().tolist() == [5]  # budget 3 is budget 5's prefix
    assert curves["best_val"].tolist() == [50.0, 50.0, 70.0, 70.0, 90.0]
