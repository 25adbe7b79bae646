"""`siamese`: Caffe's command-line tools for the siamese workflow, over the Python API.

Each subcommand parses its flags and makes one or two API calls; anything it does,
a script can do with the same calls.
"""
import argparse
import shlex
import sys
import traceback

from .errors import SiameseError


def _create_db(args):
    from .tools import create_db

    if args.single and args.balanced:
        raise SiameseError("create-db: --balanced is for pair DBs; drop it or --single")
    if args.list:
        if args.images is None or args.labels is not None or args.single:
            raise SiameseError("create-db: with --list give one DB path (and no --single)")
        create_db.create_pair_db_from_list(args.list, args.images, root=args.root, resize=args.resize or (0, 0),
                                           color=args.color, seed=args.seed, backend=args.backend, force=args.force,
                                           balanced=args.balanced, save_idx=args.save_idx)
        return
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


def _gpu_notice(args):
    if getattr(args, "gpu", None) is not None:
        print(f"note: -gpu {args.gpu} ignored: this toolkit computes on the CPU", file=sys.stderr)


def _resume_command(args, state_path):
    words = ["siamese", "train", "--solver", args.solver, "--snapshot", state_path]
    if args.max_iter is not None:
        words += ["--max-iter", str(args.max_iter)]
    if args.log:
        words += ["--log", args.log]
    return " ".join(shlex.quote(str(w)) for w in words)


def _train(args):
    """Exit status: 0 done, 2 bad input or a failed write, 3 non-finite loss, 128 + N stopped by signal N."""
    import io

    from .log import CaffeLog
    from .parallel import data_parallel
    from .solvers import NonFiniteError, load_solver
    from .solvers.signals import exit_status

    if args.weights and args.snapshot:
        raise SiameseError("train: give --weights or --snapshot, not both (--snapshot resumes, --weights fine-tunes)")
    from .layers.python import module_dirs, solver_files

    _gpu_notice(args)
    with data_parallel(args.mpi, debug=args.debug) as ranks:  # one process, or MPI ranks under mpiexec
        with module_dirs(*solver_files(args.solver)):  # Python layer modules next to the prototxt files
            # The solver checks that --log can be written before it builds the nets.
            solver = load_solver(args.solver, max_iter=args.max_iter, log_path=args.log if ranks.is_root else None,
                                 allow_nan=args.allow_nan, snapshot_on_stop=args.snapshot_on_stop, log=ranks.log,
                                 parallel=ranks)
        if args.snapshot:
            solver.restore(args.snapshot)
        elif args.weights:
            quiet = CaffeLog(stream=io.StringIO())  # test nets share the train net's weights: report once
            for path in args.weights.split(","):
                solver.net.copy_from(path, log=solver.log)
                for test_net in solver.test_nets:
                    test_net.copy_from(path, log=quiet)
        try:
            ranks.solve(solver)
        except NonFiniteError:
            raise
        except SiameseError as exc:
            if solver.last_snapshot:
                raise type(exc)(f"{exc}; resume from the last complete snapshot with: "
                                f"{_resume_command(args, solver.last_snapshot)}") from exc
            raise
    if solver.stop_signal is None or not ranks.is_root:
        return 0 if solver.stop_signal is None else exit_status(solver.stop_signal)
    if solver.last_snapshot:
        print(f"Stopped by signal; resume with: {_resume_command(args, solver.last_snapshot)}", file=sys.stderr)
    else:
        print("Stopped by signal; no snapshot was written (snapshot_after_train is false: add "
              "--snapshot-on-stop to write one on a stop)", file=sys.stderr)
    return exit_status(solver.stop_signal)


def _test(args):
    from .tools.test_net import test_net

    from .layers.python import module_dirs

    _gpu_notice(args)
    with module_dirs(args.model):
        test_net(args.model, args.weights, iterations=args.iterations, phase=args.phase)


def _time(args):
    from .tools.timing import time_net

    from .layers.python import module_dirs

    _gpu_notice(args)
    with module_dirs(args.model):
        time_net(args.model, weights=args.weights, iterations=args.iterations, phase=args.phase)


