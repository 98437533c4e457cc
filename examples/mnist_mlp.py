"""Train a multilayer perceptron on MNIST (shipped with fastnn) and report the test accuracy.

Default: 784-512-256-10 with ReLU; 10 epochs of SGD (Nesterov momentum 0.9, lr 0.1 with a
cosine decay, weight decay 5e-4), batch 128, 10% of the training images held out for
validation. Examples:

    python examples/mnist_mlp.py
    python examples/mnist_mlp.py --hidden 128 --epochs 5 --json mlp.json --plot plots/
    python examples/mnist_mlp.py --backend cuda --save mlp.npz
"""

from fastnn import examples_cli, nn


def build_mlp(hidden):
    """Flatten -> (Linear -> ReLU) per hidden size -> Linear to the 10 classes. Each Linear+ReLU
    pair runs as one fused kernel."""
    sizes = (28 * 28, *hidden)
    layers = [nn.Flatten()]
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 10))


def main(argv=None):
    parser = examples_cli.parser(__doc__, epochs=10, sgd_lr=0.1, weight_decay=5e-4)
    parser.add_argument(
        "--hidden",
        type=examples_cli.int_list,
        default=(512, 256),
        metavar="SIZES",
        help="hidden layer sizes (default: 512,256)",
    )
    args = parser.parse_args(argv)
    name = "mlp " + "-".join(map(str, (28 * 28, *args.hidden, 10)))
    return examples_cli.run(args, lambda: build_mlp(args.hidden), name)


if __name__ == "__main__":
    main()
