"""Small synthetic images shared by the test modules (importable: pytest puts tests/ on sys.path)."""
import torch


def tiny_digits(n: int = 64, seed: int = 0) -> torch.Tensor:
    """n Gaussian blobs at random places on a black 28x28 background, values in [-1, 1]:
    enough structure for an autoencoder's loss to fall, and free of any data download."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centres = 8 + 12 * torch.rand(n, 2, generator=g)
    d2 = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    return (2 * torch.exp(-d2 / 18) - 1).unsqueeze(1)
