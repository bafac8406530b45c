"""Smoke runs of the benchmark scripts on tiny settings, so they cannot rot between real runs.

The figures the benchmarks publish come from full runs (docs/); here only that each script runs, writes its
results, and that its oracle numbers are right where they are exact.
"""

import json
import math

import pytest

from bench import likelihood as bench_likelihood
from bench import samplers as bench_samplers


def test_sampler_benchmark_writes_every_row_and_marks_the_sweep_complete(tmp_path):
    out = tmp_path / "s"
    bench_samplers.main(
        [
            "--sde",
            "vp",
            "--num",
            "300",
            "--reference",
            "10000",
            "--only",
            "ddim eta=0",
            "--steps",
            "5,20",
            "--out",
            str(out),
        ]
    )
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["complete"] is True
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in result["rows"]] == [
        ("ddim eta=0 (quadratic)", 5, 6),
        ("ddim eta=0 (quadratic)", 20, 21),
    ]  # + 1 for the final denoising
    assert all(math.isfinite(r["sw"]) and math.isfinite(r["dlogp"]) for r in result["rows"])
    # with the exact score, 20 DDIM steps are closer to the mixture than 5
    assert result["rows"][1]["sw"] < result["rows"][0]["sw"]
    assert (tmp_path / "s.png").stat().st_size > 0


def test_sampler_benchmark_keeps_the_rows_of_an_interrupted_sweep(tmp_path, monkeypatch):
    calls = []
    real = bench_samplers.run_one

    def dies_on_second_run(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_samplers, "run_one", dies_on_second_run)
    with pytest.raises(KeyboardInterrupt):
        bench_samplers.main(
            [
                "--sde",
                "vp",
                "--num",
                "200",
                "--reference",
                "10000",
                "--only",
                "ddim eta=0",
                "--steps",
                "5,10",
                "--out",
                str(tmp_path / "s"),
            ]
        )
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["complete"] is False and [r["steps"] for r in result["rows"]] == [5]


def test_sampler_benchmark_refuses_a_filter_that_matches_nothing(capsys):
    with pytest.raises(SystemExit):
        bench_samplers.main(["--only", "no such sampler"])
    assert "matches no sweep row" in capsys.readouterr().err


def test_likelihood_benchmark_matches_the_exact_gaussian_log_density(tmp_path):
    bench_likelihood.main(["--dim", "6", "--num-examples", "4", "--results-dir", str(tmp_path)])
    rows = json.loads((tmp_path / "likelihood_analytic.json").read_text())["rows"]
    assert len(rows) == len(bench_likelihood.SWEEP)
    exact_tight = [
        r for r in rows if "exact div" in r["setting"] and "1e-2" not in r["setting"] and "1e-3" not in r["setting"]
    ]
    assert exact_tight and all(abs(r["err_mean"]) < 1e-3 for r in exact_tight), exact_tight
    assert (tmp_path / "likelihood_analytic.md").read_text().count("\n|") >= len(rows)


def test_likelihood_compare_runs_score_sde_beside_ours_and_matches_work(tmp_path):
    """--compare on a tiny diagonal Gaussian: score_sde's RK45 algorithm, dopri5 and the exponential integrator all
    land near the closed form at 1e-5, and every row of ours gets score_sde's work at its error."""
    bench_likelihood.main(
        ["--compare", "--dim", "6", "--num-examples", "4", "--targets", "diagonal", "--sdes", "vp", "ve",
         "--tolerances", "1e-3", "1e-5", "--results-dir", str(tmp_path)]
    )  # fmt: skip
    rows = json.loads((tmp_path / "likelihood_compare.json").read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"score_sde RK45", "dopri5", "exponential", "exponential, time_variable=t"} <= methods
    assert all(r["err"] < 1e-4 for r in rows if r["tol"] == 1e-5), [(r["method"], r["err"]) for r in rows]
    ours = [r for r in rows if r["method"] != "score_sde RK45"]
    assert all(r["work_ratio"] > 0 and r["score_sde_work_at_err"] > 0 for r in ours)
    assert "ratio" in (tmp_path / "likelihood_compare.md").read_text()


def test_likelihood_compare_methods_runs_only_those_and_refuses_others(tmp_path, capsys):
    """--methods picks our rows (here an 8th-order tableau and the exponential integrator in t); a method the
    comparison cannot run is refused in one line before anything runs or is written."""
    bench_likelihood.main(
        ["--compare", "--dim", "6", "--num-examples", "4", "--targets", "diagonal", "--sdes", "vp",
         "--tolerances", "1e-5", "--methods", "dopri8", "exponential-t", "--results-dir", str(tmp_path)]
    )  # fmt: skip
    rows = json.loads((tmp_path / "likelihood_compare.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["score_sde RK45", "dopri8", "exponential, time_variable=t"]
    assert all(r["err"] < 1e-4 for r in rows), [(r["method"], r["err"]) for r in rows]
    out = tmp_path / "refused"
    with pytest.raises(SystemExit):
        bench_likelihood.main(["--compare", "--methods", "rk4", "--results-dir", str(out)])
    assert "--methods rk4" in capsys.readouterr().err and not out.exists()


def test_likelihood_compare_i_controller_is_the_before_row_and_is_undone(tmp_path):
    """--i-controller runs the exponential integrator with its step size from the error alone (the controller before
    the PI one): other steps, so other calls, on the same target; PI_GAINS is back to the PI gains afterwards."""
    import likelihood.exponential as exponential

    pi_gains = exponential.PI_GAINS
    calls = {}
    for flag in ([], ["--i-controller"]):
        out = tmp_path / ("i" if flag else "pi")
        bench_likelihood.main(
            ["--compare", "--dim", "32", "--num-examples", "4", "--targets", "diagonal", "--sdes", "vp",
             "--tolerances", "1e-3", "1e-5", "--methods", "exponential", "--results-dir", str(out), *flag]
        )  # fmt: skip
        rows = json.loads((out / "likelihood_compare.json").read_text())["rows"]
        calls[bool(flag)] = [r["nfe"] for r in rows if r["method"] == "exponential"]
        assert exponential.PI_GAINS == pi_gains
    assert calls[True] != calls[False], calls


def test_gpu_benchmark_runs_at_tiny_size_on_cpu(tmp_path):
    """bench/gpu.py's CPU smoke size: every measurement runs and lands in the JSON (figures come from GPU runs)."""
    from bench import gpu as bench_gpu

    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--tiny", "--batch", "4", "--sample-batch", "4", "--likelihood-batch", "2"]
    bench_gpu.main(argv + ["--warmup", "1", "--steps", "1", "--variants", "fp32,bf16", "--out", str(out)])
    record = json.loads(out.read_text())
    assert [r["variant"] for r in record["rows"]] == ["fp32", "bf16"]
    assert all(r["train_img_per_s"] > 0 and r["sample_nfe"] == 20 for r in record["rows"])
    assert record["likelihood"]["likelihood_calls"] > 0


def test_repaint_benchmark_writes_a_row_per_setting(tmp_path):
    """The toy part at tiny size: one row per path, level count and jump_n_sample, with its NFE."""
    from bench import repaint as bench_repaint
    from sde import SDES

    bench_repaint.main(["--toy-levels", "12", "--toy-resamples", "1,2", "--toy-samples", "50", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "repaint_toy.json").read_text())["rows"]
    assert len(rows) == 2 * len(SDES)
    assert {r["nfe"] for r in rows} == {12, 12 + 10}  # r = 2: one jump from level 0 up 10 levels and down again
    assert (tmp_path / "repaint_toy.md").read_text().count("\n|") == len(rows) + 1
