#!/usr/bin/env python3
"""Write the model-zoo deploy prototxts of this folder from the published layer tables.

    python examples/zoo/generate.py        # rewrites the *_deploy.prototxt files beside it

Each net follows its paper's (and the Caffe model zoo's) layer names and shapes, with a batch-1
Input layer of 3 x 224 x 224 (227 x 227 for CaffeNet/AlexNet) and a Softmax "prob" top of 1000
classes. The files are plain prototxt: edit them by hand or regenerate.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Writer:
    def __init__(self, name, size):
        self.lines = [f'name: "{name}"',
                      'layer { name: "data" type: "Input" top: "data"',
                      f'  input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}']

    def layer(self, name, kind, bottoms, tops, body=""):
        bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
        tops = [tops] if isinstance(tops, str) else tops
        links = " ".join([f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops])
        self.lines.append(f'layer {{ name: "{name}" type: "{kind}" {links}' + (f"\n  {body} }}" if body else " }"))
        return tops[0]

    def conv(self, name, bottom, num, kernel, stride=1, pad=0, group=1, bias=True, top=None):
        fields = [f"num_output: {num}", f"kernel_size: {kernel}"]
        fields += [f"stride: {stride}"] if stride != 1 else []
        fields += [f"pad: {pad}"] if pad else []
        fields += [f"group: {group}"] if group != 1 else []
        fields += ["bias_term: false"] if not bias else []
        return self.layer(name, "Convolution", bottom, top or name, f"convolution_param {{ {' '.join(fields)} }}")

    def relu(self, name, blob):
        return self.layer(name, "ReLU", blob, blob)

    def pool(self, name, bottom, kind, kernel=None, stride=1, pad=0, top=None):
        fields = [f"pool: {kind}"] + ([f"kernel_size: {kernel}"] if kernel else ["global_pooling: true"])
        fields += [f"stride: {stride}"] if stride != 1 else []
        fields += [f"pad: {pad}"] if pad else []
        return self.layer(name, "Pooling", bottom, top or name, f"pooling_param {{ {' '.join(fields)} }}")

    def lrn(self, name, bottom):
        return self.layer(name, "LRN", bottom, name, "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")

    def fc(self, name, bottom, num):
        return self.layer(name, "InnerProduct", bottom, name, f"inner_product_param {{ num_output: {num} }}")

    def dropout(self, name, blob, ratio):
        return self.layer(name, "Dropout", blob, blob, f"dropout_param {{ dropout_ratio: {ratio} }}")

    def bn_scale(self, bn, scale, blob):
        self.layer(bn, "BatchNorm", blob, blob, "batch_norm_param { use_global_stats: true }")
        return self.layer(scale, "Scale", blob, blob, "scale_param { bias_term: true }")

    def prob(self, bottom):
        return self.layer("prob", "Softmax", bottom, "prob")

    def text(self):
        return "\n".join(self.lines) + "\n"


def caffenet(name="CaffeNet", norm_first=False):
    """CaffeNet (pool before LRN) or AlexNet (LRN before pool): Krizhevsky et al. 2012, groups of 2."""
    w = Writer(name, 227)
    x = w.relu("relu1", w.conv("conv1", "data", 96, 11, stride=4))
    x = _pool_norm(w, x, 1, norm_first)
    x = w.relu("relu2", w.conv("conv2", x, 256, 5, pad=2, group=2))
    x = _pool_norm(w, x, 2, norm_first)
    x = w.relu("relu3", w.conv("conv3", x, 384, 3, pad=1))
    x = w.relu("relu4", w.conv("conv4", x, 384, 3, pad=1, group=2))
    x = w.relu("relu5", w.conv("conv5", x, 256, 3, pad=1, group=2))
    x = w.pool("pool5", x, "MAX", 3, 2)
    x = w.dropout("drop6", w.relu("relu6", w.fc("fc6", x, 4096)), 0.5)
    x = w.dropout("drop7", w.relu("relu7", w.fc("fc7", x, 4096)), 0.5)
    w.prob(w.fc("fc8", x, 1000))
    return w.text()


def _pool_norm(w, x, k, norm_first):
    if norm_first:
        return w.pool(f"pool{k}", w.lrn(f"norm{k}", x), "MAX", 3, 2)
    return w.lrn(f"norm{k}", w.pool(f"pool{k}", x, "MAX", 3, 2))


INCEPTION = {  # name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), Szegedy et al. 2014, table 1
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet():
    w = Writer("GoogleNet", 224)
    x = w.relu("conv1/relu_7x7", w.conv("conv1/7x7_s2", "data", 64, 7, stride=2, pad=3))
    x = w.lrn("pool1/norm1", w.pool("pool1/3x3_s2", x, "MAX", 3, 2))
    x = w.relu("conv2/relu_3x3_reduce", w.conv("conv2/3x3_reduce", x, 64, 1))
    x = w.lrn("conv2/norm2", w.relu("conv2/relu_3x3", w.conv("conv2/3x3", x, 192, 3, pad=1)))
    x = w.pool("pool2/3x3_s2", x, "MAX", 3, 2)
    for stage in ("3a", "3b", "pool3", "4a", "4b", "4c", "4d", "4e", "pool4", "5a", "5b"):
        if stage.startswith("pool"):
            x = w.pool(f"{stage}/3x3_s2", x, "MAX", 3, 2)
            continue
        one, r3, c3, r5, c5, proj = INCEPTION[stage]
        p = f"inception_{stage}"
        a = w.relu(f"{p}/relu_1x1", w.conv(f"{p}/1x1", x, one, 1))
        b = w.relu(f"{p}/relu_3x3_reduce", w.conv(f"{p}/3x3_reduce", x, r3, 1))
        b = w.relu(f"{p}/relu_3x3", w.conv(f"{p}/3x3", b, c3, 3, pad=1))
        c = w.relu(f"{p}/relu_5x5_reduce", w.conv(f"{p}/5x5_reduce", x, r5, 1))
        c = w.relu(f"{p}/relu_5x5", w.conv(f"{p}/5x5", c, c5, 5, pad=2))
        d = w.pool(f"{p}/pool", x, "MAX", 3, 1, pad=1)
        d = w.relu(f"{p}/relu_pool_proj", w.conv(f"{p}/pool_proj", d, proj, 1))
        x = w.layer(f"{p}/output", "Concat", [a, b, c, d], f"{p}/output")
    x = w.dropout("pool5/drop_7x7_s1", w.pool("pool5/7x7_s1", x, "AVE", 7, 1), 0.4)
    w.prob(w.fc("loss3/classifier", x, 1000))
    return w.text()


def resnet50():
    """ResNet-50 (He et al. 2015) as in the authors' Caffe release: BatchNorm + Scale after every conv."""
    w = Writer("ResNet-50", 224)
    x = w.conv("conv1", "data", 64, 7, stride=2, pad=3)
    x = w.relu("conv1_relu", w.bn_scale("bn_conv1", "scale_conv1", x))
    x = w.pool("pool1", x, "MAX", 3, 2)
    for stage, blocks, width in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        for block in range(blocks):
            name = f"{stage}{chr(ord('a') + block)}"
            stride = 2 if block == 0 and stage > 2 else 1
            shortcut = x
            if block == 0:
                shortcut = w.conv(f"res{name}_branch1", x, 4 * width, 1, stride=stride, bias=False)
                shortcut = w.bn_scale(f"bn{name}_branch1", f"scale{name}_branch1", shortcut)
            y = x
            for part, (num, kernel, s, pad) in zip("abc", ((width, 1, stride, 0), (width, 3, 1, 1), (4 * width, 1, 1, 0))):
                y = w.conv(f"res{name}_branch2{part}", y, num, kernel, stride=s, pad=pad, bias=False)
                y = w.bn_scale(f"bn{name}_branch2{part}", f"scale{name}_branch2{part}", y)
                if part != "c":
                    y = w.relu(f"res{name}_branch2{part}_relu", y)
            x = w.relu(f"res{name}_relu", w.layer(f"res{name}", "Eltwise", [shortcut, y], f"res{name}"))
    x = w.pool("pool5", x, "AVE", 7, 1)
    w.prob(w.fc("fc1000", x, 1000))
    return w.text()


