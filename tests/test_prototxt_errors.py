"""Errors found after parsing a prototxt (an unsupported layer type, an unknown filler) point at the file and line
of the field, like the parse errors do; the list of supported types comes from the registry."""
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import layer_blocks, parse_text, read_net
from siamese_cli.layers import REGISTRY, supported_types
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import load_solver

HEAD = """name: "n"
layer {
  name: "in"
  type: "Input"
  top: "x"
  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } }
}
"""

# Caffe 1.0 layer types and their parameter field; the tests take the first one this toolkit lacks.
CAFFE_TYPES = [("WindowData", "window_data_param { source: \"w.txt\" }"),
               ("HDF5Output", "hdf5_output_param { file_name: \"o.h5\" }"), ("SPP", "spp_param { pyramid_height: 2 }"),
               ("LRN", "lrn_param { local_size: 5 }"),
               ("Threshold", "threshold_param { threshold: 0.5 }"), ("Crop", "crop_param { axis: 2 }"),
               ("Python", "python_param { module: \"m\" layer: \"L\" }")]


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(build):
    with pytest.raises(SiameseError) as err:
        build()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unsupported_type_names_file_line_layer_and_the_registry(tmp_path):
    path = write(tmp_path, HEAD + 'layer {\n  name: "norm1"\n  bottom: "x"\n  top: "y"\n  type: "NoSuchType"\n}\n')
    message = error_of(lambda: Net(path))
    assert message == (f'{path}:12: layer "norm1": layer type "NoSuchType" is not supported; supported types: '
                       + ", ".join(sorted(REGISTRY)))
    assert supported_types() == sorted(REGISTRY) and "Convolution" in supported_types()


def test_the_line_is_that_of_the_layer_built_in_this_phase(tmp_path):
    text = HEAD + """layer { name: "acc" type: "ReLU" bottom: "x" top: "y" include { phase: TRAIN } }
# layer { name: "acc" type: "Commented" }
layer { name: "acc" bottom: "x" top: "y" include { phase: TEST }
  type: "NoSuchType" }
"""
    path = write(tmp_path, text)
    assert error_of(lambda: Net(path, phase="TEST")).startswith(f'{path}:11: layer "acc": layer type "NoSuchType"')
    Net(path, phase="TRAIN")


def test_a_caffe_param_of_an_unsupported_type_says_the_type_is_not_supported(tmp_path):
    missing = [(kind, param) for kind, param in CAFFE_TYPES if kind not in REGISTRY]
    if not missing:
        pytest.skip("every listed Caffe type is implemented")
    kind, param = missing[0]
    path = write(tmp_path, HEAD + f'layer {{ name: "odd" type: "{kind}" bottom: "x" top: "y"\n  {param} }}\n')
    message = error_of(lambda: Net(path))
    assert message.startswith(f'{path}:8: layer "odd": layer type "{kind}" is not supported; supported types: ')
    assert "unknown field" not in message


def test_a_misspelt_field_is_still_an_unknown_field_with_its_column(tmp_path):
    path = write(tmp_path, HEAD + 'layer { name: "c" type: "Convolution" bottom: "x" top: "y"\n'
                                  '  convolution_param { num_output: 2 kernel_sise: 3 } }\n')
    assert error_of(lambda: read_net(path)) == (f'{path}:9:37: unknown field "kernel_sise" in ConvolutionParameter; '
                                                'did you mean "kernel_size"?')
    path = write(tmp_path, HEAD + 'layer { name: "c" type: "ReLU" frobnicate: 1 }\n')
    assert error_of(lambda: read_net(path)) == f'{path}:8:32: unknown field "frobnicate" in LayerParameter'


def test_unknown_filler_names_file_line_layer_and_field(tmp_path):
    path = write(tmp_path, HEAD + """layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 2
    weight_filler { type: "xavier" }
    bias_filler { type: "gausian" std: 0.1 } } }
""")
    message = error_of(lambda: Net(path))
    assert message.startswith(f'{path}:11: layer "ip": unknown filler type "gausian" in '
                              'inner_product_param.bias_filler; use one of constant, uniform, gaussian')


def test_the_second_repeated_filler_is_located(tmp_path):
    path = write(tmp_path, """layer { name: "d" type: "DummyData" top: "a" top: "b"
  dummy_data_param { shape { dim: 2 } shape { dim: 2 }
    data_filler { type: "constant" }
    data_filler { type: "nope" } } }
""")
    assert error_of(lambda: Net(path)).startswith(f'{path}:4: layer "d": unknown filler type "nope" in '
                                                  "dummy_data_param.data_filler;")


def test_a_net_without_text_names_the_layer_only():
    net = parse_text('layer { name: "f" type: "NoSuchType" }', caffe_pb2.NetParameter())
    assert error_of(lambda: Net(net)).startswith('layer "f": layer type "NoSuchType" is not supported')


def test_a_net_named_by_a_solver_is_located_in_its_own_file(tmp_path):
    net = write(tmp_path, HEAD + 'layer { name: "bad" type: "NoSuchType" bottom: "x" top: "y" }\n')
    solver = write(tmp_path, f'net: "{net}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n', "solver.prototxt")
    assert error_of(lambda: load_solver(solver)).startswith(f'{net}:8: layer "bad": layer type "NoSuchType"')
    net.write_text(HEAD + 'layer { name: "bad" type: "NoSuchType" bottom: "x" top: "y" include { phase: TEST } }\n')
    solver.write_text(f'net: "{net}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\ntest_iter: 1\n'
                      "test_interval: 10\n")
    assert error_of(lambda: load_solver(solver)).startswith(f'{net}:8: layer "bad": layer type "NoSuchType"')


def test_layer_blocks_reads_every_syntax_protobuf_accepts():
    text = """# layer { name: "commented" }
name: "layer { name: \\"in a string\\" }"
layer < name: 'quo\\'ted' type: "A" # trailing comment
  param: [ { lr_mult: 1 }, { lr_mult: 2 } ] bottom: ["p", "q"]
  convolution_param { weight_filler: { type: "x" } } >
layer { name: "second"; type: "B", include { phase: TEST } }
net_param { layer { name: "inline" type: "C" } }
"""
    parse_text(text.replace("net_param { layer { name: \"inline\" type: \"C\" } }", ""), caffe_pb2.NetParameter())
    blocks = layer_blocks(text)
    assert [block["name"] for block in blocks] == ["quo'ted", "second", "inline"]
    first = blocks[0]["lines"]
    assert first[("type",)] == [3] and first[("param", "lr_mult")] == [4, 4]
    assert first[("convolution_param", "weight_filler", "type")] == [5]
    assert blocks[1]["lines"][("include", "phase")] == [6] and blocks[2]["lines"][("type",)] == [7]


@pytest.mark.parametrize("text", ["layer {", "}}}} layer { name", 'layer { name: "a', "layer [ { ] } >", ""])
def test_layer_blocks_never_fails_on_broken_text(text):
    layer_blocks(text)
