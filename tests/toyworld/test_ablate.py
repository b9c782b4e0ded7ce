"""`lyrics ablate` over seeds with the expensive stages faked: the statistics, the spread marks, the
JSON file, the seed folders, the reuse of finished rows, the refusal of folders holding another run,
`--status` and the `--seeds` option."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import lyrics.toyworld.ablate as ablate
import lyrics.toyworld.results as results
from lyrics.cli import app
from lyrics.toyworld.ablate import SUMMARY, ablation_table, run_ablation, seed_folder, stands_out, summarize
from lyrics.toyworld.quickstart import DEFAULT, EXPECTED_SECONDS, FAST, Quickstart

# colour VQA per row and seed: full 42 ± 2, no_pretraining 31 ± 1 (difference -11, outside the spread:
# 2 * sqrt(4/3 + 1/3) = 2.58), no_grounding_queries 41 ± 2 (difference -1, inside: 2 * sqrt(8/3) = 3.27).
COLOUR = {
    "full": {0: 40.0, 1: 42.0, 2: 44.0},
    "no_pretraining": {0: 30.0, 1: 31.0, 2: 32.0},
    "no_grounding_queries": {0: 41.0, 1: 43.0, 2: 39.0},
}
ROWS = list(COLOUR)


@pytest.fixture
def fake(monkeypatch):
    """Fakes for the shared stages, both training stages and the evaluation; records their calls."""
    calls = {"prepare": [], "stage1": [], "stage2": [], "evaluate": []}

    def prepare(self):
        calls["prepare"].append((self.out, self.seed))
        self.standins, self.manifest, self.keys, self.llm = "standins", {"seed": self.seed}, None, self.shared / "llm"

    def stage1(self, overrides=None, name="stage1"):
        calls["stage1"].append((self.out, self.seed))
        return self.out / name / "final"

    def stage2(self, stage1, overrides=None, name="stage2"):
        # every output of the shared stages reaches the row, the LLM folder included
        assert self.standins == "standins" and self.manifest == {"seed": self.seed} and self.llm == self.shared / "llm"
        assert self.shared != self.out
        calls["stage2"].append((self.out, self.seed, stage1))
        final = self.out / name / "final"
        final.mkdir(parents=True, exist_ok=True)
        if not (final / "lyrics_model.safetensors").is_file():
            (final / "lyrics_model.safetensors").write_text("weights")
        return final

    def evaluate(run, checkpoint, splits=("test", "zeroshot"), stage1=None):
        assert splits == ("test",)
        row, seed = run.out.name, run.seed
        calls["evaluate"].append((row, seed))
        colour = COLOUR[row][seed]
        scores = {SUMMARY["colour VQA"]: {"value": colour, "baseline": 0.0}, SUMMARY["VQA"]: {"value": colour / 2, "baseline": 0.0}}
        if stage1 is not None:  # stage-1 retrieval: none for the row without pre-training
            scores[SUMMARY["stage-1 t2i R@1"]] = {"value": colour / 4, "baseline": 1.0}
        return scores

    monkeypatch.setattr(Quickstart, "prepare", prepare)
    monkeypatch.setattr(Quickstart, "stage_stage1", stage1)
    monkeypatch.setattr(Quickstart, "stage_stage2", stage2)
    monkeypatch.setattr(results, "evaluate_quickstart", evaluate)
    return calls


def _quiet(_):
    pass


def _render(table) -> str:
    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()


def test_means_stds_and_differences_come_from_the_per_seed_results(tmp_path, fake):
    table = run_ablation(tmp_path, FAST, rows=ROWS, seeds=(0, 1, 2), log=_quiet)
    full, none, ground = (table[r]["colour VQA"] for r in ROWS)
    assert full["values"] == {"0": 40.0, "1": 42.0, "2": 44.0} and full["n"] == 3
    assert full["mean"] == pytest.approx(42.0) and full["std"] == pytest.approx(2.0)  # sample std (ddof=1)
    assert none["mean"] == pytest.approx(31.0) and none["std"] == pytest.approx(1.0) and none["diff"] == pytest.approx(-11.0)
    assert ground["mean"] == pytest.approx(41.0) and ground["std"] == pytest.approx(2.0) and ground["diff"] == pytest.approx(-1.0)
    assert table["no_pretraining"]["VQA"]["mean"] == pytest.approx(15.5)
    assert (none["outside_spread"], ground["outside_spread"], full["outside_spread"]) == (True, False, None)
    assert full["diff"] == 0.0
    # every seed prepared once in its own folder, each row trained there with that seed
    assert fake["prepare"] == [(tmp_path.resolve(), 0), (tmp_path.resolve() / "seed1", 1), (tmp_path.resolve() / "seed2", 2)]
    assert sorted(fake["evaluate"]) == sorted((r, s) for r in ROWS for s in (0, 1, 2))
    assert (tmp_path / "seed2" / "ablate" / "no_grounding_queries" / "stage2" / "final").is_dir()
    assert not any(out.name == "no_pretraining" for out, _ in fake["stage1"])  # this row skips stage 1
    assert all(stage1 is None for out, _, stage1 in fake["stage2"] if out.name == "no_pretraining")


def test_the_json_file_holds_per_seed_values_statistics_and_folders(tmp_path, fake):
    table = run_ablation(tmp_path, FAST, rows=ROWS, seeds=(0, 1, 2), log=_quiet)
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert summary["rows"] == table
    assert summary["seeds"] == [0, 1, 2] and summary["budget"] == {"stage1_steps": FAST.stage1_steps, "stage2_steps": FAST.stage2_steps, "seed": 0}
    assert summary["folders"] == {"0": str(tmp_path.resolve()), "1": str(tmp_path.resolve() / "seed1"), "2": str(tmp_path.resolve() / "seed2")}
    assert set(summary["rows"]["no_pretraining"]["colour VQA"]) == {"values", "n", "mean", "std", "diff", "outside_spread"}
    assert "2 * sqrt" in summary["spread_rule"]
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind


def test_finished_rows_are_reused_and_a_changed_checkpoint_or_budget_is_not(tmp_path, fake):
    first = run_ablation(tmp_path, FAST, rows=ROWS, seeds=(0, 1), log=_quiet)
    for calls in fake.values():
        calls.clear()
    again = run_ablation(tmp_path, FAST, rows=ROWS, seeds=(0, 1), log=_quiet)
    assert again == first
    assert fake == {"prepare": [], "stage1": [], "stage2": [], "evaluate": []}  # nothing trained or scored again

    # a retrained checkpoint (other weights) is scored again; the other rows are still reused
    (tmp_path / "seed1" / "ablate" / "full" / "stage2" / "final" / "lyrics_model.safetensors").write_text("new weights")
    run_ablation(tmp_path, FAST, rows=ROWS, seeds=(0, 1), log=_quiet)
    assert fake["evaluate"] == [("full", 1)] and fake["prepare"] == [(tmp_path.resolve() / "seed1", 1)]

    # another budget does not reuse the rows run with this one: their folders are refused (stage 2
    # would return the old budget's `final/` and score it under the new one)
    fake["evaluate"].clear()
    with pytest.raises(ValueError, match="different budget"):
        run_ablation(tmp_path, replace(FAST, stage2_steps=FAST.stage2_steps + 1), rows=["full"], seeds=(0,), log=_quiet)
    assert fake["evaluate"] == []


def test_rows_of_a_later_call_add_seeds_without_redoing_the_first(tmp_path, fake):
    run_ablation(tmp_path, FAST, rows=["full"], seeds=(0,), log=_quiet)
    fake["evaluate"].clear()
    table = run_ablation(tmp_path, FAST, rows=["full"], seeds=(0, 1, 2), log=_quiet)
    assert fake["evaluate"] == [("full", 1), ("full", 2)]
    assert table["full"]["colour VQA"]["std"] == pytest.approx(2.0)


def test_seed_folders_keep_the_quickstart_layout(tmp_path):
    assert seed_folder(tmp_path, 3, first=True) == tmp_path  # a fresh folder: the first seed runs in it
    assert seed_folder(tmp_path, 4, first=False) == tmp_path / "seed4"
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text(json.dumps({"seed": 1}))  # a quickstart run of seed 1
    assert seed_folder(tmp_path, 1, first=False) == tmp_path
    assert seed_folder(tmp_path, 0, first=True) == tmp_path / "seed0"


def test_an_unknown_row_or_repeated_seed_fails_before_any_stage(tmp_path, fake):
    with pytest.raises(ValueError, match="unknown ablation row"):
        run_ablation(tmp_path, FAST, rows=["full", "nope"], seeds=(0,), log=_quiet)
    with pytest.raises(ValueError, match="distinct"):
        run_ablation(tmp_path, FAST, rows=["full"], seeds=(0, 0), log=_quiet)
    assert fake["prepare"] == [] and not (tmp_path / "ablation.json").exists()


def test_the_spread_rule_is_twice_the_standard_error_of_the_difference():
    # std 3 on 18 seeds each side: standard error sqrt(9/18 + 9/18) = 1, so the threshold is 2
    assert not stands_out(2.0, 3.0, 18, 0.0, 3.0, 18)
    assert stands_out(2.001, 3.0, 18, 0.0, 3.0, 18)
    assert stands_out(-2.001, 3.0, 18, 0.0, 3.0, 18)
    assert not stands_out(3.0, 4.0, 4, 0.0, 0.0, 4)  # 2 * sqrt(16/4) = 4


def test_the_table_shows_mean_std_difference_and_marks_only_outside_the_spread():
    stats = summarize({row: {"colour VQA": {str(s): v for s, v in values.items()}} for row, values in COLOUR.items()})
    table = ablation_table(stats)
    text = _render(table)
    assert "42.00 ± 2.00" in text
    assert "31.00 ± 1.00 (-11.00*)" in text
    assert "41.00 ± 2.00 (-1.00)" in text and "(-1.00*)" not in text
    assert "-24.1 / -42.9" in text  # the paper's deltas beside
    assert "2 * sqrt(std_row^2/n_row + std_full^2/n_full)" in table.caption and "3 seeds" in table.title


def test_one_seed_has_no_std_and_no_marks():
    table = ablation_table({"full": {"colour VQA": 40.0}, "no_pretraining": {"colour VQA": 30.0}})
    text = _render(table)
    assert "30.00 (-10.00)" in text and "±" not in text and "*" not in text
    stats = summarize({"full": {"colour VQA": {"0": 40.0}}, "no_pretraining": {"colour VQA": {"0": 30.0}}})
    assert stats["no_pretraining"]["colour VQA"]["std"] is None and stats["no_pretraining"]["colour VQA"]["outside_spread"] is None


@pytest.mark.parametrize(
    "args, seeds",
    [([], (0,)), (["--seeds", "3"], (0, 1, 2)), (["--seed", "5", "--seeds", "2"], (5, 6))],
)
def test_cli_passes_the_seeds(tmp_path, monkeypatch, args, seeds):
    import lyrics.cli as cli

    seen = {}

    def fake_run(out, budget, rows=None, seeds=(0,), log=print):
        seen.update(out=out, budget=budget, rows=rows, seeds=seeds)
        return summarize({"full": {"colour VQA": {str(s): 40.0 + s for s in seeds}}})

    monkeypatch.setattr(cli, "_threads", lambda threads: None)
    monkeypatch.setattr(ablate, "run_ablation", fake_run)
    done = CliRunner().invoke(app, ["ablate", "--out", str(tmp_path), "--fast", "--row", "full", *args])
    assert done.exit_code == 0, done.output
    assert seen["seeds"] == seeds and seen["rows"] == ["full"] and seen["budget"] == FAST and Path(seen["out"]) == tmp_path
    assert "ablation.json" in done.output


def test_cli_refuses_zero_seeds_and_unknown_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "run_ablation", lambda *a, **kw: pytest.fail("must not run"))
    assert CliRunner().invoke(app, ["ablate", "--out", str(tmp_path), "--seeds", "0"]).exit_code == 2
    bad = CliRunner().invoke(app, ["ablate", "--out", str(tmp_path), "--row", "nope"])
    assert bad.exit_code == 2 and "unknown row" in bad.output


# --- a corrupt result is rerun, a folder holding another run is refused ------------------------------


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda done: "{not json",
        lambda done: json.dumps({k: v for k, v in done.items() if k != "metrics"}),
        lambda done: json.dumps({**done, "metrics": {"colour VQA": "n/a"}}),
        lambda done: json.dumps({**done, "metrics": {}}),
        lambda done: json.dumps([done]),
    ],
    ids=["bad-json", "no-metrics", "metric-not-a-number", "empty-metrics", "not-an-object"],
)
def test_a_corrupt_row_result_is_rerun_not_averaged(tmp_path, fake, corrupt):
    run_ablation(tmp_path, FAST, rows=["full", "no_pretraining"], seeds=(0,), log=_quiet)
    result = tmp_path / "ablate" / "full" / ablate.ROW_RESULT
    result.write_text(corrupt(json.loads(result.read_text())))
    fake["evaluate"].clear()
    table = run_ablation(tmp_path, FAST, rows=["full", "no_pretraining"], seeds=(0,), log=_quiet)
    assert fake["evaluate"] == [("full", 0)]  # scored again; the finished row is reused
    assert table["full"]["colour VQA"]["values"] == {"0": 40.0}
    assert json.loads(result.read_text())["metrics"]["colour VQA"] == 40.0


def test_a_row_folder_with_another_model_is_refused_naming_it(tmp_path, fake):
    run_ablation(tmp_path, FAST, rows=["full", "no_pretraining"], seeds=(0,), log=_quiet)
    record = tmp_path / "ablate" / "full" / "quickstart.json"
    assert json.loads(record.read_text())["seed"] == 0  # written when the row started
    record.write_text(json.dumps({**json.loads(record.read_text()), "model": {"lora_r": 1}}))
    fake["evaluate"].clear()
    with pytest.raises(ValueError, match=r"different model .*ablate/full/quickstart.json"):
        run_ablation(tmp_path, FAST, rows=["full", "no_pretraining"], seeds=(0,), log=_quiet)
    assert fake["evaluate"] == []  # refused before any row runs, never mixed into the table


def test_a_row_result_of_another_budget_without_a_record_is_refused(tmp_path, fake):
    # an `ablation-row.json` written before rows had a `quickstart.json`: its own key is the record
    run_ablation(tmp_path, FAST, rows=["full"], seeds=(0,), log=_quiet)
    row = tmp_path / "ablate" / "full"
    (row / "quickstart.json").unlink()
    done = json.loads((row / ablate.ROW_RESULT).read_text())
    (row / ablate.ROW_RESULT).write_text(json.dumps({**done, "budget": {**done["budget"], "stage2_steps": 999}}))
    with pytest.raises(ValueError, match=r"different budget .*ablation-row.json"):
        run_ablation(tmp_path, FAST, rows=["full"], seeds=(0,), log=_quiet)


def test_a_seed_folder_holding_a_quickstart_run_with_another_budget_is_refused(tmp_path, fake):
    other = Quickstart(tmp_path, DEFAULT)
    (tmp_path / "quickstart.json").write_text(json.dumps({"budget": ablate._plain(asdict(DEFAULT)), "seed": 0, "model": other.model, "timings": {}}))
    with pytest.raises(ValueError, match="different budget"):
        run_ablation(tmp_path, FAST, rows=["full"], seeds=(0,), log=_quiet)
    assert fake["prepare"] == [] and not (tmp_path / "ablate").exists()
    # the same budget, seed and model (as `lyrics quickstart --fast` writes) is the run to build on
    (tmp_path / "quickstart.json").write_text(json.dumps({"budget": ablate._plain(asdict(FAST)), "seed": 0, "model": other.model, "timings": {}}))
    run_ablation(tmp_path, FAST, rows=["full"], seeds=(0,), log=_quiet)
    assert fake["evaluate"] == [("full", 0)]


def test_an_ablation_records_its_seed_folders_so_a_later_budget_is_refused(tmp_path, fake):
    run_ablation(tmp_path, FAST, rows=["full"], seeds=(0, 1), log=_quiet)
    assert json.loads((tmp_path / "seed1" / "quickstart.json").read_text())["seed"] == 1
    (tmp_path / "ablate" / "full" / ablate.ROW_RESULT).unlink()  # even a row left to run is refused
    with pytest.raises(ValueError, match=r"different budget .*quickstart.json"):
        run_ablation(tmp_path, replace(FAST, eval_limit=99), rows=["full"], seeds=(0, 1), log=_quiet)


def test_a_row_without_a_metric_has_none_in_the_table(tmp_path, fake):
    table = run_ablation(tmp_path, FAST, rows=ROWS, seeds=(0, 1), log=_quiet)
    assert "stage-1 t2i R@1" in table["full"] and "stage-1 t2i R@1" not in table["no_pretraining"]
    text = _render(ablation_table(table))
    line = next(line for line in text.splitlines() if "w/o pre-training" in line)
    assert " - " in line
    md = (tmp_path / "ablate" / "table4.md").read_text()
    assert (tmp_path / "ablate" / "table4.png").stat().st_size > 0
    line = next(line for line in md.splitlines() if "w/o pre-training stage" in line)
    assert "30.50 ± 0.71 (-10.50*) [30.00, 31.00]" in line and "| - |" in line


# --- `lyrics ablate --status` ----------------------------------------------------------------------

FP32 = replace(FAST, precision="fp32")  # the estimate does not depend on this machine's CPU


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_status_tells_done_running_and_left_rows_and_the_time_left(tmp_path, fake):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text(json.dumps({"seed": 0}))  # seed 0's world exists
    run_ablation(tmp_path, FP32, rows=["full"], seeds=(0,), log=_quiet)  # a finished row
    ground = tmp_path / "ablate" / "no_grounding_queries"
    (ground / "stage1" / "final").mkdir(parents=True)
    (ground / "stage1" / "final" / "model.safetensors").write_text("weights")
    for step in (2, 4):
        (ground / "stage2" / "checkpoints" / f"step-{step}").mkdir(parents=True)
    (ground / "stage2" / "checkpoints" / ".tmp-step-6").mkdir()  # a checkpoint being written: not one yet
    spatial = tmp_path / "seed1" / "ablate" / "no_spatial_representation" / "stage1"
    (spatial / "checkpoints" / "step-5").mkdir(parents=True)
    (spatial / "logs").mkdir()
    other = tmp_path / "seed1" / "ablate" / "full"
    other.mkdir(parents=True)
    (other / "quickstart.json").write_text(json.dumps({"seed": 1, "budget": {}, "model": {}}))
    rows = ["full", "no_grounding_queries", "no_spatial_representation", "no_pretraining"]
    before = _files(tmp_path)

    status = ablate.ablation_status(tmp_path, FP32, rows=rows, seeds=(0, 1))
    assert _files(tmp_path) == before  # reads only
    got = {(e["seed"], e["row"]): e for e in status}
    assert [(e["seed"], e["row"]) for e in status] == [(s, r) for s in (0, 1) for r in rows]
    assert {k: e["state"] for k, e in got.items()} == {
        (0, "full"): "done", (0, "no_grounding_queries"): "running", (0, "no_spatial_representation"): "left",
        (0, "no_pretraining"): "left", (1, "full"): "refused", (1, "no_grounding_queries"): "left",
        (1, "no_spatial_representation"): "running", (1, "no_pretraining"): "left",
    }  # fmt: skip
    assert "different budget" in got[(1, "full")]["note"]
    running = got[(0, "no_grounding_queries")]
    assert (running["stage"], running["step"], running["steps"]) == ("stage2", 4, FP32.stage2_steps)
    assert (got[(1, "no_spatial_representation")]["stage"], got[(1, "no_spatial_representation")]["step"]) == ("stage1", 5)

    q = Quickstart(tmp_path, FP32)
    table = EXPECTED_SECONDS["fp32"]
    s1, s2 = table["stage1"] * q.scale("stage1"), table["stage2"] * q.scale("stage2")
    ev = 0.6 * table["evaluate"] * q.scale("evaluate")
    assert got[(0, "full")]["seconds"] == 0 and got[(1, "full")]["seconds"] == 0
    assert running["seconds"] == pytest.approx(s2 * (1 - 4 / FP32.stage2_steps) + ev)
    assert got[(0, "no_spatial_representation")]["seconds"] == pytest.approx(s1 + s2 + ev)
    assert got[(0, "no_pretraining")]["seconds"] == pytest.approx(s2 + ev)  # no stage 1
    assert got[(1, "no_spatial_representation")]["seconds"] == pytest.approx(s1 * (1 - 5 / FP32.stage1_steps) + s2 + ev)
    # seed 1 has no world yet: its shared stages (and the LLM, not converted yet) once, on its first row to run
    shared = sum(table[s] * q.scale(s) for s in ("world", "standins", "refine", "features", "records")) + table["llm"]
    assert got[(1, "no_grounding_queries")]["shared_seconds"] == pytest.approx(shared)
    assert sum(e["shared_seconds"] for e in status) == pytest.approx(shared)
    assert ablate.status_seconds(status) == pytest.approx(sum(e["seconds"] for e in status) + shared)

    text = _render(ablate.status_table(status))
    assert "4 / 8" in text and "1 done, 2 running, 4 left, 1 refused" in text and "different budget" in text


def test_cli_status_trains_nothing(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(ablate, "run_ablation", lambda *a, **kw: pytest.fail("must not run"))
    monkeypatch.setenv("COLUMNS", "300")
    done = CliRunner().invoke(app, ["ablate", "--out", str(tmp_path), "--fast", "--precision", "fp32", "--seeds", "2", "--row", "full", "--status"])
    assert done.exit_code == 0, done.output
    assert "0 done, 0 running, 2 left" in done.output and "left" in done.output
    assert fake["prepare"] == [] and not any(tmp_path.iterdir())
