"""Layer ``recipes`` (the top): the course's trained models and studies, built from a chapter's
knobs (``course.settings``): chapter 05's MNIST model and its reference, the sampler sweep, the
toys, the autoencoders and latent diffusion, the spoken-digit model, inverse problems, the
quality-compute study, the variants, and the command that trains a reference model. The only
layer that reads chapter knobs; it may import every other layer. Notebooks and benchmarks call
recipes and the layers below."""
