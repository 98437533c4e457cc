"""Train a convolutional network on MNIST (shipped with fastnn) and report the test accuracy.

Default: conv(1->32, 5x5)-ReLU-maxpool2 -> conv(32->64, 5x5)-ReLU-maxpool2 -> Linear(1024, 128)
-ReLU -> Linear(128, 10); `--arch lenet` gives LeNet-5 (with ReLU). 6 epochs of SGD (Nesterov
momentum 0.9, lr 0.05 with a cosine decay, weight decay 5e-4), batch 128, 10% of the training
images held out for validation. Examples:

    python examples/mnist_cnn.py
    python examples/mnist_cnn.py --arch lenet --epochs 5 --json lenet.json --plot plots/
    python examples/mnist_cnn.py --backend cuda --profile
"""
from fastnn import examples_cli, nn


def build_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),    # 28x28 -> 24x24 -> 12x12
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),   # 12x12 -> 8x8 -> 4x4
        nn.Flatten(),                                       # 64 * 4 * 4 = 1024
        nn.Linear(1024, 128), nn.ReLU(),
        nn.Linear(128, 10))


def build_lenet():
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling in place of its sigmoid units and
    trainable subsampling."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),   # 28x28 -> 28x28 -> 14x14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),             # 14x14 -> 10x10 -> 5x5
        nn.Flatten(),                                                # 16 * 5 * 5 = 400
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


ARCHITECTURES = {
    "cnn": (build_cnn, "cnn 32c5-p2-64c5-p2-128-10"),
    "lenet": (build_lenet, "lenet5 6c5p2-p2-16c5-p2-120-84-10"),
}


def main(argv=None):
    parser = examples_cli.parser(__doc__, epochs=6, sgd_lr=0.05, weight_decay=5e-4)
    parser.add_argument("--arch", default="cnn", choices=sorted(ARCHITECTURES),
                        help="cnn: the network above; lenet: LeNet-5 (default: %(default)s)")
    args = parser.parse_args(argv)
    build, name = ARCHITECTURES[args.arch]
    return examples_cli.run(args, build, name)


if __name__ == "__main__":
    main()
