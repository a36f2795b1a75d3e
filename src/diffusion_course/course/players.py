"""Listening to clips in a notebook: waveform and spectrogram plots, ``IPython.display.Audio``
players, and named grids of players whose WAV files the runner writes to
``build/audio/<chapter>/`` (``report.named_clips`` reads them back out of the notebook)."""
from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import torch

from ..data.audio import HOP, magnitude, wav_bytes
from .report import WAV_NAME


def plot_waveform(ax, x, sample_rate: int = 8000, title: str | None = None, **kw):
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    ax.plot(np.arange(len(x)) / sample_rate, x, lw=0.6, **kw)
    ax.set_xlabel("time (s)")
    ax.set_ylim(-1.05, 1.05)
    if title:
        ax.set_title(title, fontsize=9)


def plot_spectrogram(ax, spec, sample_rate: int = 8000, hop: int = HOP, title: str | None = None,
                     db: bool = False, vmin=None, vmax=None, ylabel: str = "frequency (Hz)"):
    """Show a [bins, frames] array as an image, frequency up. ``db``: 20 log10 of it first."""
    s = spec.detach().cpu().float().numpy() if torch.is_tensor(spec) else np.asarray(spec)
    if db:
        s = 20 * np.log10(np.maximum(s, 1e-5))
    extent = (0, s.shape[1] * hop / sample_rate, 0, sample_rate / 2) if ylabel.startswith("freq") \
        else (0, s.shape[1] * hop / sample_rate, 0, s.shape[0])
    im = ax.imshow(s, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmin, vmax=vmax)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=9)
    return im


def audio_player_html(x, sample_rate: int = 8000, file: str | None = None) -> str:
    """An HTML <audio> element with the clip embedded as a base64 WAV. ``file`` (a relative
    path ending in .wav) names it for the runner, which writes every named clip of a chapter
    to ``build/audio/<chapter>/<file>``."""
    data = base64.b64encode(wav_bytes(x, sample_rate)).decode("ascii")
    if file is None:
        return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'
    if not WAV_NAME.match(file):  # the names the runner accepts when it writes them out
        raise ValueError(f"clip file name {file!r} must be a relative path of letters, digits, "
                         f"'_', '.', '-' ending in .wav")
    return f'<audio controls preload="none" data-file="{file}" src="data:audio/wav;base64,{data}"></audio>'


def player(x, sample_rate: int = 8000):
    """One ``IPython.display.Audio`` player (no level normalisation: what you hear is x)."""
    from IPython.display import Audio

    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return Audio(np.clip(x, -1, 1), rate=sample_rate, normalize=False)


def spectrogram_png(x, sample_rate: int = 8000, size=(1.9, 0.9), vmin: float = -60, vmax: float = 35) -> bytes:
    """A small PNG of a clip's spectrogram (dB, 0-4 kHz up, no axes) to sit under its player."""
    from matplotlib.figure import Figure  # not pyplot: no figure manager, nothing to close

    x = (x.detach().cpu() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).float()
    db = 20 * torch.log10(magnitude(x).clamp_min(1e-5))
    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _slug(label) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(label)).strip("-").lower() or "x"


def player_grid(clips, row_labels, col_labels=None, sample_rate: int = 8000, name: str | None = None,
                spectrograms: bool = False):
    """An ``IPython.display.HTML`` table of players: ``clips`` [rows, cols, samples]. With
    ``name``, every clip is named ``<name>/<row>_<col>.wav`` (labels made file-safe) and the
    runner writes the grid's WAV files under ``build/audio/<chapter>/``; ``spectrograms``
    puts each clip's spectrogram (dB, 0-4 kHz) under its player."""
    from IPython.display import HTML

    rows = []
    col_labels = col_labels or [""] * len(clips[0])
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in col_labels) + "</tr>"
    for label, row in zip(row_labels, clips):
        cells = []
        for j, (clip, col) in enumerate(zip(row, col_labels)):
            file = None if name is None else f"{name}/{_slug(label)}_{_slug(col or j)}.wav"
            cell = audio_player_html(clip, sample_rate, file)
            if spectrograms:
                png = base64.b64encode(spectrogram_png(clip, sample_rate)).decode("ascii")
                cell += (f'<br><img alt="spectrogram: {html.escape(str(label))}, {html.escape(str(col))}" '
                         f'src="data:image/png;base64,{png}">')
            cells.append(f"<td>{cell}</td>")
        rows.append(f"<tr><th>{html.escape(str(label))}</th>{''.join(cells)}</tr>")
    return HTML(f"<table>{head}{''.join(rows)}</table>")
