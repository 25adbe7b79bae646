"""Caffe's learning-rate policies, computed in float32 as Caffe's SGDSolver::GetLearningRate does."""
import numpy as np

from ..errors import SiameseError

f32 = np.float32


def learning_rate(param, iteration, current_step=0):
    """(rate, current_step) at `iteration`; current_step carries multistep's position between calls.

    As Caffe's solver, multistep moves at most one step per call (an `if`, not a loop): a run
    that starts past several stepvalues with current_step 0 catches up one iteration at a time.
    """
    policy = param.lr_policy
    base, gamma, power = f32(param.base_lr), f32(param.gamma), f32(param.power)
    it = f32(iteration)
    if policy == "fixed":
        return base, current_step
    if policy == "step":
        if param.stepsize <= 0:
            raise SiameseError('lr_policy "step" needs stepsize > 0 in the solver')
        current_step = iteration // param.stepsize
        return f32(base * gamma ** f32(current_step)), current_step
    if policy == "exp":
        return f32(base * gamma ** it), current_step
    if policy == "inv":
        return f32(base * (f32(1) + gamma * it) ** -power), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        return f32(base * gamma ** f32(current_step)), current_step
    if policy == "poly":
        if param.max_iter <= 0:
            raise SiameseError('lr_policy "poly" needs max_iter > 0 in the solver')
        return f32(base * (f32(1) - it / f32(param.max_iter)) ** power), current_step
    if policy == "sigmoid":
        return f32(base * (f32(1) / (f32(1) + np.exp(-gamma * (it - f32(param.stepsize)))))), current_step
    raise SiameseError(f'unknown lr_policy "{policy}" in the solver; use fixed, step, exp, inv, multistep, poly '
                       f"or sigmoid")