def _count(text, least):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text):
    """argparse type: a whole number above 0 (`--iterations 0` is refused at the command line)."""
    return _count(text, 1)


def non_negative_int(text):
    return _count(text, 0)


def _plot_features(args):
    from .tools.plot_features import plot_features

    plot_features(model=args.model, weights=args.weights, images=args.images, labels=args.labels,
                  out=args.out, show=args.show, save_features=args.save_features)


def _evaluate(args):
    from .tools.evaluate import evaluate

    evaluate(model=args.model, weights=args.weights, pairs=args.pairs, images=args.images, labels=args.labels,
             json_out=args.json, plot=args.plot)


def _export_onnx(args):
    from .tools.export_onnx import export_onnx

    export_onnx(args.model, args.weights, args.out, opset=args.opset, batch=args.batch)


def _draw_net(args):
    from .tools.draw_net import draw_net

    draw_net(args.net, args.out, rankdir=args.rankdir, phase=args.phase)


def _plot_log(args):
    from .tools.plot_log import plot_log

    plot_log(args.log, args.out)


def _verify_data(args):
    from .data import verify_mnist

    verify_mnist()


def _convert_imageset(args):
    from .tools.convert_imageset import convert_imageset

    convert_imageset(args.root, args.listfile, args.db, resize_height=args.resize_height,
                     resize_width=args.resize_width, gray=args.gray, shuffle=args.shuffle, seed=args.seed,
                     encoded=args.encoded, encode_type=args.encode_type, backend=args.backend,
                     check_size=args.check_size, force=args.force)


def _compute_image_mean(args):
    from .tools.compute_mean import compute_image_mean

    compute_image_mean(args.db, args.out, backend=args.backend)


def _upgrade_net(args):
    from .tools.upgrade import upgrade_net_file

    upgrade_net_file(args.input, args.output)


def _upgrade_solver(args):
    from .tools.upgrade import upgrade_solver_file

    upgrade_solver_file(args.input, args.output)


