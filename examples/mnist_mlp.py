"""Train an MLP on MNIST (shipped with fastnn) and report the test accuracy.

    python examples/mnist_mlp.py [--backend cpu] [--epochs 10] [--hidden 512,256] [--save m.npz]
"""
import argparse

import fastnn
from fastnn import nn, optim


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu", choices=["cpu", "numpy", "cuda"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", default="512,256")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="PATH")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = fastnn.datasets.mnist()
    fastnn.seed(args.seed)
    sizes = [784] + [int(h) for h in args.hidden.split(",") if h]
    layers = [nn.Flatten()]
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    model.summary()

    opt = optim.SGD(lr=args.lr, momentum=0.9, nesterov=True,
                    schedule=optim.CosineLR(args.epochs))
    trainer = fastnn.Trainer(model, opt, loss="cross_entropy", backend=args.backend)
    trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                validation_data=(x_test, y_test))
    result = trainer.evaluate(x_test, y_test)
    print(f"test accuracy {result['accuracy']:.4f}  (loss {result['loss']:.4f})")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")


if __name__ == "__main__":
    main()
