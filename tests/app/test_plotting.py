"""fsdiff.plotting: panel layout, colour ranges of fields and images, atomic figure writes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

import fsdiff as fd
from fsdiff.plotting import field_panels, plot_loss_curve, save_figure


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def test_field_panels_layout_and_symmetric_shared_range():
    g = fd.Grid((8, 8))
    a = torch.linspace(-1, 3, 64).reshape(8, 8)
    rows = [("one", [("a", a, g), ("b", 0.5 * a, g)]), ("two", [("c", -a, g)])]
    fig = field_panels(rows, shared_color=True)
    assert len(fig.axes) == 4  # 2 x 2, the missing panel switched off
    assert not fig.axes[3].axison
    for im in _images(fig)[:2]:  # first row: symmetric range of its largest |value| = 3
        assert im.get_clim() == pytest.approx((-3.0, 3.0))
        assert im.origin == "lower"
    plt.close(fig)


def test_field_panels_images_are_upright_with_a_black_background():
    g = fd.Grid((4, 4))
    x = torch.tensor([[0.2, 0.5, 0.9, 1.0]] * 4)
    fig = field_panels([("r", [("", x, g), ("", 0.5 * x, g)])], images=True, cmap="gray")
    for im in _images(fig):
        assert im.origin == "upper"
        assert im.get_clim() == pytest.approx((0.0, 1.0))  # [min(0, lowest), highest]
        assert im.get_cmap().name == "gray"
    plt.close(fig)


def test_save_figure_is_atomic_and_closes(tmp_path):
    fig = plt.figure()
    plt.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
    assert not plt.fignum_exists(fig.number)


def test_plot_loss_curve_writes_png(tmp_path):
    history = [{"step": s, "loss": 1.0 / s, **({"val_loss_16": 2.0 / s} if s % 5 == 0 else {})} for s in range(1, 21)]
    out = plot_loss_curve(history, tmp_path / "loss.png", title="t")
    assert out.exists() and out.stat().st_size > 1000