def _deploy_net_args(p):
    """The deploy net, its weights and the labelled images that plot-features and evaluate embed."""
    p.add_argument("--model", default="examples/siamese/mnist_siamese.prototxt", help="deploy net .prototxt")
    p.add_argument("--weights", help=".caffemodel (default: the examples/siamese/mnist_siamese_iter_N.caffemodel "
                                     "with the highest iteration N)")
    p.add_argument("--images", help="IDX images (default: bundled MNIST test set)")
    p.add_argument("--labels", help="IDX labels (default: bundled MNIST test set)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="siamese",
        description="Caffe's siamese-network workflow in Python: pair DBs, training, pictures.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("create-db", help="image pairs (or single images) to a LevelDB/LMDB, from MNIST IDX files or an image list",
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
    p.add_argument("--list", help="pairs from your own images: a list file of `PATH LABEL` lines (Caffe's format); "
                                  "then give only DB")
    p.add_argument("--root", default="", help="with --list: folder the list's paths start from")
    p.add_argument("--resize", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="with --list: resize every image")
    p.add_argument("--color", action="store_true", help="with --list: keep 3 colour channels (default grey)")
    p.add_argument("--save-idx", metavar="PREFIX",
                   help="with --list: also write PREFIX-images-idx3-ubyte/-labels-idx1-ubyte for plot-features")
    p.set_defaults(run=_create_db)

    p = sub.add_parser("convert-imageset", help="image files named in a list to a LevelDB/LMDB (caffe convert_imageset)",
                       description="One Datum per `PATH LABEL` line of LISTFILE, key %08d_PATH, raw BGR pixels or "
                                   "(--encoded) the image file's bytes. Unreadable images are reported and skipped.")
    p.add_argument("root", help="folder the list's paths start from")
    p.add_argument("listfile", help="list file: `PATH LABEL` per line")
    p.add_argument("db", help="output database folder")
    p.add_argument("--resize_height", "--resize-height", type=int, default=0, help="resize to this height (with width)")
    p.add_argument("--resize_width", "--resize-width", type=int, default=0, help="resize to this width (with height)")
    p.add_argument("--gray", action="store_true", help="read the images as grey (one channel)")
    p.add_argument("--shuffle", action="store_true", help="shuffle the lines first (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    p.add_argument("--encoded", action="store_true", help="store encoded image bytes instead of pixels")
    p.add_argument("--encode_type", "--encode-type", default="", help="re-encode as png or jpg (implies --encoded)")
    p.add_argument("--backend", choices=["lmdb", "leveldb"], default="lmdb", help="database kind (default lmdb)")
    p.add_argument("--check_size", "--check-size", action="store_true", help="require one size for all images")
    p.add_argument("--force", action="store_true", help="replace an existing database")
    p.set_defaults(run=_convert_imageset)

    p = sub.add_parser("compute-image-mean", help="mean image of a Datum database (caffe compute_image_mean)",
                       description="Writes a 1 x C x H x W BlobProto that transform_param's mean_file reads.")
    p.add_argument("db", help="database folder")
    p.add_argument("out", nargs="?", help="output .binaryproto (omit to print the channel means only)")
    p.add_argument("--backend", choices=["lmdb", "leveldb"], help="database kind (default: found from its files)")
    p.set_defaults(run=_compute_image_mean)

    p = sub.add_parser("train", help="train a net with a solver prototxt (caffe train)",
                       description="Run the solver: test, display, snapshot as Caffe does, with Caffe's log lines.")
    # Caffe's own spellings (-solver, -weights, ...) are accepted beside ours.
    p.add_argument("--solver", "-solver", required=True, help="solver .prototxt")
    p.add_argument("--weights", "-weights", help="start from these .caffemodel weights (comma-separated for several)")
    p.add_argument("--snapshot", "-snapshot", help="resume from this .solverstate")
    p.add_argument("--max-iter", type=non_negative_int, help="override the solver's max_iter (a shorter run)")
    p.add_argument("--log", help="also write train/test outputs per iteration to this .csv or .jsonl file "
                                 "(appended to when resuming with --snapshot)")
    p.add_argument("--allow-nan", action="store_true",
                   help="train on through a NaN/inf loss as Caffe does (by default training stops, exit 3)")
    p.add_argument("--snapshot-on-stop", action="store_true",
                   help="snapshot on SIGINT/SIGTERM even when the solver sets snapshot_after_train: false")
    p.add_argument("--gpu", "-gpu", metavar="ID", help="accepted for Caffe's command lines; the CPU is used")
    p.add_argument("--mpi", action="store_true", default=None,
                   help="data-parallel over MPI ranks (mpiexec -n N siamese train ...; automatic under mpiexec "
                        "with N > 1); needs pip install -e \".[mpi]\"")
    p.set_defaults(run=_train)

    p = sub.add_parser("test", help="score a model: mean of each output over N batches (caffe test)",
                       description="Mean of each net output over N batches, as caffe test prints it.")
    p.add_argument("--model", "-model", required=True, help="net .prototxt")
    p.add_argument("--weights", "-weights", required=True, help=".caffemodel weights")
    p.add_argument("--iterations", "-iterations", type=positive_int, default=50, help="batches to run (default 50)")
    p.add_argument("--phase", "-phase", choices=["TRAIN", "TEST"], default="TEST", help="net phase (default TEST)")
    p.add_argument("--gpu", "-gpu", metavar="ID", help="accepted for Caffe's command lines; the CPU is used")
    p.set_defaults(run=_test)

    p = sub.add_parser("time", help="per-layer forward/backward timing (caffe time)",
                       description="Per-layer forward/backward milliseconds and their average, as caffe time prints "
                                   "them (forward only for a net without a loss).")
    p.add_argument("--model", "-model", required=True, help="net .prototxt")
    p.add_argument("--weights", "-weights", help="optional .caffemodel weights")
    p.add_argument("--iterations", "-iterations", type=positive_int, default=50,
                   help="forward-backward passes (default 50)")
    p.add_argument("--phase", "-phase", choices=["TRAIN", "TEST"], default="TRAIN", help="net phase (default TRAIN)")
    p.add_argument("--gpu", "-gpu", metavar="ID", help="accepted for Caffe's command lines; the CPU is used")
    p.set_defaults(run=_time)

    p = sub.add_parser("plot-features", help="scatter plot of the learned 2-D features of the test digits",
                       description="Run the deploy net over labelled images, scatter the features (PCA above 2-D) "
                                   "and print the 1-nearest-neighbour accuracy.")
    _deploy_net_args(p)
    p.add_argument("--out", help="output picture; format by extension: png, svg, pdf "
                                 "(default: beside the weights, WEIGHTS_features.png)")
    p.add_argument("--show", action="store_true", help="also open a window, where there is a display")
    p.add_argument("--save-features", help="write features and labels to this .npy or .csv file")
    p.set_defaults(run=_plot_features)

    p = sub.add_parser("evaluate", help="pair (ROC AUC, EER) and retrieval (MAP@R, P@1) metrics of an embedding",
                       description="Embed the pairs of a pair DB and the labelled images with the deploy net; print "
                                   "one metric per line (and write them to --json).")
    _deploy_net_args(p)
    p.add_argument("--pairs", help="pair DB of two-image Datums (default: examples/siamese/mnist_siamese_test_leveldb)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--plot", help="ROC curve and pair-distance histograms to this picture (png, svg, pdf)")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("export-onnx", help="write a deploy net with its weights as an ONNX model",
                       description="Map each layer of a deploy net to ONNX operators (needs the onnx extra: "
                                   'pip install -e ".[onnx]").')
    p.add_argument("--model", required=True, help="deploy net .prototxt")
    p.add_argument("--weights", required=True, help=".caffemodel weights")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default 17)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.set_defaults(run=_export_onnx)

    p = sub.add_parser("draw-net", help="draw a net's layer graph, shared parameters marked",
                       description="Lay out a net's layers and blobs with Graphviz; layers sharing weights get one "
                                   "colour. A .dot output needs no Graphviz.")
    p.add_argument("net", help="net .prototxt")
    p.add_argument("out", help="output file: .png, .svg, .pdf or .dot")
    p.add_argument("--rankdir", choices=["auto", "LR", "TB", "BT", "RL"], default="auto",
                   help="graph direction (default auto: top to bottom, or left to right when the graph is wider "
                        "than deep)")
    p.add_argument("--phase", choices=["TRAIN", "TEST", "ALL"], default="ALL", help="layers of one phase (default ALL)")
    p.set_defaults(run=_draw_net)

    p = sub.add_parser("plot-log", help="train and test loss against iteration from a training log",
                       description="Train loss (line) and test loss (markers) against iteration, from a text log "
                                   "or a --log file.")
    p.add_argument("log", help="text log of `siamese train` or `caffe train`, or a --log .csv/.jsonl file")
    p.add_argument("--out", help="output picture: png, svg, pdf (default: beside the log, LOG_loss.png; "
                                 "train.log gives train_loss.png)")
    p.set_defaults(run=_plot_log)

    p = sub.add_parser("upgrade-net", help="rewrite a V0/V1 net prototxt or .caffemodel in the current format",
                       description="Caffe's upgrade_net_proto_text/binary: text in, text out; binary in, binary out.")
    p.add_argument("input", help="old net .prototxt or .caffemodel")
    p.add_argument("output", help="upgraded file to write")
    p.set_defaults(run=_upgrade_net)

    p = sub.add_parser("upgrade-solver", help="rewrite a solver prototxt: solver_type enum to type string",
                       description="Caffe's upgrade_solver_proto_text; nets written inside it are upgraded too.")
    p.add_argument("input", help="old solver .prototxt")
    p.add_argument("output", help="upgraded solver to write")
    p.set_defaults(run=_upgrade_solver)

    p = sub.add_parser("verify-data", help="check the bundled MNIST files against their SHA-256 sums",
                       description="Check the bundled MNIST files against their SHA-256 sums.")
    p.set_defaults(run=_verify_data)
    for command in sub.choices.values():  # --debug after the command too; SUPPRESS keeps one given before
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback on errors")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.run(args)
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
    return status if isinstance(status, int) else 0  # a command may return its exit status (train does)
