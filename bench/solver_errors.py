"""Benchmark: pathwise RMS error of the deterministic few-step solvers at 5, 10, 20 NFE, every path and grid.

Against the exact probability-flow map of a 3-D correlated Gaussian (`GaussianMixture.flow_map`) and against
dopri5 at rtol = atol = 1e-9 on the 2-D mixture; 500 paths from x_T, no final denoising. Writes JSON rows
(path, data, grid, nfe, case, err); docs/samplers.md quotes the 3M-coefficient, lower_order_final and ODE-variable
choices from it.

    nice -n 10 python bench/solver_errors.py bench/results/solver_errors.json
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.toy import make_mixture
from samplers import SAMPLERS, solve_probability_flow, time_grid
from sde import SDES, make_sde

torch.set_num_threads(1)
gauss = make_mixture("gaussian", dim=3)
mix = make_mixture("gmm2d")
cases = [
    ("3M exact", "dpm_solver", {"order": 3}),
    ("3M ref", "dpm_solver", {"order": 3, "third_order": "reference"}),
    ("3M exact last", "dpm_solver", {"order": 3, "lower_order_final": "last"}),
    ("3M exact den", "dpm_solver", {"order": 3, "lower_order_final": "denoise"}),
    ("3M ref last", "dpm_solver", {"order": 3, "third_order": "reference", "lower_order_final": "last"}),
    ("2M", "dpm_solver", {"order": 2}),
    ("2M last", "dpm_solver", {"order": 2, "lower_order_final": "last"}),
    ("unipc2", "unipc", {"order": 2}),
    ("unipc3", "unipc", {"order": 3}),
    ("unipc3 none", "unipc", {"order": 3, "lower_order_final": "none"}),
    ("unipc2 bh1", "unipc", {"order": 2, "variant": "bh1"}),
    ("heun t", "ode", {"method": "heun", "variable": "t"}),
    ("heun sigma", "ode", {"method": "heun", "variable": "sigma"}),
    ("ddim", "ddim", {}),
]
out = []
for name in SDES:
    sde = make_sde(name)
    T = float(sde.T)
    tmin = 1e-3
    for dname, data in (("gauss3", gauss), ("gmm2d", mix)):
        sf = data.score_fn(sde)
        xT = sde.prior_sampling((500, data.dim), torch.Generator().manual_seed(0), dtype=torch.float64)
        exact = (
            data.flow_map(xT, T, tmin, sde)
            if dname == "gauss3"
            else solve_probability_flow(
                sf, sde, xT, torch.tensor([T, tmin], dtype=torch.float64), "dopri5", rtol=1e-9, atol=1e-9
            )
        )
        for grid in ["uniform", "quadratic", "logsnr", "karras"]:
            for steps in (5, 10, 20):
                for lab, smp, opt in cases:
                    n = steps // 2 if smp == "ode" else steps  # equal NFE (heun: 2 per step)
                    if n < 1:
                        continue
                    x = SAMPLERS[smp](sf, sde, xT, time_grid(sde, n, tmin, grid), denoise=False, **opt)
                    e = float((x - exact).pow(2).mean().sqrt())
                    out.append(dict(path=name, data=dname, grid=grid, nfe=steps, case=lab, err=e))
    print(name, flush=True)
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "bench/results/solver_errors.json", "w"))
