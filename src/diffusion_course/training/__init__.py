"""Layer ``training``: the device and precision, the training loop with its resumable
checkpoints, the checkpoint cache (one ``cached`` primitive that every trained artefact goes
through), the classifier and GAN loops, and the store of the reference models shipped with the
package. May import ``models``, ``data`` and ``diffusion``."""
