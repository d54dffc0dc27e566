"""models/schedule.py against Caffe's own solver: a one-weight net whose loss has gradient 1,
momentum 0 and no weight decay, so after each pycaffe ``solver.step(1)`` the weight's diff
holds exactly the learning rate Caffe used (SGDSolver copies the update into the diff)."""
from __future__ import annotations

import pytest

from models.engine import pb2
from models.paths import PROTOTXT
from models.schedule import POLICIES, current_step, learning_rate
from models.validate import load_solver

# y = w·1 with loss_weight 1: dL/dw = 1
NET = """name: "one_weight"
layer { name: "x" type: "DummyData" top: "x"
  dummy_data_param { shape { dim: 1 dim: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "w" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 1
  param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 1 bias_term: false weight_filler { type: "constant" value: 0 } } }
"""

# every lr_policy Caffe has, each changing the rate within 30 iterations
CASES = {
    "fixed": 'lr_policy: "fixed"',
    "step": 'lr_policy: "step" gamma: 0.5 stepsize: 7',
    "multistep": 'lr_policy: "multistep" gamma: 0.3 stepvalue: 3 stepvalue: 4 stepvalue: 11',
    "exp": 'lr_policy: "exp" gamma: 0.93',
    "inv": 'lr_policy: "inv" gamma: 0.37 power: 0.75',
    "poly": 'lr_policy: "poly" power: 1.7',
    "sigmoid": 'lr_policy: "sigmoid" gamma: -0.4 stepsize: 12',
}


def caffe_solver(caffe, tmp_path, schedule: str, max_iter: int, base_lr: float = 0.01):
    (tmp_path / "net.prototxt").write_text(NET)
    p = tmp_path / "solver.prototxt"
    p.write_text(f'net: "{tmp_path}/net.prototxt"\nbase_lr: {base_lr!r}\n{schedule}\nmax_iter: {max_iter}\n'
                 f'momentum: 0\nweight_decay: 0\nsnapshot_prefix: "{tmp_path}/s"\n')
    return caffe.get_solver(str(p)), load_solver(p)


def caffe_rate(solver) -> float:
    """The rate of the iteration just stepped (the update, with gradient 1)."""
    solver.step(1)
    return float(solver.net.params["w"][0].diff.ravel()[0])


def jump_to(solver, tmp_path, sp, it: int) -> None:
    """Move Caffe's solver to iteration ``it`` through a .solverstate (no stepping there)."""
    st = pb2().SolverState()
    st.iter, st.current_step = it, current_step(sp, max(it - 1, 0))
    h = st.history.add()
    h.shape.dim.extend([1, 1])
    h.data.append(0.0)
    path = tmp_path / f"jump_{it}.solverstate"
    path.write_bytes(st.SerializeToString())
    solver.restore(str(path))


def test_cases_cover_every_policy():
    assert set(CASES) == set(POLICIES)


@pytest.mark.parametrize("policy", CASES)
def test_policy_matches_caffe_solver(caffe, tmp_path, policy):
    solver, sp = caffe_solver(caffe, tmp_path, CASES[policy], 30)
    got = [caffe_rate(solver) for _ in range(30)]
    want = [learning_rate(sp, it) for it in range(30)]
    assert got == want
    assert len(set(want)) == 1 if policy == "fixed" else len(set(want)) > 3  # the policy is exercised
    solver.snapshot()  # Caffe's current_step_ as saved in its .solverstate
    st = pb2().SolverState()
    st.ParseFromString((tmp_path / "s_iter_30.solverstate").read_bytes())
    assert st.current_step == current_step(sp, 29)


def test_generated_solvers_schedules_match_caffe(caffe, tmp_path):
    """Each generated solver's own schedule (base_lr, policy, gamma, stepsize, max_iter),
    probed by Caffe around each step boundary and at the end."""
    schedules = set()
    for path in sorted(PROTOTXT.glob("*_solver.prototxt")):
        sp = load_solver(path)
        assert sp.lr_policy in CASES, path
        schedules.add((sp.base_lr, sp.lr_policy, sp.gamma, sp.stepsize, sp.max_iter))
    assert schedules
    for base_lr, policy, gamma, stepsize, max_iter in sorted(schedules):
        schedule = f'lr_policy: "{policy}" gamma: {gamma!r} stepsize: {stepsize}'
        solver, sp = caffe_solver(caffe, tmp_path, schedule, max_iter, base_lr)
        probes = sorted({0, max_iter - 1} | {k * stepsize + d for k in range(1, max_iter // stepsize + 1)
                                            for d in (-1, 0) if k * stepsize + d < max_iter})
        for it in probes:
            jump_to(solver, tmp_path, sp, it)
            assert caffe_rate(solver) == learning_rate(sp, it), (base_lr, policy, it)


def test_bad_schedules_are_clear_errors():
    sp = pb2().SolverParameter(base_lr=0.1, lr_policy="cosine")
    with pytest.raises(ValueError, match="unknown lr_policy 'cosine'"):
        learning_rate(sp, 1)
    sp.lr_policy = "step"
    with pytest.raises(ValueError, match="stepsize > 0"):
        learning_rate(sp, 1)
