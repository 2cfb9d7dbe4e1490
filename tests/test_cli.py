import subprocess
import sys

import pytest

from detect import __version__
from detect.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"detect {__version__}"


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: detect" in out
    for command in ("train", "predict", "evaluate", "export"):
        assert f"    {command} " in out, command


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "detect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "aerial" in out.stdout


def _fresh(code: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter that looks like the ``detect`` console script to ``import detect``
    (which defers TensorFlow there, and registers the model classes everywhere else)."""
    return subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['detect']\n" + code],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    (b"", "(0 bytes (empty)) is not a .keras model file"),
    (bytes(range(256)) * 10, "is not a .keras model file: not a zip archive, or truncated"),
])
def test_bad_model_paths_answer_before_tensorflow_loads(tmp_path, content, message):
    model = tmp_path / "model.keras"
    if content is not None:
        model.write_bytes(content)
    r = _fresh("import sys\nfrom detect.cli.main import main\n"
               f"rc = main(['predict', '--model', {str(model)!r}, '--out', {str(tmp_path / 'o')!r}, 'x.png'])\n"
               "print(rc, 'tensorflow' in sys.modules)")
    assert r.stdout.split() == ["2", "False"]
    assert r.stderr.count("\n") == 1 and message in r.stderr


def test_truncated_keras_file_is_named(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", "{}" * 5000)
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", bytes(20000))
    (tmp_path / "cut.keras").write_bytes(buf.getvalue()[:-200])  # the central directory cut off
    assert main(["evaluate", "--ann", str(tmp_path / "cut.keras"), "--model", str(tmp_path / "cut.keras"),
                 "--images", str(tmp_path)]) == 2
    (tmp_path / "other.keras").write_bytes(_zip_with("weights.bin"))
    from detect.util.files import check_model_file

    with pytest.raises(ValueError, match="is a zip archive but not a .keras model file"):
        check_model_file(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="not a zip archive, or truncated"):
        check_model_file(tmp_path / "cut.keras")


def _zip_with(name: str) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, b"x")
    return buf.getvalue()


def test_native_log_lines_are_filtered_and_the_rest_kept():
    native = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
              "I0000 00:00:1795526886.949314   30956 port.cc:153] oneDNN custom operations are on.\\n"
              "E0000 00:00:1795526889.508298   30956 cuda_platform.cc:52] failed call to cuInit\\n")
    # as in the console script, where `import detect` defers TensorFlow (its own lines would come first)
    code = ("import os, sys\nsys.argv = ['detect']\nfrom detect.util.quiet import NativeLogFilter\n"
            "with NativeLogFilter() as f:\n"
            f"    os.write(2, b'{native}')\n"
            "    print('a python warning', file=sys.stderr, flush=True)\n"
            "    os.write(2, b'\\rprogress 50%')\n"
            "    os.write(2, b'\\rprogress 100%\\n')\n"
            "    os.write(2, b'Epoch 1/3\\n')\n"
            "print(f.dropped)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)  # bytes: \r kept
    assert r.stdout.strip() == b"3"
    assert r.stderr == b"a python warning\n\rprogress 50%\rprogress 100%\nEpoch 1/3\n"


@pytest.mark.parametrize("epochs, hint", [
    (0, "detect train: interrupted before its first epoch was saved (nothing to resume)"),
    (2, "detect train: interrupted after epoch-0002; continue with: detect train --resume {run}"),
])
def test_ctrl_c_is_one_line_with_how_to_resume(tmp_path, capsys, monkeypatch, epochs, hint):
    from detect.cli import main as cli

    run = tmp_path / "run"
    for e in range(1, epochs + 1):
        (run / "checkpoints" / f"epoch-{e:04d}").mkdir(parents=True)

    def interrupted(args):
        raise KeyboardInterrupt

    args = cli.build_parser().parse_args(["train", "--train-ann", "a.json", "--train-images", "d",
                                          "--out", str(run)])
    args.handler = interrupted
    monkeypatch.setattr(cli, "_check_inputs", lambda a: None)
    assert cli._handle(args) == 130
    assert capsys.readouterr().err.strip() == hint.format(run=run)


def test_swapped_ann_and_images_are_named_as_such(capsys):
    ann, images = "data/sample/annotations.json", "data/sample/images"
    assert main(["evaluate", "--ann", images, "--images", ann, "--predictions", ann]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a file (--ann and --images swapped?)" in err or \
        "is a file, not a folder (--images and --ann swapped?)" in err
    assert main(["train", "--train-ann", images, "--train-images", ann, "--out", "never"]) == 2
    assert "swapped?" in capsys.readouterr().err
