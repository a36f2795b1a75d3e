"""Layer ``models``: the networks (``nn.Module``s) and how they cut up their input: the 2-D and 1-D U-Nets, autoencoders, the small
networks for points, GAN generators and discriminators, the classifier family the judges look
through, the ARDM's network, the adapters that put them inside deepinv, the control adapters
(LoRA, ControlNet), the text encoders and text-conditioned U-Net, and spacetime patches. May import
``data`` and ``diffusion``."""
