"""--precision: what auto resolves to, and where bf16 is refused."""

from __future__ import annotations

import pytest
import torch

from brainsymphony import precision
from brainsymphony.precision import autocast, cpu_has_amx, resolve_precision

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 {extra}\nbugs\t\t: spectre_v1\n"


@pytest.mark.parametrize(("extra", "expected"), [("amx_bf16 amx_tile amx_int8", True), ("", False)])
def test_amx_is_read_from_the_cpu_flags(tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert cpu_has_amx(cpuinfo) is expected
    assert cpu_has_amx(tmp_path / "absent") is False


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_on_cpus_with_amx_only(monkeypatch, amx, expected):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize(
    ("cap", "expected"),
    [("", "bf16"), ("all", "bf16"), ("AVX512_CORE_AMX", "bf16"), ("AVX2", "fp32"), ("avx512_core_bf16", "fp32")],
)
def test_auto_is_fp32_where_onednn_is_capped_below_amx(monkeypatch, cap, expected):
    """bf16 pays only through oneDNN's AMX kernels; a portable-results cap such as AVX2 takes them away."""
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly, it is used anyway


def test_auto_is_fp32_on_a_gpu_and_bf16_without_support_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla V100")
    assert resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="Tesla V100 has no bf16 support"):
        resolve_precision("bf16", "cuda")
    with pytest.raises(ValueError, match="use one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


def test_bf16_autocast_runs_the_matrix_products_in_bf16_and_fp32_leaves_them_alone():
    a = torch.randn(8, 8)
    with autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
