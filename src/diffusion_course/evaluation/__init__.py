"""Layer ``evaluation``: the Frechet distance, the judges (one ``Judge`` abstraction, with its
real-vs-real floor computed and cached per N, for digits, colour images and speech), coverage
and memorisation checks, and compute costs (FLOPs, time, memory, the report card). May import
``training`` and the layers below it."""
