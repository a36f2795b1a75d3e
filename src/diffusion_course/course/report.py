"""What a chapter shows and measures, in a form the papermill runner can collect.

``show(fig, "name")`` displays a figure as a PNG whose output carries its file name;
``record(key=value, ...)`` displays the numbers a chapter measured under a dedicated MIME
type; players made with a file name (``players.player_grid(..., name=...)``) carry it in
their HTML. The runner reads all three back out of the executed notebook into
``build/figures/``, ``build/metrics/`` and ``build/audio/``, so notebooks never write files
themselves and work unchanged in JupyterLab and Colab.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re

METRICS_MIME = "application/vnd.diffusion-course.metrics+json"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# A clip's file name inside build/audio/<chapter>/: folders and a name that never start with a dot
WAV_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*\.wav$")
_NAMED_PLAYER = re.compile(r'<audio [^>]*data-file="([^"]+)" src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"')


def setup_matplotlib() -> None:
    """Figures with an opaque white background read well in light and dark themes; log axes
    label their ticks as plain numbers."""
    from .plotting import plain_log_labels

    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
        "figure.dpi": 100, "savefig.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
    })
    plain_log_labels()


def show(fig, name: str) -> None:
    """Display ``fig`` inline as a PNG named ``name`` and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if not _NAME.match(name):
        raise ValueError(f"figure name {name!r} may use only letters, digits, '_', '.', '-'")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    display({"image/png": png, "text/plain": f"<figure {name}>"}, raw=True,
            metadata={"image/png": {"filename": f"{name}.png"}})


def named_clips(html_text: str) -> dict[str, bytes]:
    """The WAV files that ``players.audio_player_html(..., file=...)`` embedded in some HTML,
    {file: bytes}: how the runner writes a chapter's players to ``build/audio/<chapter>/``."""
    clips = {}
    for m in _NAMED_PLAYER.finditer(html_text):
        if not WAV_NAME.match(m.group(1)):
            raise ValueError(f"clip file name {m.group(1)!r} is not allowed")
        clips[m.group(1)] = base64.b64decode(m.group(2))
    return clips


def _plain(value):
    """Make numbers JSON-friendly (tensors, numpy scalars, nan/inf)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record(**numbers) -> dict:
    """Display the measured ``numbers`` (and let the runner save them to JSON)."""
    from IPython.display import display

    data = _plain(numbers)
    json.dumps(data)  # fail here, in the notebook, if something is not serialisable
    text = "\n".join(f"{k} = {v}" for k, v in data.items())
    display({METRICS_MIME: data, "text/plain": text}, raw=True)
    return data
