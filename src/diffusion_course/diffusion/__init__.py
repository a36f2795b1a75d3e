"""Layer ``diffusion`` (the bottom, beside ``data``): the maths of diffusion models, in torch
only: Gaussians and KL, noise schedules, objectives and parameterisations, the one sampler
(DDPM and DDIM as settings), SDEs and ODEs, score matching and Langevin dynamics, DPS,
mixture noise, the order-agnostic autoregressive bound. Imports nothing else of the package."""
