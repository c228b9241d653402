"""The script a user would write instead of hpo: an Optuna study in the style of optuna-examples'
`pytorch/pytorch_simple.py` (a per-sample Dataset and a DataLoader, a define-by-run model, the TPE sampler with
a seed and the median pruner), on relu3_adam's problem: the same 50k/10k Fashion-MNIST split and the same space
without augmentation. It is kept as such a script is written, not tuned; `hpo bench` item 6 runs it against
`hpo study relu3_adam` on the same wall budget (hpo/bench/versus.py).

The data come from hpo's loader only because torchvision is not a dependency here: the images are the same
tensors a torchvision `FashionMNIST(transform=ToTensor())` with the same split would give, served one sample
at a time as a torchvision data set serves them.
"""

from __future__ import annotations

import time

import optuna
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torch.utils.data

from hpo import data as data_mod

DEVICE = torch.device("cpu")
CLASSES = 10


class FashionMNISTSplit(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def get_fashion_mnist(train_limit=None, eval_limit=None):
    splits = data_mod.make_splits(data_mod.load("fashion_mnist"), val_size=10000, seed=0,
                                  train_limit=train_limit, eval_limit=eval_limit)
    return (FashionMNISTSplit(splits.train_x, splits.train_y), FashionMNISTSplit(splits.eval_x, splits.eval_y))


def define_model(trial):
    # Two hidden layers, as the paper's model: the number of units and the dropout ratio are searched.
    layers = []
    in_features = 28 * 28
    p = trial.suggest_float("dropout", 0.0, 0.3)
    for i in range(2):
        out_features = trial.suggest_int(f"n_units_l{i}", 8, 64)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        layers.append(nn.Dropout(p))
        in_features = out_features
    layers.append(nn.Linear(in_features, CLASSES))
    return nn.Sequential(*layers)


def make_objective(train_set, valid_set, max_epochs=40):
    def objective(trial):
        model = define_model(trial).to(DEVICE)
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        batch_size = trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512])
        epochs = trial.suggest_int("epochs", min(5, max_epochs), max_epochs)
        schedule = trial.suggest_categorical("schedule", ["constant", "cosine", "onecycle"])
        weight_decay = trial.suggest_float("weight_decay", 0.0, 1e-3)
        label_smoothing = trial.suggest_float("label_smoothing", 0.0, 0.2)
        optimizer = optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

        train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
        valid_loader = torch.utils.data.DataLoader(valid_set, batch_size=batch_size)
        steps = epochs * len(train_loader)
        if schedule == "cosine":
            scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        elif schedule == "onecycle":
            scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
        else:
            scheduler = None

        for epoch in range(epochs):
            model.train()
            for data, target in train_loader:
                data, target = data.view(data.size(0), -1).to(DEVICE), target.to(DEVICE)
                optimizer.zero_grad()
                output = model(data)
                loss = F.cross_entropy(output, target, label_smoothing=label_smoothing)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()

            model.eval()
            correct = 0
            with torch.no_grad():
                for data, target in valid_loader:
                    data, target = data.view(data.size(0), -1).to(DEVICE), target.to(DEVICE)
                    pred = model(data).argmax(dim=1, keepdim=True)
                    correct += pred.eq(target.view_as(pred)).sum().item()
            accuracy = correct / len(valid_loader.dataset)

            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.exceptions.TrialPruned()

        return accuracy
    return objective


def main(seconds, seed=0, train_limit=None, eval_limit=None, max_epochs=40, threads=2):
    """Run the study for `seconds`; returns [(seconds since start, value)] of the completed trials, in order.
    The limits and `max_epochs` are for a tiny-scale run; the full run leaves them as they are."""
    torch.set_num_threads(threads)
    train_set, valid_set = get_fashion_mnist(train_limit, eval_limit)
    objective = make_objective(train_set, valid_set, max_epochs)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    start = time.time()
    done = []
    study.optimize(objective, timeout=seconds,
                   callbacks=[lambda s, t: done.append((time.time() - start, t.value))
                              if t.state == optuna.trial.TrialState.COMPLETE else None])
    return done


if __name__ == "__main__":
    print(main(600))
