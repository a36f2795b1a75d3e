"""The course's one recipe for training a classifier, used by every judge (MNIST digits,
colour images, spoken digits): cross-entropy on augmented batches, AdamW (its default weight
decay, 0.01) with a one-cycle learning rate."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


def fit_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int,
                   batch_size: int, lr: float, g: torch.Generator, augment, progress: bool = True,
                   device: torch.device | str = "cpu", desc: str = "classifier") -> nn.Module:
    """Train ``model`` for ``steps`` batches of ``augment(images[idx], g)`` (indices and
    augmentation drawn with the CPU generator ``g``); returned on the CPU in eval mode."""
    images, labels = images.to(device), labels.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        idx = torch.randint(0, len(images), (batch_size,), generator=g).to(device)
        loss = F.cross_entropy(model(augment(images[idx], g)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.cpu().eval()
