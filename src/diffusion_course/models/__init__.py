"""Layer ``models``: ``nn.Module``s only: the 2-D and 1-D U-Nets, autoencoders, the small
networks for points, GAN generators and discriminators, the classifier family the judges look
through, the ARDM's network, and the adapters that put them inside deepinv. May import
``data`` and ``diffusion``."""
