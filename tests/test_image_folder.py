"""Chapter 05's recipe on a folder of pictures: the folder read in either layout, the errors a
student meets (no folder, no images, unreadable files, small images, a size the U-Net cannot
take), and the command end to end on a few dozen images the test writes, cached and resumable."""
import json

import pytest
from PIL import Image

from diffusion_course.data.cifar import synthetic_colour_set
from diffusion_course.data.image_folder import load_image_folder
from diffusion_course.recipes import image_folder


def write_pictures(folder, n=24, size=40, classes=False):
    """n synthetic colour shapes saved as PNG (size x size), flat or in one subfolder per class."""
    x, y = synthetic_colour_set(n, seed=3, size=size)
    for i, (img, label) in enumerate(zip(x, y)):
        where = folder / f"class{int(label)}" if classes else folder
        where.mkdir(parents=True, exist_ok=True)
        pixels = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(pixels).save(where / f"img{i:03d}.png")
    return x, y


@pytest.mark.parametrize("classes", [False, True])
def test_a_folder_is_read_resized_and_centre_cropped(tmp_path, classes):
    x, y = write_pictures(tmp_path, n=6, size=40, classes=classes)
    data = load_image_folder(tmp_path, 32, 3)
    assert data.images.shape == (6, 3, 32, 32) and -1 <= data.images.min() and data.images.max() <= 1
    assert (len(data.classes) > 0) == classes and data.skipped == []
    gray = load_image_folder(tmp_path, 40, 1)
    assert gray.images.shape == (6, 1, 40, 40)
    # at its own size nothing is resized: the pixels come back as written (8-bit rounding)
    same = load_image_folder(tmp_path, 40, 3)
    order = sorted(range(6), key=lambda i: f"img{i:03d}.png") if not classes else None
    if order is not None:
        assert (same.images - x[order]).abs().max() < 1.5 / 127.5


def test_what_goes_wrong_is_said_plainly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        load_image_folder(tmp_path / "missing", 32)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path / "empty", 32)
    write_pictures(tmp_path / "mixed", n=4, size=40)
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png")
    data = load_image_folder(tmp_path / "mixed", 32)
    assert len(data.images) == 4 and data.skipped == ["broken.png"]
    write_pictures(tmp_path / "small", n=3, size=16)
    with pytest.raises(ValueError, match=r"smaller than 32 pixels.*img000.png \(16x16\)"):
        load_image_folder(tmp_path / "small", 32)
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image_folder(tmp_path / "mixed", 32, channels=2)
    for bad in (7, 30, 36):
        with pytest.raises(ValueError, match="size"):
            image_folder.levels(bad)
    assert image_folder.levels(28) == (1, 2) and image_folder.levels(64) == (1, 2, 2)


def test_the_command_trains_samples_reports_and_resumes(tmp_path, monkeypatch, capsys):
    write_pictures(tmp_path / "pictures", n=24, size=32)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    args = ["--images", str(tmp_path / "pictures"), "--size", "32", "--profile", "ci", "--steps", "6",
            "--samples", "4", "--sample-steps", "3", "--out", str(tmp_path / "out"), "--set", "base_width=8"]
    assert image_folder.main([*args, "--minutes", "0"]) == 0          # stops at once: a checkpoint to resume
    first = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not first["complete"] and first["train_steps_done"] < 6
    assert image_folder.main(args) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["complete"] and report["train_steps_done"] == 6 and report["images"] == 24
    assert report["held_out"] == 2 and report["skipped_files"] == []
    near = report["nearest_training_distance"]
    assert near["samples_median"] > 0 and near["held_out_median"] > 0
    assert Image.open(tmp_path / "out" / "samples.png").size == (2 * 34, 2 * 34)
    assert list((tmp_path / "cache").glob("folder-pictures-*.pt"))
    with pytest.raises(SystemExit):
        image_folder.main(["--images", str(tmp_path / "nothing-here")])
    assert "no folder" in capsys.readouterr().err
