"""Caffe's NetState rules: which layers of a net definition a phase, level and stages admit."""
from .errors import SiameseError
from .proto import caffe_pb2

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


def phase_value(phase):
    """TRAIN/TEST (any case) or a caffe_pb2 phase number, as the phase number."""
    if isinstance(phase, str):
        try:
            return PHASES[phase.upper()]
        except KeyError:
            raise SiameseError(f'unknown phase "{phase}"; use TRAIN or TEST') from None
    return phase


def state_meets_rule(state, rule):
    """Caffe's NetStateRule test: phase, level bounds, required and excluded stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer_param, state):
    if layer_param.include:
        return any(state_meets_rule(state, rule) for rule in layer_param.include)
    return not any(state_meets_rule(state, rule) for rule in layer_param.exclude)


def filter_net(net_param, state):
    """A copy of `net_param` holding only the layers that the net state admits."""
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net_param)
    del filtered.layer[:]
    filtered.layer.extend(layer for layer in net_param.layer if layer_included(layer, state))
    return filtered
