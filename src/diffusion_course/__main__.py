"""``python -m diffusion_course``: the course runner (``course.runner``), or with ``train``
first, chapter 05's recipe on a folder of your own images (``recipes.image_folder``)."""
import sys

if sys.argv[1:2] == ["train"]:
    from .recipes.image_folder import main

    sys.exit(main(sys.argv[2:]))

from .course.runner import main  # noqa: E402

sys.exit(main())
