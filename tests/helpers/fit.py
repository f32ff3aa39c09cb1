"""Training with the library API alone, as a torch-dwn user would."""

from __future__ import annotations


def fit_and_score(model, x_train, y_train, x_test, y_test, epochs: int, batch: int = 32) -> float:
    """Plain library training (Adam 1e-2, cross-entropy), then test accuracy."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(x_train)).split(batch):
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(-1) == y_test).float().mean().item()
