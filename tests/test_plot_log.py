"""plot-log: the three log formats parse to the same rows, and the picture is written by extension."""
import json

import pytest

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.tools.plot_log import loss_figure, parse_log, plot_log

TEXT_LOG = """\
I1129 02:43:49.000001 12345 solver.py:119] Solving mnist_siamese_train_test
I1129 02:43:50.123456 12345 solver.py:250] Iteration 0, Testing net (#0)
I1129 02:43:51.123456 12345 solver.py:320]     Test net output #0: loss = 0.2163 (* 1 = 0.2163 loss)
I1129 02:43:51.223456 12345 solver.py:210] Iteration 0 (0 iter/s, 0.1s/100 iters), loss = 0.2301
I1129 02:43:51.223456 12345 solver.py:229]     Train net output #0: loss = 0.2301 (* 1 = 0.2301 loss)
I1129 02:43:51.223456 12345 sgd_solver.py:105] Iteration 0, lr = 0.01
I1129 02:43:52.123456 12345 solver.py:210] Iteration 100 (13.7 iter/s, 7.3s/100 iters), loss = 0.0512
I1129 02:43:52.123456 12345 solver.py:229]     Train net output #0: loss = 0.0498 (* 1 = 0.0498 loss)
I1129 02:43:52.123456 12345 sgd_solver.py:105] Iteration 100, lr = 0.00992565
I1129 02:43:53.000000 12345 solver.py:250] Iteration 200, Testing net (#0)
I1129 02:43:53.100000 12345 solver.py:320]     Test net output #0: accuracy = 0.91
I1129 02:43:53.100000 12345 solver.py:320]     Test net output #1: loss = 0.031 (* 1 = 0.031 loss)
I1129 02:43:54.000000 12345 solver.cpp:228] Iteration 200, loss = 1.5e-05
W1129 02:43:55.000000 12345 solver.cpp:228] Iteration 300, loss = -nan
"""


def test_text_log_rows(tmp_path):
    path = tmp_path / "train.log"
    path.write_text(TEXT_LOG)
    train, test = parse_log(path)
    losses = [(r["iter"], r["value"]) for r in train if r["name"] == "loss"]
    assert losses[:3] == [(0, 0.2301), (100, 0.0512), (200, 1.5e-05)]
    assert losses[3][0] == 300 and losses[3][1] != losses[3][1]  # nan
    assert [(r["iter"], r["value"]) for r in train if r["name"] == "lr"] == [(0, 0.01), (100, 0.00992565)]
    assert test == [
        {"iter": 0, "name": "loss", "value": 0.2163, "net": 0, "loss": True},
        {"iter": 200, "name": "accuracy", "value": 0.91, "net": 0, "loss": False},
        {"iter": 200, "name": "loss", "value": 0.031, "net": 0, "loss": True},
    ]


def test_csv_and_jsonl_logs_give_the_same_rows(tmp_path):
    rows = [("test", 0, "loss", 0.25), ("train", 0, "loss", 0.2), ("train", 0, "lr", 0.01),
            ("train", 1, "loss", 0.18), ("test", 500, "loss", 0.031)]
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("phase,iter,name,value\n" + "".join(f"{p},{i},{n},{v}\n" for p, i, n, v in rows))
    jsonl_path = tmp_path / "log.jsonl"
    jsonl_path.write_text("".join(json.dumps(dict(zip(("phase", "iter", "name", "value"), r))) + "\n" for r in rows))
    from_csv, from_jsonl = parse_log(csv_path), parse_log(jsonl_path)
    assert from_csv == from_jsonl
    train, test = from_csv
    assert train == [{"iter": 0, "name": "loss", "value": 0.2}, {"iter": 0, "name": "lr", "value": 0.01},
                     {"iter": 1, "name": "loss", "value": 0.18}]
    assert [(r["iter"], r["value"], r["loss"]) for r in test] == [(0, 0.25, True), (500, 0.031, True)]


def test_bad_rows_name_the_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("phase,iter,name,value\ntrain,0,loss,0.2\ntrain,x,loss,0.1\n")
    with pytest.raises(SiameseError, match=r"log.csv:3: iter must be an integer"):
        parse_log(path)
    path.write_text("phase,iter,name,value\nvalid,0,loss,0.2\n")
    with pytest.raises(SiameseError, match=r"log.csv:2: phase \"valid\""):
        parse_log(path)
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text('{"phase": "train", "iter": 0, "name": "loss", "value": 1}\n{"phase": "train"}\n')
    with pytest.raises(SiameseError, match=r"log.jsonl:2: each line needs the keys"):
        parse_log(jsonl)


def test_log_scale_only_when_losses_span_a_decade():
    def rows(values):
        return [{"iter": i, "name": "loss", "value": v} for i, v in enumerate(values)]

    wide = loss_figure(rows([0.3, 0.1, 0.02]), [{"iter": 2, "name": "loss", "value": 0.025, "net": 0, "loss": True}])
    ax = wide.axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "test loss"]
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "loss"
    narrow = loss_figure(rows([0.3, 0.2, 0.05]), [])
    assert narrow.axes[0].get_yscale() == "linear"
    dense = loss_figure(rows([0.1] * 1000), [])
    assert [line.get_label() for line in dense.axes[0].get_lines()] == ["train loss", "train loss, mean of 10 iterations"]
    assert loss_figure(rows([]), [{"iter": 0, "name": "accuracy", "value": 0.9, "net": 0, "loss": False}]) is None


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<svg")])
def test_cli_writes_each_format(tmp_path, fmt, magic):
    log = tmp_path / "train.log"
    log.write_text(TEXT_LOG)
    out = tmp_path / f"curve.{fmt}"
    assert main(["plot-log", str(log), "--out", str(out)]) == 0
    head = out.read_bytes()[:600]
    assert magic in head if fmt == "svg" else head.startswith(magic)


def test_user_errors(tmp_path, capsys):
    empty = tmp_path / "empty.log"
    empty.write_text("I1129 02:43:49.000001 12345 solver.py:119] Solving nothing\n")
    assert main(["plot-log", str(empty), "--out", str(tmp_path / "c.png")]) == 2
    assert "no train or test loss found" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
    with pytest.raises(SiameseError, match=r"unknown picture format \('.gif'\)"):
        plot_log(empty, tmp_path / "c.gif")
    with pytest.raises(SiameseError, match="no such file"):
        plot_log(tmp_path / "missing.log", tmp_path / "c.png")
