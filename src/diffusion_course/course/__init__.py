"""Layer ``course``: what is not diffusion: profiles and the chapters' knobs (``settings``),
the runner that executes chapters, the benchmarks' shared command line, what a chapter shows
and records (``report``, ``plotting``, ``players``), the website, the student edition, Colab,
and the nbval plugin. May import ``evaluation`` and the layers below it; never ``recipes``
(the chapters it runs import those in their own kernels)."""
