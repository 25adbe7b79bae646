"""The PyTorch side of scripts/bench.py: the same siamese net, loss and SGD, on the same batches."""


def torch_trainer(batches, threads, seed=0):
    """A step function training the same siamese net in PyTorch; None when PyTorch is absent."""
    try:
        import torch
    except ImportError:
        return None, None
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(threads)

    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, 5)
            self.conv2 = nn.Conv2d(20, 50, 5)
            self.ip1 = nn.Linear(800, 500)
            self.ip2 = nn.Linear(500, 10)
            self.feat = nn.Linear(10, 2)

        def forward(self, x):
            x = nn.functional.max_pool2d(self.conv1(x), 2, 2)
            x = nn.functional.max_pool2d(self.conv2(x), 2, 2)
            x = nn.functional.relu(self.ip1(x.flatten(1)))
            return self.feat(self.ip2(x))

    tower = Tower()
    optimizer = torch.optim.SGD(tower.parameters(), lr=0.01, momentum=0.9)
    tensors = [(torch.from_numpy(data), torch.from_numpy(labels)) for data, labels in batches]
    margin = 1.0
    state = {"k": 0}

    def step():
        data, similar = tensors[state["k"] % len(tensors)]
        state["k"] += 1
        optimizer.zero_grad(set_to_none=False)
        a, b = tower(data[:, :1]), tower(data[:, 1:])
        dist_sq = ((a - b) ** 2).sum(dim=1)
        far = torch.clamp(margin - torch.sqrt(dist_sq), min=0.0)
        loss = (similar * dist_sq + (1 - similar) * far * far).sum() / (2 * len(similar))
        loss.backward()
        optimizer.step()

    step.tower = tower
    return step, torch.__version__


def read_batches(db, count, batch=64):
    """`count` batches of the train DB, decoded and scaled as the Data layer does."""
    import numpy as np
    from siamese_cli.io.db import open_reader
    from siamese_cli.layers.data import decode_batch

    out = []
    with open_reader(db) as reader:
        shape = None
        for _ in range(count):
            records = reader.take(batch)
            if shape is None:
                from siamese_cli.proto import caffe_pb2

                datum = caffe_pb2.Datum.FromString(records[0][1])
                shape = (datum.channels, datum.height, datum.width)
            data, labels = decode_batch(records, shape, db)
            out.append((data.astype(np.float32) * np.float32(0.00390625), labels))
    return out


# ---- inference and the full reproduction ---------------------------------------------------
