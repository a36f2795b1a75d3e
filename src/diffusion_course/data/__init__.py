"""Layer ``data`` (the bottom, beside ``diffusion``): where files live (``paths``), downloading
and verifying them (``download``), the data sets (MNIST, CIFAR-10 and a synthetic colour set,
the Free Spoken Digit Dataset, the 2-D toys), audio I/O and transforms, the front ends
that turn a clip into what a 1-D U-Net reads, what is measured on a digit (its skeleton, its
thickness and slant) and the captions and tokens written from it, and a moving-digit clip. Imports nothing else of the package."""
