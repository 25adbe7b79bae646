"""`siamese`: Caffe's command-line tools for the siamese workflow, over the Python API.

Each subcommand parses its flags and makes one or two API calls; anything it does,
a script can do with the same calls.
"""
import argparse
import sys
import traceback

from .errors import SiameseError


def _create_db(args):
    from .tools import create_db

    if args.single and args.balanced:
        raise SiameseError("create-db: --balanced is for pair DBs; drop it or --single")
    if args.images is None:
        if args.single:
            create_db.create_example_image_dbs(backend=args.backend, force=args.force)
        else:
            create_db.create_example_dbs(seed=args.seed, backend=args.backend, force=args.force,
                                         balanced=args.balanced)
    elif args.labels is None or args.db is None:
        raise SiameseError("create-db: give IMAGES LABELS DB together, or none of them for the example DBs")
    elif args.single:
        create_db.create_image_db(args.images, args.labels, args.db, backend=args.backend, force=args.force)
    else:
        create_db.create_pair_db(args.images, args.labels, args.db, seed=args.seed, backend=args.backend,
                                 force=args.force, balanced=args.balanced)


def _train(args):
    from .parallel import data_parallel
    from .solvers import load_solver

    if args.weights and args.snapshot:
        raise SiameseError("train: give --weights or --snapshot, not both (--snapshot resumes, --weights fine-tunes)")
    with data_parallel(args.mpi, debug=args.debug) as ranks:  # one process, or MPI ranks under mpiexec
        solver = load_solver(args.solver, max_iter=args.max_iter, log_path=args.log if ranks.is_root else None,
                             log=ranks.log, parallel=ranks)
        if args.snapshot:
            solver.restore(args.snapshot)
        elif args.weights:
            for path in args.weights.split(","):
                solver.net.copy_from(path)
                for test_net in solver.test_nets:
                    test_net.copy_from(path)
        ranks.solve(solver)


def _test(args):
    from .tools.test_net import test_net

    test_net(args.model, args.weights, iterations=args.iterations, phase=args.phase)


def _time(args):
    from .tools.timing import time_net

    time_net(args.model, weights=args.weights, iterations=args.iterations, phase=args.phase)


def _plot_features(args):
    from .tools.plot_features import plot_features

    plot_features(model=args.model, weights=args.weights, images=args.images, labels=args.labels,
                  out=args.out, show=args.show, save_features=args.save_features)


def _draw_net(args):
    from .tools.draw_net import draw_net

    draw_net(args.net, args.out, rankdir=args.rankdir, phase=args.phase)


def _plot_log(args):
    from .tools.plot_log import plot_log

    plot_log(args.log, args.out)


def _verify_data(args):
    from .data import verify_mnist

    verify_mnist()


def build_parser():
    parser = argparse.ArgumentParser(
        prog="siamese",
        description="Caffe's siamese-network workflow in Python: pair DBs, training, pictures.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("create-db", help="MNIST IDX files to a LevelDB/LMDB of image pairs (Datum records)",
                       description="Pair images at random into Datum records (channels 2, label 1 = same digit). "
                                   "With no paths, builds both example DBs from the bundled MNIST.")
    p.add_argument("images", nargs="?", help="IDX image file (raw or .gz)")
    p.add_argument("labels", nargs="?", help="IDX label file (raw or .gz)")
    p.add_argument("db", nargs="?", help="output database folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair draw (default 0)")
    p.add_argument("--backend", choices=["leveldb", "lmdb"], default="leveldb", help="database kind (default leveldb)")
    p.add_argument("--force", action="store_true", help="replace an existing database")
    p.add_argument("--balanced", action="store_true", help="draw half the pairs from the same digit")
    p.add_argument("--single", action="store_true",
                   help="one image per record, label = digit (Caffe's convert_mnist_data, for LeNet); "
                        "with no paths builds examples/mnist/mnist_{train,test}_BACKEND")
    p.set_defaults(run=_create_db)

    p = sub.add_parser("train", help="train a net with a solver prototxt (caffe train)",
                       description="Run the solver: test, display, snapshot as Caffe does, with Caffe's log lines.")
    p.add_argument("--solver", required=True, help="solver .prototxt")
    p.add_argument("--weights", help="start from these .caffemodel weights (comma-separated for several)")
    p.add_argument("--snapshot", help="resume from this .solverstate")
    p.add_argument("--max-iter", type=int, help="override the solver's max_iter (a shorter run)")
    p.add_argument("--log", help="also write train/test outputs per iteration to this .csv or .jsonl file")
    p.add_argument("--mpi", action="store_true", default=None,
                   help="data-parallel over MPI ranks (mpiexec -n N siamese train ...; automatic under mpiexec "
                        "with N > 1); needs pip install -e \".[mpi]\"")
    p.set_defaults(run=_train)

    p = sub.add_parser("test", help="score a model: mean of each output over N batches (caffe test)")
    p.add_argument("--model", required=True, help="net .prototxt")
    p.add_argument("--weights", required=True, help=".caffemodel weights")
    p.add_argument("--iterations", type=int, default=50, help="batches to run (default 50)")
    p.add_argument("--phase", choices=["TRAIN", "TEST"], default="TEST", help="net phase (default TEST)")
    p.set_defaults(run=_test)

    p = sub.add_parser("time", help="per-layer forward/backward timing (caffe time)")
    p.add_argument("--model", required=True, help="net .prototxt")
    p.add_argument("--weights", help="optional .caffemodel weights")
    p.add_argument("--iterations", type=int, default=50, help="forward-backward passes (default 50)")
    p.add_argument("--phase", choices=["TRAIN", "TEST"], default="TRAIN", help="net phase (default TRAIN)")
    p.set_defaults(run=_time)

    p = sub.add_parser("plot-features", help="scatter plot of the learned 2-D features of the test digits")
    p.add_argument("--model", default="examples/siamese/mnist_siamese.prototxt", help="deploy net .prototxt")
    p.add_argument("--weights", help=".caffemodel (default: newest examples/siamese/mnist_siamese_iter_*.caffemodel)")
    p.add_argument("--images", help="IDX images (default: bundled MNIST test set)")
    p.add_argument("--labels", help="IDX labels (default: bundled MNIST test set)")
    p.add_argument("--out", default="features.png", help="output picture; format by extension: png, svg, pdf")
    p.add_argument("--show", action="store_true", help="also open a window, where there is a display")
    p.add_argument("--save-features", help="write features and labels to this .npy or .csv file")
    p.set_defaults(run=_plot_features)

    p = sub.add_parser("draw-net", help="draw a net's layer graph, shared parameters marked")
    p.add_argument("net", help="net .prototxt")
    p.add_argument("out", help="output file: .png, .svg, .pdf or .dot")
    p.add_argument("--rankdir", choices=["LR", "TB", "BT", "RL"], default="LR", help="graph direction (default LR)")
    p.add_argument("--phase", choices=["TRAIN", "TEST", "ALL"], default="ALL", help="layers of one phase (default ALL)")
    p.set_defaults(run=_draw_net)

    p = sub.add_parser("plot-log", help="train and test loss against iteration from a training log")
    p.add_argument("log", help="text log of `siamese train` or `caffe train`, or a --log .csv/.jsonl file")
    p.add_argument("--out", default="loss.png", help="output picture (png, svg, pdf)")
    p.set_defaults(run=_plot_log)

    p = sub.add_parser("verify-data", help="check the bundled MNIST files against their SHA-256 sums")
    p.set_defaults(run=_verify_data)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except SiameseError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unexpected: one line, the traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0