MOBILENET = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet():
    """MobileNet v1, width 1.0 (Howard et al. 2017, table 1): depthwise 3x3 + pointwise 1x1 pairs."""
    w = Writer("MobileNet", 224)
    x = w.relu("relu1", w.bn_scale("conv1/bn", "conv1/scale", w.conv("conv1", "data", 32, 3, stride=2, pad=1, bias=False)))
    channels = 32
    for k, (num, stride) in enumerate(MOBILENET):
        name = f"conv{k + 2}_1"
        x = w.conv(f"{name}/dw", x, channels, 3, stride=stride, pad=1, group=channels, bias=False)
        x = w.relu(f"relu{k + 2}_1/dw", w.bn_scale(f"{name}/dw/bn", f"{name}/dw/scale", x))
        name = f"conv{k + 2}_2"
        x = w.conv(f"{name}/sep", x, num, 1, bias=False)
        x = w.relu(f"relu{k + 2}_2/sep", w.bn_scale(f"{name}/sep/bn", f"{name}/sep/scale", x))
        channels = num
    x = w.pool("pool6", x, "AVE")
    w.prob(w.conv("fc7", x, 1000, 1))
    return w.text()


def squeezenet():
    """SqueezeNet v1.1 (Iandola et al. 2016, the v1.1 release): fire modules of squeeze 1x1, expand 1x1 + 3x3."""
    w = Writer("SqueezeNet_v1.1", 224)
    x = w.pool("pool1", w.relu("relu_conv1", w.conv("conv1", "data", 64, 3, stride=2)), "MAX", 3, 2)
    fires = [(2, 16, 64), (3, 16, 64), "pool3", (4, 32, 128), (5, 32, 128), "pool5",
             (6, 48, 192), (7, 48, 192), (8, 64, 256), (9, 64, 256)]
    for fire in fires:
        if isinstance(fire, str):
            x = w.pool(fire, x, "MAX", 3, 2)
            continue
        k, squeeze, expand = fire
        s = w.relu(f"fire{k}/relu_squeeze1x1", w.conv(f"fire{k}/squeeze1x1", x, squeeze, 1))
        a = w.relu(f"fire{k}/relu_expand1x1", w.conv(f"fire{k}/expand1x1", s, expand, 1))
        b = w.relu(f"fire{k}/relu_expand3x3", w.conv(f"fire{k}/expand3x3", s, expand, 3, pad=1))
        x = w.layer(f"fire{k}/concat", "Concat", [a, b], f"fire{k}/concat")
    x = w.dropout("drop9", x, 0.5)
    x = w.relu("relu_conv10", w.conv("conv10", x, 1000, 1))
    w.prob(w.pool("pool10", x, "AVE"))
    return w.text()


NETS = {
    "caffenet_deploy.prototxt": caffenet,
    "alexnet_deploy.prototxt": lambda: caffenet("AlexNet", norm_first=True),
    "googlenet_deploy.prototxt": googlenet,
    "resnet50_deploy.prototxt": resnet50,
    "mobilenet_deploy.prototxt": mobilenet,
    "squeezenet_v1.1_deploy.prototxt": squeezenet,
}

if __name__ == "__main__":
    for filename, build in NETS.items():
        (HERE / filename).write_text(build())
        print(f"wrote {HERE / filename}")
